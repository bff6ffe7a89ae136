"""Loaders: the ARM, the diffusion model and the memory LLM, each listing what is on disk in ComfyUI's
model folders, plus the pack's built-in default models.

Folders: ARMs in ``models/acdc_arm/<folder>``; diffusion models as single-file checkpoints in
``models/checkpoints`` or diffusers folders in ``models/diffusers``; memory LLMs in ``models/LLM/<folder>``.
All of them can be added to in ``extra_model_paths.yaml`` (keys ``acdc_arm``, ``checkpoints``,
``diffusers``, ``LLM``). The built-in models are the toy world's, shipped in ``acdc_core/toy/models``.
**ComfyUI Model as Corrector** turns ComfyUI's own MODEL + CLIP + VAE (Load Checkpoint, LoRAs, ...) into the
corrector instead (``comfy_corrector.py``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from acdc_core.arm.base import DECODING
from acdc_core.errors import ACDCError
from . import bridge
from .comfy_corrector import DEFAULT_SCHEDULER, ComfyCorrector
from .widgets import check_float_widgets, dtype_input, seed_input, tooltip
from .wires import ARM, BUILTIN, BUILTIN_VIDEO, CATEGORY, DM, MEMORY, VIDEO_DM, ModelHandle


def builtin_model_paths() -> dict[str, Path]:
    """The pack's built-in default models: {"arm", "dm", "llm"} -> folder.

    The toy world's trained models shipped in ``acdc_core/toy/models`` (32 px stories, seconds on a CPU). A
    copy of the pack without them (a trimmed install) falls back to tiny random-weight models built locally in
    ``models/acdc/builtin`` on first use. This is the one place that decides what "built-in" means.
    """
    from acdc_core.toy import defaults

    if defaults.available():
        return {"arm": defaults.ARM_DIR, "dm": defaults.DM_DIR, "llm": defaults.MEMORY_DIR}
    from acdc_core.tiny import build_default_models
    return build_default_models(bridge.builtin_models_dir())


def builtin_video_paths() -> dict[str, Path]:
    """The built-in video models: {"arm", "dm", "motion_adapter"} -> path. The toy video world's trained video ARM
    and video DM (a pixel-space image UNet + its motion adapter) shipped in ``acdc_core/toy/models`` (32 px clips,
    seconds on a CPU). A copy of the pack without them falls back to tiny random-weight models built in
    ``models/acdc/builtin/video`` on first use (the wiring only: their frames are noise)."""
    from acdc_core.cli_video import builtin_models

    arm, dm, adapter = builtin_models(bridge.builtin_models_dir() / "video")
    return {"arm": arm, "dm": dm, "motion_adapter": adapter}


def managed(engine, name: str) -> ModelHandle:
    """A loaded engine model handed to the host's model management (its ``modules()``)."""
    return ModelHandle(engine, bridge.ManagedModel(engine, name), name)


# -- ARM ----------------------------------------------------------------------------------------------------

def arm_choices() -> list[str]:
    # a transformers folder (Janus: config.json) or a unified-vocabulary ARM (acdc_arm.json, lm/, vq/)
    return [BUILTIN, BUILTIN_VIDEO] + bridge.list_model_folders(bridge.ARM_FOLDER, ("config.json", "acdc_arm.json"))


def arm_path(choice: str) -> Path:
    if choice == BUILTIN:
        return builtin_model_paths()["arm"]
    if choice == BUILTIN_VIDEO:
        return builtin_video_paths()["arm"]
    path = bridge.find_model(bridge.ARM_FOLDER, choice)
    if path is None:
        raise FileNotFoundError(_not_found("ARM folder", choice, bridge.ARM_FOLDER))
    return path


def _not_found(what: str, choice: str, kind: str) -> str:
    where = ", ".join(str(p) for p in bridge.model_dirs(kind)) or f"models/{kind}"
    return f"{what} {choice!r} was not found in {where}. Put it there (or add a folder for '{kind}' in " \
           f"extra_model_paths.yaml) and press R to refresh the lists."


class LoadARM:
    DESCRIPTION = ("Loads the autoregressive multimodal model (ARM) that writes the story as VQ image tokens: "
                   "a Janus / Janus-Pro folder in transformers format or a unified-vocabulary ARM folder "
                   "(acdc_arm.json) from models/acdc_arm, or the built-in toy-world ARM (32 px animal stories, "
                   "trained with the pack; runs in seconds on a CPU).")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (ARM,)
    RETURN_NAMES = ("arm",)
    OUTPUT_TOOLTIPS = ("The ARM, handed to ComfyUI's model management (offloaded when other models need the GPU).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (arm_choices(), tooltip("A model folder in models/acdc_arm: Janus-1.3B or Janus-Pro-1B/7B in "
                                           "transformers format (deepseek-community/Janus-Pro-7B), Show-o as "
                                           "published with magvitv2/ and phi-1_5/ inside, Emu3-Gen in transformers "
                                           "format (BAAI/Emu3-Gen-hf), or a unified-vocabulary ARM with "
                                           "acdc_arm.json. The family is detected from the folder.")),
            "dtype": dtype_input(),
            "live_preview": ("BOOLEAN", tooltip("Show the frame on the generating node as its tokens arrive "
                                                "(a VQ decode at each quarter of the image).", default=True)),
            "trust_remote_code": ("BOOLEAN", tooltip("Let the model folder run its own Python code. Off unless "
                                                     "you trust the folder.", default=False)),
        }, "optional": {
            "decoding": (list(DECODING), tooltip(
                "The ARM's key/value cache: dynamic (default); static; or compiled, a static cache with the "
                "one-token step compiled by torch.compile (CUDA graphs on a GPU): the first frame waits for the "
                "compile, later ones are faster (README, speed). Same tokens for the same seed. Not for Show-o.",
                default="dynamic")),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, arm, trust_remote_code=False, decoding="dynamic"):
        if arm is None or arm in (BUILTIN, BUILTIN_VIDEO):  # None: the value comes from a link, checked when it runs
            return True
        path = bridge.find_model(bridge.ARM_FOLDER, arm)
        if path is None:
            return _not_found("ARM folder", arm, bridge.ARM_FOLDER)
        from acdc_core.arm import check_arm_folder
        from acdc_core.arm.registry import check_decoding
        try:   # the family, its files, whole safetensors weights (headers only), no code unless allowed
            _, family = check_arm_folder(path, trust_remote_code=bool(trust_remote_code))
            check_decoding(family, decoding or "dynamic")
        except (ACDCError, OSError) as error:
            return str(error)
        return True

    def load(self, arm, dtype, live_preview, trust_remote_code, decoding="dynamic"):
        from acdc_core.arm import load_arm

        backend = load_arm(arm_path(arm), device=bridge.offload_device(), dtype=bridge.dtype_for(dtype),
                           trust_remote_code=trust_remote_code, previews=bool(live_preview), decoding=decoding)
        return (managed(backend, arm),)


# -- diffusion model ----------------------------------------------------------------------------------------

CHECKPOINT_PREFIX, DIFFUSERS_PREFIX = "checkpoints/", "diffusers/"


def dm_choices() -> list[str]:
    files = [CHECKPOINT_PREFIX + f for f in bridge.list_model_files("checkpoints", (".safetensors",))]
    folders = [DIFFUSERS_PREFIX + f for f in bridge.list_model_folders("diffusers", "model_index.json")]
    return [BUILTIN] + folders + files


def dm_path(choice: str) -> Path:
    if choice == BUILTIN:
        return builtin_model_paths()["dm"]
    for prefix, kind in ((CHECKPOINT_PREFIX, "checkpoints"), (DIFFUSERS_PREFIX, "diffusers")):
        if choice.startswith(prefix):
            path = bridge.find_model(kind, choice[len(prefix):])
            if path is None:
                raise FileNotFoundError(_not_found("diffusion model", choice[len(prefix):], kind))
            return path
    raise FileNotFoundError(f"{choice!r} is not a diffusion model choice: pick one from the list "
                            f"({CHECKPOINT_PREFIX}... or {DIFFUSERS_PREFIX}...).")


class LoadDiffusionModel:
    DESCRIPTION = ("Loads the diffusion model (DM) that corrects each frame by SDEdit and inpaints painted "
                   "fixes: an SD1.5/SDXL single-file .safetensors checkpoint from models/checkpoints, a "
                   "diffusers folder from models/diffusers, or the built-in toy-world DM (32 px, pixel space). "
                   "Loaded offline.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (DM,)
    RETURN_NAMES = ("dm",)
    OUTPUT_TOOLTIPS = ("The diffusion model, handed to ComfyUI's model management.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (dm_choices(), tooltip("checkpoints/...: a single-file SD1.5 or SDXL checkpoint "
                                            "(.safetensors); diffusers/...: a diffusers folder.")),
            "dtype": dtype_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        if model is None or model == BUILTIN:
            return True
        try:
            path = dm_path(model)
        except FileNotFoundError as error:
            return str(error)
        from acdc_core.correct import check_corrector_path
        try:   # its kind, its files, whole safetensors weights (headers only), no pickle
            check_corrector_path(path)
        except (ACDCError, OSError) as error:
            return str(error)
        return True

    def load(self, model, dtype):
        from acdc_core.correct import load_corrector

        corrector = load_corrector(dm_path(model), device=bridge.offload_device(), dtype=bridge.dtype_for(dtype))
        return (managed(corrector, model),)


# -- video diffusion model (AnimateDiff) ---------------------------------------------------------------------

def motion_adapter_choices() -> list[str]:
    """Motion modules in models/animatediff_models: original single files (.safetensors) and diffusers MotionAdapter
    folders (config.json)."""
    files = bridge.list_model_files(bridge.MOTION_FOLDER, (".safetensors",))
    folders = bridge.list_model_folders(bridge.MOTION_FOLDER, "config.json")
    return [BUILTIN_VIDEO] + sorted(set(files) | set(folders), key=str.lower)


def video_dm_paths(model: str, motion_adapter: str) -> tuple[Path, Path]:
    builtin = builtin_video_paths() if BUILTIN_VIDEO in (model, motion_adapter) else {}
    sd = builtin["dm"] if model == BUILTIN_VIDEO else dm_path(model)
    if motion_adapter == BUILTIN_VIDEO:
        return sd, builtin["motion_adapter"]
    adapter = bridge.find_model(bridge.MOTION_FOLDER, motion_adapter)
    if adapter is None:
        raise FileNotFoundError(_not_found("motion adapter", motion_adapter, bridge.MOTION_FOLDER))
    return sd, adapter


class LoadVideoDM:
    DESCRIPTION = ("Loads the video diffusion model that corrects windows of video frames at once (the paper's "
                   "AnimateDiff): an SD1.5 checkpoint (models/checkpoints, or a diffusers folder) and an AnimateDiff "
                   "motion module from models/animatediff_models (an original .safetensors such as "
                   "mm_sd_v15_v2.safetensors, or a diffusers MotionAdapter folder). Loaded offline; .ckpt files are "
                   "refused (pickle).")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (VIDEO_DM,)
    RETURN_NAMES = ("video_dm",)
    OUTPUT_TOOLTIPS = ("The video corrector, for Video Window Correct and ACDC Video.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ([BUILTIN_VIDEO] + dm_choices()[1:], tooltip("An SD1.5 (or fine-tune) checkpoint or diffusers "
                                                                  "folder: AnimateDiff's base model.")),
            "motion_adapter": (motion_adapter_choices(), tooltip("An AnimateDiff motion module for SD1.5 "
                                                                 "(v1-5-2 in diffusers format, or its original "
                                                                 ".safetensors).")),
            "dtype": dtype_input(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model=None, motion_adapter=None):
        if model is None or motion_adapter is None or BUILTIN_VIDEO in (model, motion_adapter):
            return True
        try:
            sd, adapter = video_dm_paths(model, motion_adapter)
            from acdc_core.correct.video import check_animatediff
            check_animatediff(sd, adapter)   # files, headers, no pickle: before anything loads
        except (ACDCError, OSError) as error:
            return str(error)
        return True

    def load(self, model, motion_adapter, dtype):
        from acdc_core.correct.video import load_animatediff

        sd, adapter = video_dm_paths(model, motion_adapter)
        corrector = load_animatediff(sd, adapter, device=bridge.offload_device(), dtype=bridge.dtype_for(dtype))
        return (managed(corrector, f"{model} + {motion_adapter}"),)


# -- memory LLM ---------------------------------------------------------------------------------------------

MODES = ["per-frame", "whole-story", "off"]


def _memory_settings(mode, max_new_tokens, temperature, seed, system_prompt, strict=False):
    from acdc_core.memory import MemorySettings

    settings = MemorySettings(mode=mode, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                              seed=int(seed), strict=bool(strict))
    if system_prompt and system_prompt.strip():
        field = "whole_story_system_prompt" if mode == "whole-story" else "system_prompt"
        settings = replace(settings, **{field: system_prompt})
    return settings.validate()


# Optional, so that it comes after every earlier widget and workflows saved before it keep their values.
STRICT_OPTION = {"strict": ("BOOLEAN", tooltip(
    "Off: where the LLM gives no usable prompt (an empty answer, an unclosed <think>), the frame's story line is "
    "used as is and LLM Memory Prompt's fell_back output says so. On: that is an error naming the frame.",
    default=False))}


def _memory_options() -> dict:
    return {
        "mode": (MODES, tooltip("per-frame: one LLM query per frame from the earlier DM prompts; whole-story: "
                                "one query for the whole story; off: the DM gets the raw story line.")),
        "max_new_tokens": ("INT", tooltip("Longest DM prompt the LLM may write, in tokens.",
                                          default=96, min=1, max=2048)),
        "temperature": ("FLOAT", tooltip("LLM sampling temperature; 0 is greedy (same answer every run).",
                                         default=0.0, min=0.0, max=2.0, step=0.05)),
        "seed": seed_input("LLM sampling seed (used when temperature > 0)."),
        "system_prompt": ("STRING", tooltip("The memory's instructions to the LLM; leave empty for the "
                                            "pack's default prompt for the chosen mode.",
                                            default="", multiline=True)),
    }


def llm_choices() -> list[str]:
    return [BUILTIN] + bridge.list_model_folders(bridge.LLM_FOLDER, "config.json")


class LoadMemoryLLM:
    DESCRIPTION = ("The memory module: a local instruct LLM (a folder in models/LLM, e.g. Qwen2.5-1.5B-Instruct) "
                   "rewrites each story line into a self-contained prompt for the diffusion model "
                   "(\"He jumps\" -> \"Benny, the golden retriever, jumps ...\").")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MEMORY,)
    RETURN_NAMES = ("memory",)
    OUTPUT_TOOLTIPS = ("The memory module for LLM Memory Prompt (and the all-in-one story node).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "llm": (llm_choices(), tooltip("A local chat/instruct model folder in models/LLM (safetensors).")),
            **_memory_options(),
            "dtype": dtype_input(),
            "trust_remote_code": ("BOOLEAN", tooltip("Let the model folder run its own Python code.", default=False)),
        }, "optional": STRICT_OPTION}

    @classmethod
    def VALIDATE_INPUTS(cls, llm=None, mode=None, trust_remote_code=False, temperature=None):
        if mode is not None and mode not in MODES:
            return f"mode must be one of {', '.join(MODES)}; got {mode!r}."
        problem = check_float_widgets(cls, temperature=temperature)
        if problem:
            return problem
        if llm is None or mode is None or llm == BUILTIN or mode == "off":
            return True
        path = bridge.find_model(bridge.LLM_FOLDER, llm)
        if path is None:
            return _not_found("LLM folder", llm, bridge.LLM_FOLDER)
        from acdc_core.memory import check_local_llm_folder
        try:
            check_local_llm_folder(path, trust_remote_code=bool(trust_remote_code))
        except (ACDCError, OSError) as error:
            return str(error)
        return True

    def load(self, llm, mode, max_new_tokens, temperature, seed, system_prompt, dtype, trust_remote_code,
             strict=False):
        from acdc_core.memory import MemoryModule, load_local_llm

        settings = _memory_settings(mode, max_new_tokens, temperature, seed, system_prompt, strict)
        if mode == "off":
            return (ModelHandle(MemoryModule(None, settings), None, "off"),)
        if llm == BUILTIN:
            path = builtin_model_paths()["llm"]
        else:
            path = bridge.find_model(bridge.LLM_FOLDER, llm)
            if path is None:
                raise FileNotFoundError(_not_found("LLM folder", llm, bridge.LLM_FOLDER))
        backend = load_local_llm(path, device=bridge.offload_device(), dtype=bridge.dtype_for(dtype),
                                 trust_remote_code=trust_remote_code)
        return (managed(MemoryModule(backend, settings), llm),)


class MemoryEndpoint:
    DESCRIPTION = ("The memory module over an OpenAI-compatible chat endpoint (OpenAI, Ollama, llama.cpp server, "
                   "vLLM, LM Studio). The API key is never in the workflow: it is read from the environment "
                   "variable ACDC_LLM_API_KEY (or ACDC_LLM_API_KEY_<NAME>) and sent only to a local server or to "
                   "the hosts listed in <that variable>_HOSTS (e.g. ACDC_LLM_API_KEY_HOSTS=api.openai.com), over "
                   "https.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MEMORY,)
    RETURN_NAMES = ("memory",)
    OUTPUT_TOOLTIPS = ("The memory module for LLM Memory Prompt (and the all-in-one story node).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base_url": ("STRING", tooltip("The API root, e.g. http://127.0.0.1:11434/v1 (Ollama) or "
                                           "https://api.openai.com/v1. No key in it: the key comes from the "
                                           "environment.", default="http://127.0.0.1:11434/v1")),
            "model": ("STRING", tooltip("The model name at the endpoint.", default="qwen2.5:3b")),
            "api_key_env": ("STRING", tooltip(
                "Name of the environment variable holding the API key (not the key): ACDC_LLM_API_KEY or "
                "ACDC_LLM_API_KEY_<NAME>. The key is sent only to a local server or a host listed in "
                "<name>_HOSTS in ComfyUI's environment; unset, no key is sent (a local Ollama needs none).",
                default="ACDC_LLM_API_KEY")),
            **_memory_options(),
        }, "optional": STRICT_OPTION}

    @classmethod
    def VALIDATE_INPUTS(cls, base_url=None, model=None, api_key_env=None, temperature=None):
        problem = check_float_widgets(cls, temperature=temperature)
        if problem:
            return problem
        if None in (base_url, model, api_key_env):
            return True  # linked: checked when it runs
        from acdc_core.memory import OpenAICompatibleLLM
        try:
            # checks the values and the key rule, no network; key_hosts stay unset: ComfyUI's environment
            # decides where a key may go, never the workflow
            OpenAICompatibleLLM(base_url, model, api_key_env=api_key_env)
        except ACDCError as error:
            return str(error)
        return True

    def load(self, base_url, model, api_key_env, mode, max_new_tokens, temperature, seed, system_prompt,
             strict=False):
        from acdc_core.memory import MemoryModule, OpenAICompatibleLLM
        from acdc_core.memory import scrub_url

        settings = _memory_settings(mode, max_new_tokens, temperature, seed, system_prompt, strict)
        backend = None if mode == "off" else OpenAICompatibleLLM(base_url, model, api_key_env=api_key_env)
        return (ModelHandle(MemoryModule(backend, settings), None, f"{model} at {scrub_url(base_url)}"),)


# -- ComfyUI's own models ----------------------------------------------------------------------------------

class ComfyModelCorrector:
    DESCRIPTION = ("Uses ComfyUI's own model as the ACDC corrector: the MODEL, CLIP and VAE of Load Checkpoint (with "
                   "LoRAs or any patches; SD1.5, SDXL, SD3.5, Flux, ... whatever ComfyUI loads). SDEdit Correct and "
                   "Inpaint Physical Fix then sample with ComfyUI's KSampler from t' (the same steps as the pack's own "
                   "corrector runs), with the sampler named on them (ddim by default) on this node's schedule: ddim "
                   "on simple is the paper's DDIM on the very timesteps the pack's own corrector uses.")
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "make"
    RETURN_TYPES = (DM,)
    RETURN_NAMES = ("dm",)
    OUTPUT_TOOLTIPS = ("The corrector, for SDEdit Correct, Inpaint Physical Fix, LLM Memory Prompt and ACDC Story.",)

    @classmethod
    def INPUT_TYPES(cls):
        schedulers = bridge.HOST.scheduler_names()
        return {"required": {
            "model": ("MODEL", tooltip("The diffusion model (from Load Checkpoint, after any LoRA).")),
            "clip": ("CLIP", tooltip("Its text encoder (from Load Checkpoint, after any LoRA).")),
            "vae": ("VAE", tooltip("Its VAE (from Load Checkpoint or Load VAE).")),
            "scheduler": (schedulers, tooltip("ComfyUI's noise schedule for the correction. simple (the default) "
                                              "gives the timesteps the pack's own corrector runs (trailing "
                                              "spacing); ddim_uniform is ComfyUI's leading DDIM spacing.",
                                              default=DEFAULT_SCHEDULER
                                              if DEFAULT_SCHEDULER in schedulers else schedulers[0])),
        }}

    def make(self, model, clip, vae, scheduler):
        return (ModelHandle(ComfyCorrector(model, clip, vae, scheduler=scheduler), None,
                            f"ComfyUI {type(model).__name__}"),)


NODES = {
    "ACDC_LoadARM": (LoadARM, "Load ARM (ACDC)"),
    "ACDC_LoadDiffusionModel": (LoadDiffusionModel, "Load Diffusion Model (ACDC)"),
    "ACDC_LoadMemoryLLM": (LoadMemoryLLM, "Load Memory LLM (ACDC)"),
    "ACDC_MemoryEndpoint": (MemoryEndpoint, "Memory LLM Endpoint (ACDC)"),
    "ACDC_ComfyModelCorrector": (ComfyModelCorrector, "ComfyUI Model as Corrector (ACDC)"),
    "ACDC_LoadVideoDM": (LoadVideoDM, "Load Video Diffusion Model (AnimateDiff, ACDC)"),
}
