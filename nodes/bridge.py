"""The one module through which the pack reaches ComfyUI's internals.

Two small hosts meet one interface (``Host``): ``ComfyHost`` inside a running ComfyUI — model folders
(``folder_paths``), progress bars and previews (``comfy.utils.ProgressBar``), Cancel and model offloading
(``comfy.model_management``, ``comfy.model_patcher.ModelPatcher``), websocket messages (``server.PromptServer``),
execution blockers (``comfy_execution.graph``) and ComfyUI's own sampling, text encoding and VAE
(``comfy.sample``, ``comfy.samplers``) for ComfyUI models used as the corrector — and ``StandaloneHost`` in
plain Python (tests, scripts), which does the same, reduced: model folders live under one models directory
(``configure_standalone`` or the ``ACDC_MODELS_DIR`` environment variable, else ``./models``), progress only
checks a cancel flag, models are moved with ``.to(device)``, messages go nowhere, ComfyUI models cannot be
sampled. ``HOST`` is the one in use; the functions below are what node files call.
Nothing here derives a path from the pack's own location.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path, PureWindowsPath
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger("acdc.nodes")

# Model folder names this pack registers with ComfyUI (besides the existing "checkpoints" and "diffusers").
ARM_FOLDER = "acdc_arm"        # models/acdc_arm/<ARM folder>
LLM_FOLDER = "LLM"             # models/LLM/<instruct LLM folder>, a name many packs share
BUILTIN_FOLDER = "acdc"        # models/acdc/builtin: tiny fallback models, built on first use
MOTION_FOLDER = "animatediff_models"   # AnimateDiff motion modules / adapters, the folder AnimateDiff packs use
PREVIEW_SIZE = 512             # longest side of live previews, as ComfyUI's default --preview-size

# The native resolution of ComfyUI model classes (comfy.supported_models) that were not trained at 1024 px.
_NATIVE_SIDE = {"SD15": 512, "SD15_instructpix2pix": 512, "SD20": 768, "SD21UnclipL": 768, "SD21UnclipH": 768}


class Interrupted(Exception):
    """Raised outside ComfyUI when ``interrupt()`` was called (ComfyUI raises its own exception)."""


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


class _Blocked:
    """Outside ComfyUI: what ``blocker()`` returns (inside, ComfyUI's own ExecutionBlocker)."""

    message = None

    def __repr__(self) -> str:
        return "Blocked"


class Host:
    """What the pack needs from the program it runs in. Both hosts implement every method."""

    in_comfy = False

    def model_dirs(self, kind: str) -> list[Path]: ...
    def model_file_names(self, kind: str) -> list[str]: ...
    def folder(self, which: str) -> Path: ...           # "input", "output", "temp"
    def register_model_folders(self) -> None: ...
    def compute_device(self) -> torch.device: ...
    def offload_device(self) -> torch.device: ...
    def manage(self, modules: dict[str, torch.nn.Module]) -> Any: ...   # a handle for ``load``, or None
    def load(self, handle: Any) -> torch.device: ...    # weights onto the compute device; returns it
    def check_interrupt(self) -> None: ...
    def bar(self, total: int, node_id: Optional[str]) -> Callable[[float, float, Any], None]: ...
    def send(self, event: str, data: dict) -> None: ...
    def blocker(self) -> Any: ...
    def running_outputs(self) -> Optional[set[str]]: ...   # the output nodes this run executes; None: unknown
    def keeps_outputs(self) -> bool: ...                   # False under ComfyUI's --cache-none
    def executing_node(self) -> Optional[str]: ...         # the id of the node running now (a loop copy's own id)
    # ComfyUI's own models, for the corrector made from them (nodes/comfy_corrector.py)
    def sampler_names(self) -> list[str]: ...
    def scheduler_names(self) -> list[str]: ...
    def encode_text(self, clip: Any, text: str) -> Any: ...
    def vae_encode(self, vae: Any, image: torch.Tensor) -> torch.Tensor: ...
    def vae_decode(self, vae: Any, latent: torch.Tensor) -> torch.Tensor: ...
    def vae_scale(self, vae: Any) -> int: ...
    def native_side(self, model: Any) -> int: ...
    def sample(self, model: Any, latent: torch.Tensor, *, seed: int, steps: int, cfg: float, sampler_name: str,
               scheduler: str, positive: Any, negative: Any, denoise: float, noise_mask: Optional[torch.Tensor],
               callback: Callable[[int, int], None]) -> torch.Tensor: ...


class StandaloneHost(Host):
    """Plain Python: folders under one models directory, a cancel flag, ``.to(device)``, no ComfyUI sampling."""

    def __init__(self) -> None:
        self.models_dir: Optional[Path] = None
        self.dirs: dict[str, Optional[Path]] = {"input": None, "output": None, "temp": None}
        self.interrupted = False
        self.outputs: Optional[set[str]] = None     # an executor sets the output nodes of its run here
        self.keep_outputs = True                     # an executor without an output cache sets False
        self.executing: Optional[str] = None         # an executor sets the id of the node it runs here

    def models(self) -> Path:
        return Path(self.models_dir or os.environ.get("ACDC_MODELS_DIR") or Path.cwd() / "models")

    def model_dirs(self, kind: str) -> list[Path]:
        return [self.models() / kind]

    def model_file_names(self, kind: str) -> list[str]:
        root = self.models() / kind
        if not root.is_dir():
            return []
        # As ComfyUI lists them (folder_paths.recursive_search): links to folders are followed.
        return sorted(os.path.relpath(os.path.join(top, name), root).replace(os.sep, "/")
                      for top, _, files in os.walk(root, followlinks=True) for name in files)

    def folder(self, which: str) -> Path:
        value = self.dirs[which]
        return Path(value) if value is not None else Path.cwd() / which

    def register_model_folders(self) -> None:
        """Nothing to register: ``model_dirs`` derives every folder from the models directory."""

    def compute_device(self) -> torch.device:
        from acdc_core.devices import pick_device
        return pick_device(None)

    def offload_device(self) -> torch.device:
        return torch.device("cpu")

    def manage(self, modules: dict[str, torch.nn.Module]) -> Any:
        return None

    def load(self, handle: Any) -> torch.device:
        return self.compute_device()

    def check_interrupt(self) -> None:
        if self.interrupted:
            self.interrupted = False
            raise Interrupted("processing interrupted")

    def bar(self, total: int, node_id: Optional[str]) -> Callable[[float, float, Any], None]:
        return lambda value, total, preview=None: None

    def send(self, event: str, data: dict) -> None:
        """Messages go nowhere outside ComfyUI."""

    def blocker(self) -> Any:
        return _Blocked()

    def running_outputs(self) -> Optional[set[str]]:
        return self.outputs

    def keeps_outputs(self) -> bool:
        return self.keep_outputs

    def executing_node(self) -> Optional[str]:
        return self.executing

    def sampler_names(self) -> list[str]:
        from acdc_core.correct import SCHEDULERS
        return list(SCHEDULERS)

    def scheduler_names(self) -> list[str]:
        return ["simple"]

    def _no_comfy(self, *args, **kwargs):
        raise RuntimeError("ComfyUI's own models (MODEL, CLIP, VAE) can only be sampled inside ComfyUI.")

    encode_text = vae_encode = vae_decode = vae_scale = native_side = sample = _no_comfy


class ComfyHost(Host):
    """Inside ComfyUI: its path registry, progress bars, interrupt, model management and sampling."""

    in_comfy = True

    def __init__(self) -> None:
        import comfy.model_management as mm  # type: ignore
        import comfy.model_patcher as patcher  # type: ignore
        import comfy.utils as utils  # type: ignore
        import folder_paths  # type: ignore

        self.folder_paths, self.mm, self.patcher, self.utils = folder_paths, mm, patcher, utils

    def model_dirs(self, kind: str) -> list[Path]:
        try:
            return [Path(p) for p in self.folder_paths.get_folder_paths(kind)]
        except KeyError:
            return []

    def model_file_names(self, kind: str) -> list[str]:
        try:
            return list(self.folder_paths.get_filename_list(kind))
        except KeyError:
            return []

    def folder(self, which: str) -> Path:
        fp = self.folder_paths
        return Path({"input": fp.get_input_directory, "output": fp.get_output_directory,
                     "temp": fp.get_temp_directory}[which]())

    def register_model_folders(self) -> None:
        for name in (ARM_FOLDER, LLM_FOLDER, BUILTIN_FOLDER, MOTION_FOLDER):
            self.folder_paths.add_model_folder_path(name, os.path.join(self.folder_paths.models_dir, name))

    def compute_device(self) -> torch.device:
        return self.mm.get_torch_device()

    def offload_device(self) -> torch.device:
        return self.mm.unet_offload_device()

    def manage(self, modules: dict[str, torch.nn.Module]) -> Any:
        if not modules:
            return None
        container = _Container(modules, self.offload_device())
        return self.patcher.ModelPatcher(container, load_device=self.compute_device(),
                                         offload_device=self.offload_device())

    def load(self, handle: Any) -> torch.device:
        if handle is None:
            return self.compute_device()
        # Not built from ComfyUI's ops, so these modules cannot be partially loaded: load them whole.
        self.mm.load_models_gpu([handle], force_full_load=True)
        return handle.load_device

    def check_interrupt(self) -> None:
        self.mm.throw_exception_if_processing_interrupted()

    def bar(self, total: int, node_id: Optional[str]) -> Callable[[float, float, Any], None]:
        bar = self.utils.ProgressBar(total, node_id=node_id)
        return lambda value, total, preview=None: bar.update_absolute(value, total, preview)

    def send(self, event: str, data: dict) -> None:
        try:
            from server import PromptServer  # type: ignore
            PromptServer.instance.send_sync(event, data)
        except Exception:  # a message is never worth failing a run for
            logger.debug("could not send %s", event, exc_info=True)

    def blocker(self) -> Any:
        from comfy_execution.graph import ExecutionBlocker  # type: ignore
        return ExecutionBlocker(None)

    def keeps_outputs(self) -> bool:
        try:
            from comfy.cli_args import args  # type: ignore
            return not args.cache_none
        except Exception:
            return True

    def executing_node(self) -> Optional[str]:
        try:
            from comfy_execution.utils import get_executing_context  # type: ignore
            context = get_executing_context()
            return None if context is None else str(context.node_id)
        except Exception:   # an older ComfyUI without it
            return None

    def running_outputs(self) -> Optional[set[str]]:
        """The output nodes of the prompt running now, from ComfyUI's queue (one prompt runs at a time): the
        ones that passed validation. None where that cannot be read."""
        try:
            from server import PromptServer  # type: ignore
            running, _ = PromptServer.instance.prompt_queue.get_current_queue_volatile()
            return {str(node) for node in running[0][4]} if len(running) == 1 else None
        except Exception:  # an internal of ComfyUI's: without it the check is skipped, never the run
            logger.debug("could not read the running prompt's outputs", exc_info=True)
            return None

    # -- ComfyUI's own models --------------------------------------------------------------------------------
    def sampler_names(self) -> list[str]:
        import comfy.samplers  # type: ignore
        return list(comfy.samplers.KSampler.SAMPLERS)

    def scheduler_names(self) -> list[str]:
        import comfy.samplers  # type: ignore
        return list(comfy.samplers.KSampler.SCHEDULERS)

    def encode_text(self, clip: Any, text: str) -> Any:
        """CONDITIONING for ``text``, as CLIP Text Encode makes it."""
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    def vae_encode(self, vae: Any, image: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, 3] in [0, 1] -> latent, as VAE Encode makes it."""
        return vae.encode(image[..., :3])

    def vae_decode(self, vae: Any, latent: torch.Tensor) -> torch.Tensor:
        """Latent -> IMAGE [B, H, W, 3] in [0, 1], as VAE Decode makes it."""
        images = vae.decode(latent)
        return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images

    def vae_scale(self, vae: Any) -> int:
        return int(vae.spacial_compression_encode())

    def native_side(self, model: Any) -> int:
        return _NATIVE_SIDE.get(type(model.model.model_config).__name__, 1024)

    def sample(self, model: Any, latent: torch.Tensor, *, seed: int, steps: int, cfg: float, sampler_name: str,
               scheduler: str, positive: Any, negative: Any, denoise: float, noise_mask: Optional[torch.Tensor],
               callback: Callable[[int, int], None]) -> torch.Tensor:
        """ComfyUI's KSampler: ``steps`` steps at ``denoise`` from ``latent`` with the noise of ``seed``."""
        import comfy.sample  # type: ignore

        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        noise = comfy.sample.prepare_noise(latent, seed)
        return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                   denoise=denoise, noise_mask=noise_mask, disable_pbar=True, seed=seed,
                                   callback=lambda step, x0, x, total: callback(step + 1, total))


def _comfy_present() -> bool:
    try:  # ComfyUI's modules exist only inside a running ComfyUI.
        import comfy.model_management  # type: ignore  # noqa: F401
        import folder_paths  # type: ignore  # noqa: F401
    except ImportError:
        return False
    return True


HOST: Host = ComfyHost() if _comfy_present() else StandaloneHost()


def configure_standalone(*, models_dir=None, input_dir=None, temp_dir=None, output_dir=None) -> None:
    """Outside ComfyUI: where model folders, input files (painted masks) and previews live."""
    if isinstance(HOST, StandaloneHost):
        HOST.models_dir = Path(models_dir) if models_dir is not None else None
        HOST.dirs = {"input": input_dir, "output": output_dir, "temp": temp_dir}
        HOST.interrupted = False


def interrupt(value: bool = True) -> None:
    """Outside ComfyUI: press (or release) Cancel; the next progress report raises ``Interrupted``."""
    if isinstance(HOST, StandaloneHost):
        HOST.interrupted = value


# -- model folders -------------------------------------------------------------------------------------------

def register_model_folders() -> None:
    """Register the pack's model folders with ComfyUI's path registry (extra_model_paths.yaml adds to them)."""
    HOST.register_model_folders()


def model_dirs(kind: str) -> list[Path]:
    """Every folder registered for a model kind ("acdc_arm", "LLM", "checkpoints", "diffusers", "acdc")."""
    return HOST.model_dirs(kind)


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
    names = {n for n in HOST.model_file_names(kind) if n.lower().endswith(suffixes)}
    return sorted(names, key=str.lower)


def inside_name(name) -> Optional[str]:
    """A file or folder name from a workflow, if it names something inside a folder; None if it could leave it.

    The rule is on the name, not on where it leads: a link the user placed inside a model or input folder
    (models/acdc_arm/mymodel -> /data/models/mymodel) is followed, as ComfyUI follows it, while a name that
    escapes the folder as written is refused: an absolute path, a drive (C:), a ".." part (with / or \\ as
    separator, whatever the system), a NUL byte, or nothing at all. (ComfyUI's own names never hold "..".)
    """
    if not isinstance(name, str) or "\0" in name:
        return None
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    # Windows drops trailing dots and spaces from a part, so ".. " and "..." are refused with "..".
    if not parts or any(not part.strip(". ") for part in parts) or name[0] in "/\\" \
            or PureWindowsPath(name).drive:
        return None
    return name


def find_model(kind: str, name: str) -> Optional[Path]:
    """The path of the model folder or file ``name`` of ``kind``, or None if no registered folder has it
    (or ``name`` is not a name inside the folder: see ``inside_name``)."""
    name = inside_name(name)
    if name is None:
        return None
    for root in model_dirs(kind):
        candidate = root / name
        if candidate.exists():
            return candidate
    return None


def builtin_models_dir() -> Path:
    """Where tiny fallback models are built (the first folder registered as "acdc")."""
    return model_dirs(BUILTIN_FOLDER)[0] / "builtin"


# -- files the user gives: painted masks, previews -----------------------------------------------------------

_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<type>input|output|temp)\]$")


def annotated_path(name: str) -> Path:
    """The file of an annotated name as ComfyUI's widgets hold them: "sub/file.png [input]" (input by default)."""
    match = _ANNOTATION.match(name.strip())
    kind, rel = (match["type"], match["name"]) if match else ("input", name.strip())
    rel = inside_name(rel)   # links the user placed in the folder are followed; "..", absolute paths are not
    if rel is None:
        raise ValueError(f"{name!r} points outside ComfyUI's {kind} folder: give a file name inside it (no "
                         f"absolute path, no '..').")
    return HOST.folder(kind) / rel


def annotation_type(name: str) -> str:
    """"input", "output" or "temp": the folder an annotated file name refers to."""
    match = _ANNOTATION.match(name.strip())
    return match["type"] if match else "input"


def save_picture(picture, prefix: str = "acdc") -> dict:
    """Save a PIL picture as a PNG in the temp folder; return the node-ui entry for it.

    The file name is a hash of the pixels, so the same picture is written once and keeps its name.
    """
    digest = hashlib.sha1(picture.tobytes() + repr(picture.size).encode()).hexdigest()[:16]
    folder = HOST.folder("temp") / "acdc"
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{prefix}_{digest}.png"
    if not (folder / filename).exists():
        picture.save(folder / filename, compress_level=1)
    return {"filename": filename, "subfolder": "acdc", "type": "temp"}


def save_animation(pictures, prefix: str = "acdc") -> dict:
    """Save PIL pictures as an animated WEBP in the temp folder (named by a hash of their pixels); return the node-ui
    entry for it (with ``"animated": (True,)`` in the node's ui, as ComfyUI's Save Animated WEBP shows one)."""
    from acdc_core.report import save_animation as write

    digest = hashlib.sha1(b"".join(p.tobytes() for p in pictures) + repr(pictures[0].size).encode()).hexdigest()[:16]
    folder = HOST.folder("temp") / "acdc"
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{prefix}_{digest}.webp"
    if not (folder / filename).exists():
        write(folder / filename, pictures)
    return {"filename": filename, "subfolder": "acdc", "type": "temp"}


def save_preview(image: torch.Tensor, prefix: str = "acdc") -> dict:
    """Save one image [3, H, W] in [0, 1], a small frame enlarged (``acdc_core.images.to_preview``; see
    ``save_picture``)."""
    from acdc_core.images import to_preview
    return save_picture(to_preview(image), prefix)


# -- devices and model management ----------------------------------------------------------------------------

def offload_device() -> torch.device:
    """Where models wait while another model has the GPU (ComfyUI's offload device; else the CPU)."""
    return HOST.offload_device()


def dtype_for(name: str) -> torch.dtype:
    """A loader's dtype widget: "auto" (the engine's choice for ComfyUI's compute device) or a dtype name."""
    from acdc_core.devices import pick_dtype
    return pick_dtype(HOST.compute_device(), name)


class ManagedModel:
    """An engine model (ARM backend, corrector, memory module) known to the host's model management.

    ``use()`` asks ComfyUI to load its weights (``engine.modules()``) onto the compute device, offloading
    other models if the memory is needed, and returns the engine object ready there. Outside ComfyUI it moves
    the object with ``.to(device)``. Moving weights does not change what a model computes, so this is not the
    kind of mutation ComfyUI's output cache cares about.
    """

    def __init__(self, engine: Any, name: str) -> None:
        self.engine = engine
        self.name = name
        self.handle = HOST.manage(engine.modules())

    def use(self) -> Any:
        # Inside ComfyUI the weights are already there; this updates the engine's own device fields.
        return self.engine.to(HOST.load(self.handle))

    def __repr__(self) -> str:
        return f"ManagedModel({self.name})"


class ComfyModels:
    """The ``acdc_core.devices.Placement`` of a run inside a node: ``use(model)`` loads that model's weights
    through ``ManagedModel`` (ComfyUI's model management inside ComfyUI)."""

    def __init__(self, managed: list[ManagedModel]) -> None:
        self._by_id = {id(m.engine): m for m in managed if m is not None}

    def use(self, model: Any) -> Any:
        managed = self._by_id.get(id(model))
        return managed.use() if managed is not None else model


# -- progress, previews, Cancel ------------------------------------------------------------------------------

def check_interrupt() -> None:
    """Raise if the user pressed Cancel (ComfyUI's interrupt; outside ComfyUI, ``interrupt()``)."""
    HOST.check_interrupt()


def _preview(image: Optional[torch.Tensor], caption: Optional[str] = None):
    if image is None:
        return None
    from acdc_core.images import to_preview
    return ("JPEG", to_preview(image, caption), PREVIEW_SIZE)


def progress(frames: Optional[int] = None, node_id: Optional[str] = None) -> Callable:
    """A ``ProgressFn`` for the engine: checks Cancel on every call and drives this node's progress bar.

    With ``frames`` (the all-in-one story node), "frame" reports set the frame and every stage's steps
    fill that frame's share of one bar; otherwise the bar follows whichever stage reports. Previews
    ([3, H, W] in [0, 1], e.g. the ARM's frame as its tokens arrive) are shown on the node; after Cancel the
    last one is shown dimmed with "cancelled" across it, so a half-drawn frame does not pass for a result.
    """
    bar = HOST.bar(max(1, frames or 1), node_id)
    current = {"frame": 0}
    shown: dict = {}   # the last preview shown, with the bar's value then

    def update(value: int, total: int, preview: Optional[torch.Tensor] = None) -> None:
        if preview is not None:
            shown.update(preview=preview, value=value, total=total)
        bar(value, total, _preview(preview))

    def report(stage: str, step: int, total: int, preview: Optional[torch.Tensor] = None) -> None:
        try:
            check_interrupt()
        except BaseException:
            if shown:
                bar(shown["value"], shown["total"], _preview(shown["preview"], "cancelled"))
            raise
        if frames:
            if stage == "frame":
                current["frame"] = step
                update(step * 1000, frames * 1000)
                return
            within = step / total if total else 1.0
            update(int(current["frame"] * 1000 + within * 999), frames * 1000, preview)
        else:
            update(step, total, preview)

    return report


def frame_progress(done: int, total: int, node_id: Optional[str]) -> None:
    """Show "frames done / frames" on a node (the loop's close node) and tell the web extension."""
    HOST.bar(total, node_id)(done, total)
    send("acdc.frame", {"node": node_id, "done": done, "total": total})


# -- messages and execution control --------------------------------------------------------------------------

def send(event: str, data: dict) -> None:
    """A custom websocket event for the web extension (nothing outside ComfyUI)."""
    HOST.send(event, data)


def blocker() -> Any:
    """An output that silently keeps the nodes it feeds from running (ComfyUI's ``ExecutionBlocker(None)``)."""
    return HOST.blocker()


def lazy_inputs() -> bool:
    """Whether a node may take an input lazily (asked for only when needed). Not under ComfyUI's --cache-none:
    there an input asked for after its node ran is computed again, with everything above it, and inside the
    story loop that doubles the work with every frame. Eager there, every frame's chain runs once."""
    return HOST.keeps_outputs()


def executing_node() -> Optional[str]:
    """The id of the node running now (inside the story loop, its copy's id), or None where the host cannot say."""
    return HOST.executing_node()


def running_outputs() -> Optional[set[str]]:
    """The output nodes the running prompt executes (ComfyUI drops those that failed validation), or None."""
    return HOST.running_outputs()


def is_blocked(value: Any) -> bool:
    return type(value).__name__ in ("ExecutionBlocker", "_Blocked")
