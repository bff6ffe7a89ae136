"""``load_arm``: a local model folder -> the ARM backend of its family.

Adding a family means one backend file in ``arm/`` and one entry in ``FAMILIES``. A backend class offers
``from_pretrained(folder, *, device, dtype, trust_remote_code)``; its module may name ``REQUIRED_FILES``
(groups of paths relative to the folder, of which each group needs at least one) and ``WEIGHT_FOLDERS``
(subfolders holding ``*.safetensors``; default: the folder itself) and ``CODE_FOLDERS`` (subfolder -> what it
holds, for messages: folders whose config.json transformers reads, so an ``auto_map`` there, which means the
folder's own Python code, is refused unless ``trust_remote_code=True``). Backends are imported only when used.

Detection: a folder with an ``acdc_arm.json`` manifest is of the family the manifest names
(``{"family": "unified", ...}``: models the engine defines the layout of, such as a causal LM plus a
separate VQ tokenizer); otherwise config.json's ``model_type`` decides (transformers-format checkpoints).

Nothing here touches the network: folders are local, weights must be safetensors (pickle checkpoints,
which can run code when loaded, are refused), and remote code runs only if the caller passes
``trust_remote_code=True``. Every weight file is checked by its header (``weights.check_weight_folder``)
before a backend builds anything, so a truncated, empty or renamed file is named with what to do.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from ..weights import check_remote_code, check_weight_folder, pickle_files
from .base import DECODING, ARMBackend


@dataclass(frozen=True)
class Family:
    """One ARM family: the config ``model_type``s it reads and where its backend class lives."""

    model_types: tuple[str, ...]   # config.json model_types it reads (none: detected by its manifest only)
    backend: str          # "package.module:ClassName"
    hint: str = ""        # what checkpoints it takes, for error messages
    manifest: bool = False   # the folder is described by acdc_arm.json, not by a top-level config.json
    class_names: tuple[str, ...] = ()   # config.json "_class_name"s it reads (checkpoints saved with diffusers' mixins)

    def reads(self, config: dict) -> bool:
        """Whether a folder's config.json is one of this family's."""
        return config.get("model_type") in self.model_types or config.get("_class_name") in self.class_names


FAMILIES: dict[str, Family] = {
    "janus": Family(("janus",), "acdc_core.arm.janus:JanusARM",
                    "Janus / Janus-Pro 1B or 7B in transformers format (e.g. deepseek-community/Janus-Pro-7B)"),
    "unified": Family((), "acdc_core.arm.unified:UnifiedARM",
                      "a causal LM over text + VQ image tokens with a separate VQModel: a folder with "
                      "acdc_arm.json, lm/ and vq/, e.g. the built-in toy ARM", manifest=True),
    "showo": Family((), "acdc_core.arm.showo:ShowoARM",
                    "Show-o as published (showlab/show-o, show-o-512x512, SJTU-Deng-Lab/Show-o-Turbo-256: config.json + "
                    "pytorch_model.safetensors) with showlab/magvitv2 in magvitv2/ and microsoft/phi-1_5's tokenizer "
                    "files in phi-1_5/ inside it", class_names=("Showo",)),
    "emu3": Family(("emu3",), "acdc_core.arm.emu3:Emu3ARM",
                   "Emu3-Gen in transformers format (BAAI/Emu3-Gen-hf); frames 256 px unless its acdc_emu3.json "
                   "says otherwise"),
}

MANIFEST = "acdc_arm.json"

# model_types we recognise but cannot load, with what to do instead.
_KNOWN_UNSUPPORTED = {
    "multi_modality": "this is DeepSeek's original Janus format (it needs their remote code); use the "
                      "transformers-format conversion instead (deepseek-community/Janus-Pro-1B or -7B).",
    "chameleon": "Chameleon in transformers cannot generate images (its image-token logits are masked).",
}


def _supported() -> str:
    return "; ".join(f"{name} ({fam.hint or ', '.join(fam.model_types)})" for name, fam in FAMILIES.items())


def _backend_class(family: Family):
    module_name, class_name = family.backend.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _read_manifest(folder: Path) -> Optional[dict]:
    """The folder's acdc_arm.json as a dict, or None when it has none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingModelFilesError(f"{path} could not be read as JSON: {err}") from err
    if not isinstance(data, dict) or "family" not in data:
        raise InvalidInputError(f"{path} does not name a family (expected {{\"family\": \"unified\", ...}}).")
    return data


def _read_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MissingModelFilesError(
            f"{folder} has neither config.json nor {MANIFEST}; point at a transformers-format model folder "
            f"or at an ACDC model folder with an {MANIFEST} manifest.")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingModelFilesError(f"{config_path} could not be read as JSON: {err}") from err


def _check_weights(folder: Path) -> None:
    """``folder`` holds safetensors weights, each complete and really safetensors (headers only are read)."""
    if not folder.is_dir():
        raise MissingModelFilesError(f"{folder} does not exist; the model's weights (*.safetensors) belong there.")
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        check_weight_folder(folder)
        return
    pickles = pickle_files(folder)
    if pickles:
        raise MissingModelFilesError(
            f"{folder} holds only pickle weights ({', '.join(pickles[:4])}); they can run code when loaded, so "
            "they are refused. Use a safetensors copy of the model (*.safetensors).")
    raise MissingModelFilesError(f"{folder} has no weights: expected *.safetensors files.")


def _check_required(folder: Path, groups: tuple[tuple[str, ...], ...], family: str) -> None:
    missing = [" or ".join(group) for group in groups if not any((folder / name).is_file() for name in group)]
    if missing:
        raise MissingModelFilesError(
            f"{folder} lacks file(s) the {family} backend needs: {', '.join(missing)}. "
            "Download the complete model folder (tokenizer files included).")


def detect_family(folder: str | Path) -> str:
    """The family name of a model folder: its acdc_arm.json ``family``, else its config.json ``model_type``."""
    manifest = _read_manifest(Path(folder))
    if manifest is not None:
        name = manifest["family"]
        if name in FAMILIES and FAMILIES[name].manifest:
            return name
        raise UnknownModelFamilyError(
            f"{Path(folder) / MANIFEST} names family {name!r}, which is not a supported manifest family. "
            f"Supported: {_supported()}.")
    config = _read_config(Path(folder))
    model_type = config.get("model_type")
    for name, family in FAMILIES.items():
        if family.reads(config):
            return name
    extra = f" ({_KNOWN_UNSUPPORTED[model_type]})" if model_type in _KNOWN_UNSUPPORTED else ""
    raise UnknownModelFamilyError(
        f"{folder}: model_type {model_type!r} is not a supported ARM family{extra}. Supported: {_supported()}.")


def check_arm_folder(path: str | Path, *, family: str = "auto", trust_remote_code: bool = False) -> tuple[Path, str]:
    """Every check of an ARM folder that needs no model loaded: it exists, is of a supported family (detected or
    named), and holds the files and whole safetensors weights that family needs. Returns (folder, family).
    ``load_arm`` runs it first; a host calls it alone to refuse a bad folder before loading anything else."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingModelFilesError(f"model folder {folder} does not exist (or is not a folder).")
    if family == "auto":
        family = detect_family(folder)
    elif family not in FAMILIES:
        raise UnknownModelFamilyError(f"unknown ARM family {family!r}. Supported: {_supported()}.")
    elif FAMILIES[family].manifest:
        manifest = _read_manifest(folder)
        if manifest is None:
            raise MissingModelFilesError(
                f"{folder} has no {MANIFEST}; the {family} family needs it (with lm/ and vq/ beside it).")
        if manifest["family"] != family:
            raise InvalidInputError(f"{folder / MANIFEST} names family {manifest['family']!r}, not {family!r}; "
                                    "use family='auto'.")
    else:
        manifest = _read_manifest(folder)
        if manifest is not None:
            raise InvalidInputError(f"{folder} holds a {manifest['family']!r} ARM (see its {MANIFEST}), not a "
                                    f"{family} model; use family='auto'.")
        config = _read_config(folder)
        if not FAMILIES[family].reads(config):
            kind = config.get("model_type") or config.get("_class_name")
            raise InvalidInputError(
                f"{folder} holds a {kind!r} model, not one of the {family} family "
                f"({', '.join(FAMILIES[family].model_types + FAMILIES[family].class_names)}); use family='auto'.")
    module = importlib.import_module(FAMILIES[family].backend.split(":")[0])
    _check_required(folder, getattr(module, "REQUIRED_FILES", ()), family)
    for sub, what in getattr(module, "CODE_FOLDERS", {}).items():
        check_remote_code(folder / sub if sub != "." else folder, trust_remote_code, what)
    for sub in getattr(module, "WEIGHT_FOLDERS", (".",)):
        _check_weights(folder / sub if sub != "." else folder)
    return folder, family


def check_decoding(family: str, decoding: str) -> None:
    """A clear error unless ``decoding`` (``decoding.DECODING``) is one the ``family``'s backend offers."""
    if decoding not in DECODING:
        raise InvalidInputError(f"decoding must be one of {', '.join(DECODING)}; got {decoding!r}.")
    if decoding != "dynamic" and not getattr(_backend_class(FAMILIES[family]), "static_capable", False):
        raise InvalidInputError(f"the {family} ARM decodes with a dynamic cache only (its attention is not causal "
                                f"over a static cache); use decoding 'dynamic'.")


def load_arm(path: str | Path, *, family: str = "auto", device: torch.device | str = "cpu",
             dtype: Optional[torch.dtype] = None, trust_remote_code: bool = False,
             previews: bool = False, decoding: str = "dynamic") -> ARMBackend:
    """Load the ARM in the local folder ``path``.

    ``family="auto"`` reads the acdc_arm.json manifest or else ``model_type`` from config.json; naming a
    family skips detection but the folder must still hold that family's manifest or config. ``dtype=None``
    lets the backend choose (``devices.pick_dtype``: float32 on the CPU). ``previews``: hand partial frames
    to the progress callback while sampling (see ``ARMBackend.previews``). ``decoding``: the key/value cache and
    step (``decoding.DECODING``: dynamic, static, compiled), checked before anything loads.
    """
    folder, family = check_arm_folder(path, family=family, trust_remote_code=trust_remote_code)
    check_decoding(family, decoding)
    backend = _backend_class(FAMILIES[family]).from_pretrained(folder, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                            previews=previews)
    return backend.set_decoding(decoding) if decoding != "dynamic" else backend
