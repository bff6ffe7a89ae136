"""The one module through which the pack reaches ComfyUI's internals.

Model folders (``folder_paths``), progress bars and previews (``comfy.utils.ProgressBar``), Cancel
(``comfy.model_management``), model offloading (``comfy.model_patcher.ModelPatcher``), websocket messages
(``server.PromptServer``) and execution blockers (``comfy_execution.graph``) are used here and nowhere else.

Outside ComfyUI (tests, scripts) every function still works, reduced: model folders live under one models
directory (``configure_standalone`` or the ``ACDC_MODELS_DIR`` environment variable, else ``./models``),
progress only checks a cancel flag, models are moved with ``.to(device)``, messages go nowhere.
Nothing here derives a path from the pack's own location.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger("acdc.nodes")

try:  # ComfyUI's modules exist only inside a running ComfyUI.
    import folder_paths  # type: ignore
    import comfy.model_management as _mm  # type: ignore
    import comfy.model_patcher as _patcher  # type: ignore
    import comfy.utils as _utils  # type: ignore
    IN_COMFY = True
except ImportError:  # plain Python: the reduced fallbacks below
    folder_paths = _mm = _patcher = _utils = None
    IN_COMFY = False

# Model folder names this pack registers with ComfyUI (besides the existing "checkpoints" and "diffusers").
ARM_FOLDER = "acdc_arm"        # models/acdc_arm/<Janus folder>
LLM_FOLDER = "LLM"             # models/LLM/<instruct LLM folder>, a name many packs share
BUILTIN_FOLDER = "acdc"        # models/acdc/builtin: the built-in default models, built on first use
PREVIEW_SIZE = 512             # longest side of live previews, as ComfyUI's default --preview-size


# -- the reduced host (outside ComfyUI) ----------------------------------------------------------------------

@dataclass
class _Standalone:
    models_dir: Optional[Path] = None
    input_dir: Optional[Path] = None
    temp_dir: Optional[Path] = None
    output_dir: Optional[Path] = None
    interrupted: bool = False

    def models(self) -> Path:
        return Path(self.models_dir or os.environ.get("ACDC_MODELS_DIR") or Path.cwd() / "models")


_standalone = _Standalone()


def configure_standalone(*, models_dir=None, input_dir=None, temp_dir=None, output_dir=None) -> None:
    """Outside ComfyUI: where model folders, input files (painted masks) and previews live."""
    for name, value in (("models_dir", models_dir), ("input_dir", input_dir), ("temp_dir", temp_dir),
                        ("output_dir", output_dir)):
        setattr(_standalone, name, Path(value) if value is not None else None)
    _standalone.interrupted = False


def interrupt(value: bool = True) -> None:
    """Outside ComfyUI: press (or release) Cancel; the next progress report raises ``Interrupted``."""
    _standalone.interrupted = value


class Interrupted(Exception):
    """Raised outside ComfyUI when ``interrupt()`` was called (ComfyUI raises its own exception)."""


# -- model folders -------------------------------------------------------------------------------------------

def register_model_folders() -> None:
    """Register the pack's model folders with ComfyUI's path registry (extra_model_paths.yaml adds to them)."""
    if not IN_COMFY:
        return
    for name in (ARM_FOLDER, LLM_FOLDER, BUILTIN_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def model_dirs(kind: str) -> list[Path]:
    """Every folder registered for a model kind ("acdc_arm", "LLM", "checkpoints", "diffusers", "acdc")."""
    if IN_COMFY:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return []
    return [_standalone.models() / kind]


def list_model_folders(kind: str, markers: str | tuple[str, ...]) -> list[str]:
    """Names of the model folders (holding one of ``markers``, e.g. config.json) in every folder of ``kind``."""
    markers = (markers,) if isinstance(markers, str) else markers
    found = set()
    for root in model_dirs(kind):
        if not root.is_dir():
            continue
        for child in root.iterdir():
            if child.is_dir() and any((child / marker).is_file() for marker in markers):
                found.add(child.name)
    return sorted(found, key=str.lower)


def list_model_files(kind: str, suffixes: tuple[str, ...]) -> list[str]:
    """Relative names of the model files with one of ``suffixes`` in every folder of ``kind``."""
    if IN_COMFY:
        try:
            names = folder_paths.get_filename_list(kind)
        except KeyError:
            names = []
        return sorted((n for n in names if n.lower().endswith(suffixes)), key=str.lower)
    found = set()
    for root in model_dirs(kind):
        if root.is_dir():
            found.update(str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*")
                         if p.is_file() and p.name.lower().endswith(suffixes))
    return sorted(found, key=str.lower)


def find_model(kind: str, name: str) -> Optional[Path]:
    """The path of the model folder or file ``name`` of ``kind``, or None if no registered folder has it."""
    for root in model_dirs(kind):
        candidate = (root / name)
        try:
            candidate.resolve().relative_to(root.resolve())  # no escaping the model folder with ../
        except ValueError:
            continue
        if candidate.exists():
            return candidate
    return None


def builtin_models_dir() -> Path:
    """Where the built-in default models are built (the first folder registered as "acdc")."""
    return model_dirs(BUILTIN_FOLDER)[0] / "builtin"


# -- files the user gives: painted masks, previews -----------------------------------------------------------

_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<type>input|output|temp)\]$")


def _dir(kind: str) -> Path:
    if IN_COMFY:
        return Path({"input": folder_paths.get_input_directory, "output": folder_paths.get_output_directory,
                     "temp": folder_paths.get_temp_directory}[kind]())
    value = {"input": _standalone.input_dir, "output": _standalone.output_dir, "temp": _standalone.temp_dir}[kind]
    return Path(value) if value is not None else Path.cwd() / kind


def annotated_path(name: str) -> Path:
    """The file of an annotated name as ComfyUI's widgets hold them: "sub/file.png [input]" (input by default)."""
    match = _ANNOTATION.match(name.strip())
    kind, rel = (match["type"], match["name"]) if match else ("input", name.strip())
    base = _dir(kind).resolve()
    path = (base / rel).resolve()
    try:
        path.relative_to(base)
    except ValueError:
        raise ValueError(f"{name!r} points outside ComfyUI's {kind} folder.") from None
    return path


def annotation_type(name: str) -> str:
    """"input", "output" or "temp": the folder an annotated file name refers to."""
    match = _ANNOTATION.match(name.strip())
    return match["type"] if match else "input"


def save_picture(picture, prefix: str = "acdc") -> dict:
    """Save a PIL picture as a PNG in the temp folder; return the node-ui entry for it.

    The file name is a hash of the pixels, so the same picture is written once and keeps its name.
    """
    digest = hashlib.sha1(picture.tobytes() + repr(picture.size).encode()).hexdigest()[:16]
    folder = _dir("temp") / "acdc"
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{prefix}_{digest}.png"
    if not (folder / filename).exists():
        picture.save(folder / filename, compress_level=1)
    return {"filename": filename, "subfolder": "acdc", "type": "temp"}


def save_preview(image: torch.Tensor, prefix: str = "acdc") -> dict:
    """Save one image [3, H, W] in [0, 1] (see ``save_picture``)."""
    from acdc_core.images import to_pil
    return save_picture(to_pil(image), prefix)


# -- devices and model management ----------------------------------------------------------------------------

def torch_device() -> torch.device:
    """The device ComfyUI computes on (outside ComfyUI: CUDA, then MPS, then CPU)."""
    if IN_COMFY:
        return _mm.get_torch_device()
    from acdc_core.devices import pick_device
    return pick_device(None)


def offload_device() -> torch.device:
    """Where models wait while another model has the GPU (ComfyUI's offload device; else the CPU)."""
    return _mm.unet_offload_device() if IN_COMFY else torch.device("cpu")


def pick_dtype(name: str) -> torch.dtype:
    """"auto" (float32 on the CPU, bfloat16/float16 on accelerators) or an explicit dtype name."""
    from acdc_core.devices import pick_dtype as engine_pick
    return engine_pick(torch_device(), name)


class _Container(torch.nn.Module):
    """A plain module holding an engine model's torch modules, so ComfyUI's ModelPatcher can move them.

    ModelPatcher assigns ``model.device``; transformers/diffusers models make that a read-only property,
    so they are wrapped here instead of being handed over directly.
    """

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.device = device


class ManagedModel:
    """An engine model (ARM backend, diffusion corrector, memory LLM) known to ComfyUI's model management.

    ``use()`` asks ComfyUI to load the weights onto its compute device (offloading other models if the
    memory is needed) and returns the engine object ready there. Outside ComfyUI it moves the object with
    ``.to(device)``. Moving weights does not change what a model computes, so this is not the kind of
    mutation ComfyUI's output cache cares about.
    """

    def __init__(self, engine: Any, modules: dict[str, torch.nn.Module], name: str) -> None:
        self.engine = engine
        self.name = name
        self.patcher = None
        if IN_COMFY and modules:
            container = _Container(modules, offload_device())
            self.patcher = _patcher.ModelPatcher(container, load_device=_mm.get_torch_device(),
                                                 offload_device=offload_device())

    def use(self) -> Any:
        if self.patcher is not None:
            # Not built from ComfyUI's ops, so these modules cannot be partially loaded: load them whole.
            _mm.load_models_gpu([self.patcher], force_full_load=True)
            device = self.patcher.load_device
        else:
            device = torch_device()
        if hasattr(self.engine, "to"):
            self.engine.to(device)  # weights are already there; this updates the engine's own device fields
        return self.engine

    def __repr__(self) -> str:
        return f"ManagedModel({self.name})"


class Placement:
    """What ``acdc_core.story.run_story`` calls before each stage: ``use(model)`` loads that model's weights."""

    def __init__(self, managed: list[ManagedModel]) -> None:
        self._by_id = {id(m.engine): m for m in managed if m is not None}

    def use(self, model: Any) -> Any:
        managed = self._by_id.get(id(model))
        if managed is not None:
            return managed.use()
        return model


def free_memory() -> None:
    """Give cached accelerator memory back (between large stages)."""
    if IN_COMFY:
        _mm.soft_empty_cache()


# -- progress, previews, Cancel ------------------------------------------------------------------------------

def check_interrupt() -> None:
    """Raise if the user pressed Cancel (ComfyUI's interrupt; outside ComfyUI, ``interrupt()``)."""
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()
    elif _standalone.interrupted:
        _standalone.interrupted = False
        raise Interrupted("processing interrupted")


def _preview(image: Optional[torch.Tensor]):
    if image is None:
        return None
    from acdc_core.images import to_pil
    return ("JPEG", to_pil(image), PREVIEW_SIZE)


class _Bar:
    def __init__(self, total: int, node_id: Optional[str] = None) -> None:
        self.bar = _utils.ProgressBar(total, node_id=node_id) if IN_COMFY else None

    def update(self, value: float, total: float, preview=None) -> None:
        if self.bar is not None:
            self.bar.update_absolute(value, total, preview)


def progress(frames: Optional[int] = None, node_id: Optional[str] = None) -> Callable:
    """A ``ProgressFn`` for the engine: checks Cancel on every call and drives this node's progress bar.

    With ``frames`` (the all-in-one story node), "frame" reports set the frame and every stage's steps
    fill that frame's share of one bar; otherwise the bar follows whichever stage reports. Previews
    ([3, H, W] in [0, 1], e.g. the ARM's frame as its tokens arrive) are shown on the node.
    """
    bar = _Bar(max(1, frames or 1), node_id)
    current = {"frame": 0}

    def report(stage: str, step: int, total: int, preview: Optional[torch.Tensor] = None) -> None:
        check_interrupt()
        if frames:
            if stage == "frame":
                current["frame"] = step
                bar.update(step * 1000, frames * 1000)
                return
            within = step / total if total else 1.0
            bar.update(int(current["frame"] * 1000 + within * 999), frames * 1000, _preview(preview))
        else:
            bar.update(step, total, _preview(preview))

    return report


def frame_progress(done: int, total: int, node_id: Optional[str]) -> None:
    """Show "frames done / frames" on a node (the loop's close node) and tell the web extension."""
    _Bar(total, node_id).update(done, total)
    send("acdc.frame", {"node": node_id, "done": done, "total": total})


# -- messages and execution control --------------------------------------------------------------------------

def send(event: str, data: dict) -> None:
    """A custom websocket event for the web extension (nothing outside ComfyUI)."""
    if not IN_COMFY:
        return
    try:
        from server import PromptServer  # type: ignore
        PromptServer.instance.send_sync(event, data)
    except Exception:  # a message is never worth failing a run for
        logger.debug("could not send %s", event, exc_info=True)


class _Blocked:
    """Outside ComfyUI: what ``blocker()`` returns (inside, ComfyUI's own ExecutionBlocker)."""

    message = None

    def __repr__(self) -> str:
        return "Blocked"


def blocker() -> Any:
    """An output that silently keeps the nodes it feeds from running (ComfyUI's ``ExecutionBlocker(None)``)."""
    if IN_COMFY:
        from comfy_execution.graph import ExecutionBlocker  # type: ignore
        return ExecutionBlocker(None)
    return _Blocked()


def is_blocked(value: Any) -> bool:
    return type(value).__name__ in ("ExecutionBlocker", "_Blocked")
