"""Loading a diffusion model for correction: a diffusers folder or a single-file checkpoint, fully offline.

A diffusers folder whose model_index.json lists no ``vae`` holds a pixel-space model (as DeepFloyd IF is, and
the toy world's DM in ``acdc_core/toy/models/dm``): an SD1.x-shaped UNet with 3 input and output channels that
denoises the pixels themselves; the corrector gets a ``PixelSpace`` (identity) in place of the VAE.

Everything that can be checked without loading weights is checked first (``check_diffusers_model``), with an
error that names the file and what to do: a missing path, files missing from a diffusers folder, a pickle
checkpoint (refused: unpickling runs code), a weight file that is truncated, empty or a renamed pickle (every
``.safetensors`` is checked by its header, ``weights.check_safetensors``), a checkpoint layout the engine does
not know.

Single-file checkpoints (the original / ComfyUI / A1111 layout) go through diffusers' ``from_single_file``
with ``config=`` pointing at a config folder shipped in this package (``configs/sd15``, ``configs/sdxl``), so
no config is ever fetched from the hub; the hub client is also switched to offline mode while loading.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

from ..errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from ..weights import check_safetensors, check_weight_folder, is_pickle, pickle_files
from .sdedit import DiffusionCorrector, PixelSpace

CONFIGS = Path(__file__).resolve().parent / "configs"
_TEXT_PARTS = ("text_encoder", "text_encoder_2")
_TOKENIZER_PARTS = ("tokenizer", "tokenizer_2")
_MODEL_PARTS = ("unet", "vae")


def is_diffusers_model(path: Path) -> bool:
    """Whether ``path`` is for this loader: a folder with model_index.json, or a checkpoint file (safetensors,
    or a pickle suffix, which ``load_diffusers_corrector`` refuses with a message saying why)."""
    if path.is_dir():
        return (path / "model_index.json").is_file() or (path / "unet").is_dir()
    return path.suffix.lower() == ".safetensors" or is_pickle(path)


def load_diffusers_corrector(path: str | Path, *, device: torch.device | str = "cpu",
                             dtype: torch.dtype = torch.float32,
                             config_dir: Optional[str | Path] = None) -> DiffusionCorrector:
    """Load a Stable Diffusion model (SD1.x-shaped or SDXL) as a ``DiffusionCorrector`` (the kind "diffusers").

    ``path`` is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/ and
    for SDXL text_encoder_2/, tokenizer_2/; no vae/ for a pixel-space model) or a single-file ``.safetensors``
    checkpoint in the original layout. ``config_dir`` replaces the shipped config folder for single files (e.g. a fine-tune with other
    component configs).
    """
    path = _existing(path)
    with _hub_offline():
        corrector = _load_folder(path, dtype) if path.is_dir() else _load_single_file(path, dtype, config_dir)
    return corrector.to(device)


def check_diffusers_model(path: str | Path) -> None:
    """Every check of a diffusers folder or single-file checkpoint that reads no tensor data: the path exists,
    the folder has the files its components need, every weight file is whole safetensors (headers only, see
    ``weights.check_safetensors``), a single file is a full SD1.5/SDXL checkpoint with a VAE. Raises the
    error ``load_diffusers_corrector`` would raise for the same path, before anything is loaded."""
    path = _existing(path)
    if path.is_dir():
        _check_folder(path)
    else:
        _check_single_file(path)


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingModelFilesError(
            f"diffusion model not found: {path}. Give a diffusers folder (with model_index.json) or a single-file "
            f".safetensors checkpoint (SD1.5 or SDXL).")
    return path


# -- diffusers folders --------------------------------------------------------------------------------------

def _components(folder: Path) -> list[str]:
    """The components a folder's model_index.json lists (SD1.5's set if there is no model_index.json)."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    index = json.loads(index_file.read_text())
    known = ("unet", "vae", *_TEXT_PARTS, *_TOKENIZER_PARTS, "scheduler")
    return [name for name in known if isinstance(index.get(name), list) and index[name][0] is not None]


def _find_weights(part: Path, stem: str) -> tuple[bool, Optional[str]]:
    """Whether ``part`` holds safetensors weights named ``stem`` (one file or shards), and their variant."""
    for variant in (None, "fp16"):
        name = stem if variant is None else f"{stem}.{variant}"
        if (part / f"{name}.safetensors").is_file() or (part / f"{name}.safetensors.index.json").is_file():
            return True, variant
    return False, None


def _missing_files(folder: Path, components: list[str], *, weights: bool) -> list[str]:
    """Every file ``components`` need that ``folder`` lacks, as readable relative names."""
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for name in components:
        part = folder / name
        if name == "scheduler":
            needed = [] if (part / "scheduler_config.json").is_file() else ["scheduler_config.json"]
        elif name in _TOKENIZER_PARTS:
            has_bpe = (part / "vocab.json").is_file() and (part / "merges.txt").is_file()
            needed = [] if has_bpe or (part / "tokenizer.json").is_file() else \
                ["vocab.json + merges.txt (or tokenizer.json)"]
        else:
            needed = [] if (part / "config.json").is_file() else ["config.json"]
            stem = "model" if name in _TEXT_PARTS else "diffusion_pytorch_model"
            if weights and not _find_weights(part, stem)[0]:
                pickled = pickle_files(part, f"{stem}*")
                note = f" (found {', '.join(pickled)}: pickle files are not loaded; convert to safetensors)" \
                    if pickled else ""
                needed.append(f"{stem}.safetensors{note}")
        missing += [f"{name}/{file}" for file in needed]
    return missing


def _check_folder(folder: Path) -> list[str]:
    """The folder's components, once its files are all there and its weight files are whole safetensors."""
    components = _components(folder)
    missing = _missing_files(folder, components, weights=True)
    if missing:
        raise MissingModelFilesError(f"the diffusers folder {folder} is missing: {'; '.join(missing)}.")
    for name in components:
        if name in _MODEL_PARTS or name in _TEXT_PARTS:
            check_weight_folder(folder / name)
    return components


def _load_folder(folder: Path, dtype: torch.dtype) -> DiffusionCorrector:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    components = _check_folder(folder)
    index = json.loads((folder / "model_index.json").read_text())

    def load_model(name: str, model_class: type) -> torch.nn.Module:
        _, variant = _find_weights(folder / name, "diffusion_pytorch_model")
        return model_class.from_pretrained(folder, subfolder=name, torch_dtype=dtype, variant=variant,
                                           use_safetensors=True, local_files_only=True)

    unet = load_model("unet", UNet2DConditionModel)
    vae = load_model("vae", AutoencoderKL) if "vae" in components else _pixel_space(unet, folder)
    text_encoders = []
    for name in (part for part in _TEXT_PARTS if part in components):
        encoder_class = getattr(transformers, index[name][1])  # CLIPTextModel / CLIPTextModelWithProjection
        _, variant = _find_weights(folder / name, "model")
        text_encoders.append(encoder_class.from_pretrained(folder / name, dtype=dtype, variant=variant,
                                                           use_safetensors=True, local_files_only=True))
    # Every SD / SDXL tokenizer is a CLIP BPE tokenizer, whatever class name model_index.json records.
    tokenizers = [transformers.CLIPTokenizer.from_pretrained(folder / name, local_files_only=True)
                  for name in _TOKENIZER_PARTS if name in components]
    return _corrector(unet, vae, text_encoders, tokenizers, folder, dtype)


def _pixel_space(unet: torch.nn.Module, folder: Path) -> PixelSpace:
    """The identity "VAE" of a folder without one, once its UNet is seen to denoise RGB pixels."""
    channels = (unet.config.in_channels, unet.config.out_channels)
    if channels != (3, 3):
        raise MissingModelFilesError(
            f"{folder / 'model_index.json'} lists no vae, so {folder.name} is read as a pixel-space model, but its "
            f"UNet has {channels[0]} input and {channels[1]} output channels (pixel space needs 3 and 3): a latent "
            f"model needs its vae/ folder and a \"vae\" entry in model_index.json.")
    # The UNet halves the size at every level after the first: image sides must be multiples of that.
    return PixelSpace(image_multiple=2 ** (len(unet.config.block_out_channels) - 1))


# -- single-file checkpoints --------------------------------------------------------------------------------

def detect_checkpoint_family(keys: set[str] | list[str]) -> str:
    """"sd15" or "sdxl" from a single-file checkpoint's keys, or an error saying what the file looks like."""
    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if not has("model.diffusion_model."):
        raise UnknownModelFamilyError(
            "the checkpoint holds no UNet under 'model.diffusion_model.': it is not a full Stable Diffusion "
            "checkpoint (a LoRA, VAE, UNet-only or diffusers-layout file?). Use a full SD1.5/SDXL checkpoint "
            "or a diffusers folder.")
    if has("conditioner.embedders.1.model.") and has("conditioner.embedders.0.transformer."):
        return "sdxl"
    if has("cond_stage_model.transformer.text_model."):
        return "sd15"
    found = ("an SDXL refiner" if has("conditioner.embedders.0.model.")
             else "SD 2.x (OpenCLIP text encoder)" if has("cond_stage_model.model.")
             else "an unknown text-encoder layout")
    raise UnknownModelFamilyError(
        f"the checkpoint looks like {found}; single-file loading supports SD1.x-shaped and SDXL-base "
        f"checkpoints. Convert it to a diffusers folder to load it another way.")


_FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"


def _check_single_file(path: Path) -> tuple[str, int]:
    """A single-file checkpoint's family ("sd15" / "sdxl") and UNet input channels, from its header alone."""
    if is_pickle(path):
        raise InvalidInputError(
            f"{path.name} is a pickle checkpoint ({path.suffix}); loading pickle can run arbitrary code, so this "
            f"engine loads .safetensors only. Convert it once, in an environment you trust, to .safetensors.")
    shapes = check_safetensors(path)   # not safetensors, truncated, a renamed pickle: named with what to do
    try:
        family = detect_checkpoint_family(set(shapes))
    except UnknownModelFamilyError as error:
        raise UnknownModelFamilyError(f"{path.name}: {error}") from None
    if not any(key.startswith("first_stage_model.") for key in shapes):
        raise MissingModelFilesError(f"{path.name} has no VAE weights (first_stage_model.*); use a checkpoint "
                                     f"with a baked-in VAE.")
    if len(shapes.get(_FIRST_CONV, ())) != 4:
        raise UnknownModelFamilyError(
            f"{path.name} has no 4-D {_FIRST_CONV} (the UNet's first convolution); it is not a full SD1.5/SDXL "
            "checkpoint. Use a full checkpoint or a diffusers folder.")
    # 9 input channels = an inpainting UNet (latents + mask + masked-image latents).
    return family, shapes[_FIRST_CONV][1]


def _load_single_file(path: Path, dtype: torch.dtype, config_dir: Optional[str | Path]) -> DiffusionCorrector:
    family, in_channels = _check_single_file(path)
    config_dir = Path(config_dir).expanduser() if config_dir is not None else CONFIGS / family
    missing = _missing_files(config_dir, _components(config_dir), weights=False)
    if missing:
        raise MissingModelFilesError(f"the config folder {config_dir} is missing: {'; '.join(missing)}.")

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    # The shipped configs describe 4-channel UNets; an inpainting checkpoint overrides that one number.
    extra = {"num_in_channels": in_channels} if in_channels != 4 else {}
    pipe = pipeline_class.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                           torch_dtype=dtype, **extra)
    text_encoders = [getattr(pipe, name) for name in _TEXT_PARTS if getattr(pipe, name, None) is not None]
    tokenizers = [getattr(pipe, name) for name in _TOKENIZER_PARTS if getattr(pipe, name, None) is not None]
    return _corrector(pipe.unet, pipe.vae, text_encoders, tokenizers, config_dir, dtype)


# -- shared ---------------------------------------------------------------------------------------------------

def _corrector(unet, vae, text_encoders, tokenizers, folder: Path, dtype: torch.dtype) -> DiffusionCorrector:
    """Assemble the corrector; the scheduler and pipeline options come from ``folder``'s JSON files."""
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    if dtype == torch.float16 and not isinstance(vae, PixelSpace) and vae.config.get("force_upcast", False):
        vae = vae.to(torch.float32)  # SDXL's VAE overflows in float16; diffusers upcasts it the same way
    return DiffusionCorrector(unet=unet, vae=vae, text_encoders=text_encoders, tokenizers=tokenizers,
                              scheduler_config=scheduler_config,
                              force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True))


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Offline mode for the hub client while loading: every HTTP request it would make raises instead."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved

