"""Video window correction (the paper's video variant): SDEdit over a window of frames with a text-to-video
diffusion model, AnimateDiff = Stable Diffusion 1.5 + a motion adapter (arXiv 2410.04721; AnimateDiff: 2307.04725).
The same loop runs a pixel-space model of SD1.x's shape with a motion adapter (no VAE, as the toy video world's DM,
``acdc_core.toy.train_video_dm``): its "latents" are the pixels (``sdedit.PixelSpace``), C = 3, h, w = H, W.

The protocol
------------
``VideoCorrector`` is what a video loop needs from such a model, as ``base.Corrector`` is for images. A window
crosses it as ONE float tensor ``[F, 3, H, W]`` in [0, 1] (F frames of one video, channels first) with one prompt,
and comes back with the same shape. ``native_frames`` is the window length the motion module was trained on (16 for
every AnimateDiff release), ``max_frames`` the longest window it takes (the length of its position table,
``motion_max_seq_length``: 32 for v2/v3, 24 for v1).

How a window is corrected (``AnimateDiffCorrector``)
----------------------------------------------------
The image corrector's SDEdit, over video latents; every rule is the image corrector's own, imported, not copied:
1. The schedule: ``sdedit.sdedit_sampler`` — DDIM (eta = 0) by default, trailing spacing, exactly the scheduled
   timesteps at or below t' (``schedule.kept``): t' = 0.5 of 50 steps runs 25 UNet calls, from t = 499.
2. Encode: the frames go through the VAE ``decode_chunk_size`` frames at a time (memory stays bounded by the chunk,
   not the window); each frame's latent is a posterior sample -> clean latents ``[F, 4, H/8, W/8]`` (a pixel-space
   model: the pixels themselves, ``[F, 3, H, W]`` in [-1, 1]).
3. Noise ``[F, 4, H/8, W/8]`` forward to the first kept timestep. The VAE's samples and then the noise are drawn
   from ONE ``torch.Generator`` seeded with ``seed`` on the CPU, as the image corrector does: the same seed gives the
   same window, CPU and GPU agree up to floating-point differences.
4. Layout: ``[F, C, h, w] -> [1, C, F, h, w]``, the layout diffusers' ``UNetMotionModel`` takes (batch, channels,
   frames, height, width). With guidance the UNet sees ``[2, C, F, h, w]`` = [unconditional; conditional] in one
   call per step, and the text embeddings ``[2F, 77, D]`` (each row repeated for every frame: the UNet folds the
   frames into the batch for its spatial layers, and its motion modules attend along F).
5. Denoise with the image corrector's loop (``DiffusionCorrector._denoise``); ``progress("correct", step, total)``
   is called after every step and may raise to cancel.
6. Decode ``decode_chunk_size`` frames at a time, back to [0, 1].

Memory (SD1.5 + AnimateDiff v2, float32, CPU, ``benchmarks/bench_video_sdedit.py --real --estimate``): the weights
take 5.3 GB (10.2 GB for a moment while loading: the UNet, the adapter and the motion UNet); correcting a 16-frame
512x512 window peaks 6.4 GB above that (11.7 GB). The VAE decoder needs about 0.5 GB + 0.6 GB per frame of a chunk
at 512 px, so ``decode_chunk_size`` (default 8; diffusers' pipelines use 16) bounds it whatever the window length.

With the same components, sampler and ``decode_chunk_size``, this equals diffusers'
``AnimateDiffVideoToVideoPipeline`` bit for bit wherever the pipeline's ``int(steps * strength)`` equals our count
of steps at or below t' (``tests/test_video_corrector.py``).

Window length policy
--------------------
A window longer than ``max_frames`` is refused with an error saying what to give instead: the motion module has no
positions past its table. A window longer than ``native_frames`` but within the table is corrected, with a logged
warning: AnimateDiff was trained on 16-frame clips, and motion quality drops past them. Longer videos are split into
windows by the caller (the paper corrects the first 16 of 32 frames, then generation resumes). diffusers 0.42 has
FreeNoise context windows (``AnimateDiffFreeNoiseMixin.enable_free_noise``), but as a mixin of its pipelines, not of
``UNetMotionModel``: it swaps the motion modules' transformer blocks for ``FreeNoiseTransformerBlock`` in place.
Using it here would mean swapping those blocks on our own UNet (about 20 lines) — not done.

Noise schedule
--------------
AnimateDiff's motion modules were trained with diffusers' ``linear`` betas (0.00085 -> 0.012; ComfyUI-AnimateDiff-
Evolved calls it "sqrt_linear (AnimateDiff)"), not SD1.5's ``scaled_linear``: ``load_animatediff`` replaces the
base model's ``beta_schedule`` with it unless told otherwise. The same t' then means more noise than for SD1.5
images: the signal left, sqrt(alpha_bar), is 0.40 at t' = 0.5 rather than 0.53 (0.54 at t' = 0.4, 0.28 at 0.6).

Loading
-------
``load_animatediff(sd_path, motion_adapter_path)``: ``sd_path`` is anything ``loading.load_diffusers_corrector``
loads as SD1.x (a diffusers folder or a single-file checkpoint) or as an SD1.x-shaped pixel-space model (a diffusers
folder whose model_index.json lists no vae); SDXL is refused. ``motion_adapter_path`` a diffusers ``MotionAdapter``
folder (config.json + diffusion_pytorch_model.safetensors) or ONE original-layout motion module ``.safetensors``
(e.g. ``mm_sd_v15_v2.safetensors`` from ComfyUI's ``models/animatediff_models/``). A single file carries no config:
block channels, layers, mid block and position-table length are read from its tensor shapes; the attention heads
and norm groups cannot be (they change no shape) and default to those of every published SD1.5 motion module
(8 and 32). Pickle (``.ckpt``) files are refused. Everything that needs no tensor data is checked first.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import torch

from ..errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError, check_seed
from ..progress import ProgressFn, no_progress
from ..weights import (check_safetensors, check_state_matches, is_pickle, on_meta, pickle_files, read_config,
                       weight_shapes, weights_name)
from .base import check_request
from .loading import CONFIGS, check_diffusers_model, load_diffusers_corrector
from .sdedit import SCHEDULERS, DiffusionCorrector, sdedit_sampler

logger = logging.getLogger("acdc_core.correct.video")

NATIVE_FRAMES = 16            # AnimateDiff's training clips (every SD1.5 release)
DECODE_CHUNK_SIZE = 8         # frames per VAE encode/decode call (diffusers' pipelines default to 16)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_WEIGHTS = "diffusion_pytorch_model"
# The MotionAdapter config of AnimateDiff v2 for SD1.5 (mm_sd_v15_v2 / guoyww/animatediff-motion-adapter-v1-5-2), as data.
V1_5_2_CONFIG = CONFIGS / "animatediff_v1_5_2" / "config.json"


@runtime_checkable
class VideoCorrector(Protocol):
    """A text-to-video diffusion model that SDEdits one window of frames at a time."""

    kind: str                          # which kind of video corrector ("animatediff")
    schedulers: tuple[str, ...]        # the samplers ``correct_video`` takes; the first is the default
    native_size: tuple[int, int]       # (H, W) the image model was trained at
    native_frames: int                 # the window length the motion model was trained on (AnimateDiff: 16)
    max_frames: int                    # the longest window it takes (longer ones are refused)
    image_multiple: int                # frame sides must be multiples of this
    text_window: int                   # tokens the text encoder reads (prompts longer than that are cut)

    def fit_prompt(self, prompt: str) -> str:
        """``prompt`` cut at a word so that it fits ``text_window``; unchanged if it fits."""
        ...

    def correct_video(self, frames: torch.Tensor, prompt: str, *, strength: float, steps: int = 50,
                      guidance_scale: float = 7.5, seed: int = 0, negative_prompt: str = "",
                      scheduler: Optional[str] = None, progress: ProgressFn = no_progress) -> torch.Tensor:
        """SDEdit the window ``frames`` [F, 3, H, W] in [0, 1] at t' = ``strength`` of a ``steps``-step schedule (the
        steps at or below t' run); returns [F, 3, H, W] in [0, 1]."""
        ...

    def to(self, device: torch.device | str) -> "VideoCorrector":
        """Move the weights (the loop offloads the corrector while another stage runs)."""
        ...

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every torch module holding weights, by name, for a host's memory manager."""
        ...


def frames_to_video(latents: torch.Tensor) -> torch.Tensor:
    """Per-frame latents [F, C, h, w] -> one video's latents [1, C, F, h, w] (``UNetMotionModel``'s layout)."""
    return latents.unsqueeze(0).permute(0, 2, 1, 3, 4)


def video_to_frames(latents: torch.Tensor) -> torch.Tensor:
    """One video's latents [1, C, F, h, w] -> per-frame latents [F, C, h, w]."""
    return latents[0].permute(1, 0, 2, 3)


class AnimateDiffCorrector:
    """SDEdit of a video window with AnimateDiff: an SD1.x-shaped UNet with motion modules (diffusers'
    ``UNetMotionModel``), its VAE (or ``PixelSpace`` for a pixel-space model) and CLIP text encoder. Meets
    ``VideoCorrector``; kind "animatediff".

    The text conditioning, VAE and denoising loop are the image corrector's (a ``DiffusionCorrector`` over the
    motion UNet, kept private: its image ``correct`` is never called). Keeps no state between calls. Build it with
    ``load_animatediff``.
    """

    kind = "animatediff"
    schedulers: tuple[str, ...] = tuple(SCHEDULERS)

    def __init__(self, *, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer: Any,
                 scheduler_config: Mapping[str, Any], native_frames: int = NATIVE_FRAMES,
                 decode_chunk_size: int = DECODE_CHUNK_SIZE) -> None:
        if "motion_max_seq_length" not in unet.config:
            raise InvalidInputError(
                f"AnimateDiffCorrector needs a UNet with motion modules (diffusers' UNetMotionModel, e.g. "
                f"UNetMotionModel.from_unet2d(unet, motion_adapter)); got a {type(unet).__name__}.")
        for value, name in ((native_frames, "native_frames"), (decode_chunk_size, "decode_chunk_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}.")
        self._sd = DiffusionCorrector(unet=unet, vae=vae, text_encoders=[text_encoder], tokenizers=[tokenizer],
                                      scheduler_config=scheduler_config)
        if self._sd.architecture not in ("sd", "pixel"):
            raise UnknownModelFamilyError(
                f"AnimateDiff correction runs SD1.x-shaped models (latent, or pixel-space without a VAE); this one is "
                f"{self._sd.architecture!r}.")
        self.native_frames = native_frames
        self.decode_chunk_size = decode_chunk_size

    # -- what the video loop asks about the model -----------------------------------------------------------

    @property
    def unet(self) -> torch.nn.Module:
        return self._sd.unet

    @property
    def vae(self) -> torch.nn.Module:
        return self._sd.vae

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self._sd.text_encoders[0]

    @property
    def tokenizer(self) -> Any:
        return self._sd.tokenizers[0]

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self._sd.scheduler_config)

    @property
    def device(self) -> torch.device:
        return self._sd.device

    @property
    def max_frames(self) -> int:
        """The longest window: the motion modules' position table (``motion_max_seq_length``)."""
        return int(self.unet.config.motion_max_seq_length)

    @property
    def native_size(self) -> tuple[int, int]:
        return self._sd.native_size

    @property
    def image_multiple(self) -> int:
        return self._sd.image_multiple

    @property
    def text_window(self) -> int:
        return self._sd.text_window

    def fit_prompt(self, prompt: str) -> str:
        return self._sd.fit_prompt(prompt)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The motion UNet, the VAE and the text encoder."""
        return self._sd.modules()

    def to(self, device: torch.device | str) -> "AnimateDiffCorrector":
        self._sd.to(device)
        return self

    # -- the correction -------------------------------------------------------------------------------------

    def correct_video(self, frames: torch.Tensor, prompt: str, *, strength: float, steps: int = 50,
                      guidance_scale: float = 7.5, seed: int = 0, negative_prompt: str = "",
                      scheduler: Optional[str] = None, progress: ProgressFn = no_progress) -> torch.Tensor:
        """SDEdit the window ``frames`` [F, 3, H, W] in [0, 1] at t' = ``strength`` in (0, 1]; returns
        [F, 3, H, W] in [0, 1], a new tensor on the caller's device in the caller's dtype.

        ``prompt`` conditions the whole window (longer prompts are truncated to ``text_window`` tokens;
        ``fit_prompt`` cuts on a word instead). Runs the steps at or below t' (module docstring) with ``scheduler``
        (one of ``SCHEDULERS``; default DDIM, eta = 0), classifier-free guidance ``guidance_scale`` (<= 1 turns it
        off). The same ``seed`` gives the same window. F may be at most ``max_frames``; frame sides must be
        multiples of ``image_multiple`` (resize with ``acdc_core.images.resize_to``). Every check runs before any
        model does.
        """
        frames, scheduler = self.check_request(frames, prompt, strength=strength, steps=steps,
                                               guidance_scale=guidance_scale, seed=seed,
                                               negative_prompt=negative_prompt, scheduler=scheduler)
        with torch.inference_mode():
            corrected = self._sdedit(frames, prompt, strength, steps, guidance_scale, seed, negative_prompt,
                                     scheduler, progress)
        # A plain tensor (not an inference-mode one), on the caller's device and in the caller's dtype.
        return corrected.to(frames.device, frames.dtype).clone()

    def check_request(self, frames: Any, prompt: Any, *, strength: float, steps: int, guidance_scale: float,
                      seed: int = 0, negative_prompt: Any = "", scheduler: Optional[str] = None
                      ) -> tuple[torch.Tensor, str]:
        """Every check of a window correction, before any model runs. Returns (frames, the sampler's name)."""
        for value, name in ((prompt, "prompt"), (negative_prompt, "negative_prompt")):
            if not isinstance(value, str):
                raise InvalidInputError(f"{name} must be one string for the whole window; got {type(value).__name__}.")
        frames, _, scheduler = check_request(
            frames, prompt, strength, steps, guidance_scale, 0, 0, image_multiple=self.image_multiple,
            schedulers=self.schedulers, scheduler=scheduler,
            train_steps=self._sd.scheduler_config.get("num_train_timesteps", 1000), name="frames", count="F")
        check_seed(seed)
        if not bool(torch.isfinite(frames).all()) or float(frames.min()) < 0 or float(frames.max()) > 1:
            raise InvalidInputError(
                f"frames must hold values in [0, 1]; got values in [{float(frames.min()):.4g}, "
                f"{float(frames.max()):.4g}]{' and NaN/inf' if not bool(torch.isfinite(frames).all()) else ''}. "
                "Give RGB in [0, 1] (from [-1, 1]: x / 2 + 0.5; clamp(0, 1) after resizing).")
        count = len(frames)
        if count > self.max_frames:
            raise InvalidInputError(
                f"the window has {count} frames but this motion module takes at most {self.max_frames} (its "
                f"position table, motion_max_seq_length); correct the video in windows of {self.native_frames} "
                f"frames, the length it was trained on (at most {self.max_frames}).")
        if count > self.native_frames:
            logger.warning("correcting a %d-frame window; the motion module was trained on %d frames, so motion may "
                           "degrade (windows of %d are safest).", count, self.native_frames, self.native_frames)
        return frames, scheduler

    def _sdedit(self, frames: torch.Tensor, prompt: str, strength: float, steps: int, guidance_scale: float,
                seed: int, negative_prompt: str, scheduler_name: str, progress: ProgressFn) -> torch.Tensor:
        sd = self._sd
        # 1. The schedule: the image corrector's sampler and t' rule.
        generator = torch.Generator("cpu").manual_seed(seed)
        scheduler, timesteps, step_options = sdedit_sampler(sd.scheduler_config, scheduler_name, steps, strength,
                                                            generator)

        # 2-3. Clean latents frame by frame (chunks of decode_chunk_size), then forward diffusion to the first kept
        #      timestep. Latents [F, 4, h, w]; noise drawn after the VAE's samples, from the same generator.
        pixels = frames.to(self.device, torch.float32) * 2 - 1  # [0, 1] -> [-1, 1], the VAE's range
        # Contiguous: the VAE's convolutions may return channels-last latents, which the UNet would then read with
        # other convolution kernels (other float rounding than diffusers' pipeline, which concatenates them).
        clean = torch.cat([sd._encode(chunk, generator) for chunk in pixels.split(self.decode_chunk_size)]).contiguous()
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(self.device, clean.dtype)
        latents = frames_to_video(scheduler.add_noise(clean, noise, timesteps[:1].repeat(len(clean))))

        # 4-5. One prompt for the window, its rows repeated per frame ([uncond x F; cond x F]); denoise [B, C, F, h, w].
        embeds, _ = sd._conditioning([prompt], negative_prompt, guidance_scale > 1, tuple(frames.shape[-2:]))
        embeds = embeds.repeat_interleave(len(frames), dim=0)
        latents = sd._denoise(latents, timesteps, scheduler, embeds, None, guidance_scale, clean=clean, noise=noise,
                              cells=None, inpaint_inputs=None, step_options=step_options, progress=progress,
                              stage="correct")

        # 6. Decode back to [0, 1], chunk by chunk.
        return torch.cat([sd._decode(chunk) for chunk in video_to_frames(latents).split(self.decode_chunk_size)])


# -- motion adapters --------------------------------------------------------------------------------------------

def _per_block(value: Any, blocks: int) -> list[int]:
    return [int(value)] * blocks if isinstance(value, int) else [int(v) for v in value]


def _uniform(values: Sequence[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else list(values)


def motion_adapter_config(shapes: Mapping[str, Sequence[int]], *, motion_num_attention_heads: int = 8,
                          motion_norm_num_groups: int = 32) -> dict[str, Any]:
    """The ``MotionAdapter`` config of a single-file motion module, from its tensor names and shapes alone
    (original AnimateDiff layout, or diffusers' names): block channels, motion layers per block, transformer layers,
    mid block and the position-table length. Heads and norm groups change no shape: they are given."""
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    names = convert_animatediff_checkpoint_to_diffusers(dict(shapes))  # diffusers' names -> shapes (pe dropped)

    def modules(block: str) -> dict[int, set[int]]:
        """Motion module index -> its transformer block indices, in one UNet block."""
        found: dict[int, set[int]] = {}
        for name in names:
            match = re.match(rf"{re.escape(block)}\.motion_modules\.(\d+)\.(?:transformer_blocks\.(\d+)\.)?", name)
            if match:
                found.setdefault(int(match[1]), set()).update([int(match[2])] if match[2] else [])
        return found

    down = sorted({int(m[1]) for name in names if (m := re.match(r"down_blocks\.(\d+)\.motion_modules\.", name))})
    norms = [f"down_blocks.{i}.motion_modules.0.norm.weight" for i in down]
    if not down or down != list(range(len(down))) or not all(norm in names for norm in norms):
        first = next(iter(shapes), "(no tensors)")
        raise UnknownModelFamilyError(
            f"this is not an AnimateDiff motion module: it has no down_blocks.N.motion_modules.* tensors in the "
            f"original (temporal_transformer) or diffusers layout (first tensor: {first}). Give a motion module such "
            f"as mm_sd_v15_v2.safetensors, or a diffusers MotionAdapter folder.")
    blocks = [modules(f"down_blocks.{i}") for i in down]
    mid = modules("mid_block")
    tables = [tuple(shape) for name, shape in shapes.items() if name.endswith((".pos_encoder.pe", ".pos_embed.pe"))]
    if tables:
        length = int(tables[0][-2])
    else:
        length = 32
        logger.warning("the motion module holds no position table (pos_encoder.pe); assuming 32 positions.")
    config: dict[str, Any] = {
        "block_out_channels": [int(names[norm][0]) for norm in norms],
        "motion_layers_per_block": _uniform([len(block) for block in blocks]),
        "motion_transformer_layers_per_block": _uniform([len(block.get(0, ())) for block in blocks]),
        "motion_num_attention_heads": motion_num_attention_heads,
        "motion_norm_num_groups": motion_norm_num_groups,
        "motion_max_seq_length": length,
        "use_motion_mid_block": bool(mid),
    }
    if mid:
        config["motion_mid_block_layers_per_block"] = len(mid)
        config["motion_transformer_layers_per_mid_block"] = len(mid.get(0, ()))
    if "conv_in.weight" in names:
        config["conv_in_channels"] = int(names["conv_in.weight"][1])
    return config


def _meta_adapter(config: Mapping[str, Any]):
    from diffusers import MotionAdapter

    try:
        return on_meta(lambda: MotionAdapter.from_config(dict(config)))
    except (ValueError, TypeError) as error:   # e.g. norm groups that do not divide the channels
        raise InvalidInputError(f"the motion adapter config {dict(config)} does not build: {error}") from None


def _check_adapter_file(path: Path, heads: int, groups: int) -> dict[str, Any]:
    if is_pickle(path):
        raise InvalidInputError(
            f"{path.name} is a pickle checkpoint ({path.suffix}); loading pickle can run arbitrary code, so this "
            f"engine loads .safetensors only. Use the .safetensors release of the motion module (e.g. "
            f"mm_sd_v15_v2.safetensors), or convert it once, in an environment you trust, with safetensors.")
    if path.suffix.lower() != ".safetensors":
        raise InvalidInputError(f"{path.name}: a motion module must be a .safetensors file or a diffusers "
                                f"MotionAdapter folder.")
    shapes = check_safetensors(path)
    config = motion_adapter_config(shapes, motion_num_attention_heads=heads, motion_norm_num_groups=groups)
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    model = _meta_adapter(config)
    # The position tables are rebuilt by the model (the same sinusoids); every other tensor must fit it.
    tables = {name: tuple(t.shape) for name, t in model.state_dict().items() if name.endswith("pos_embed.pe")}
    check_state_matches(model, {**tables, **convert_animatediff_checkpoint_to_diffusers(dict(shapes))},
                        f"the tensors of {path.name} (config read from their shapes: {config})")
    return config


def _check_adapter_folder(folder: Path) -> dict[str, Any]:
    if not (folder / "config.json").is_file():
        raise MissingModelFilesError(
            f"the motion adapter folder {folder} is missing config.json (a diffusers MotionAdapter folder holds "
            f"config.json and {_WEIGHTS}.safetensors).")
    if not (folder / f"{_WEIGHTS}.safetensors").is_file() and not (folder / f"{_WEIGHTS}.safetensors.index.json").is_file():
        pickled = pickle_files(folder, f"{_WEIGHTS}*")
        if pickled:
            raise InvalidInputError(
                f"the motion adapter folder {folder} holds {', '.join(pickled)}: pickle files are not loaded (loading "
                f"them can run code); convert to {_WEIGHTS}.safetensors.")
    shapes = weight_shapes(folder, _WEIGHTS)   # missing, truncated or renamed files are named here
    config = read_config(folder / "config.json")
    if config.get("_class_name", "MotionAdapter") != "MotionAdapter":
        raise UnknownModelFamilyError(f"{folder / 'config.json'} describes a {config['_class_name']}, not a "
                                      f"MotionAdapter.")
    check_state_matches(_meta_adapter(config), shapes, f"the weights in {weights_name(folder, _WEIGHTS)}")
    return {key: value for key, value in config.items() if not key.startswith("_")}


def check_motion_adapter(path: str | Path, *, motion_num_attention_heads: int = 8,
                         motion_norm_num_groups: int = 32) -> dict[str, Any]:
    """Every check of a motion adapter path that reads no tensor data (the path exists, a folder has its files,
    weights are whole safetensors that fit the config, no pickle); returns its ``MotionAdapter`` config."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingModelFilesError(
            f"motion adapter not found: {path}. Give a diffusers MotionAdapter folder (config.json + "
            f"{_WEIGHTS}.safetensors) or an AnimateDiff motion module .safetensors (e.g. mm_sd_v15_v2.safetensors, "
            f"as ComfyUI keeps them in models/animatediff_models/).")
    if path.is_dir():
        return _check_adapter_folder(path)
    return _check_adapter_file(path, motion_num_attention_heads, motion_norm_num_groups)


def load_motion_adapter(path: str | Path, *, dtype: torch.dtype = torch.float32, motion_num_attention_heads: int = 8,
                        motion_norm_num_groups: int = 32):
    """A diffusers ``MotionAdapter`` from a folder or a single original-layout ``.safetensors`` (``check_motion_adapter``
    first). A single file's position tables are rebuilt (diffusers' conversion skips them: the same sinusoids)."""
    from diffusers import MotionAdapter

    path = Path(path).expanduser()
    config = check_motion_adapter(path, motion_num_attention_heads=motion_num_attention_heads,
                                  motion_norm_num_groups=motion_norm_num_groups)
    if path.is_dir():
        return MotionAdapter.from_pretrained(path, torch_dtype=dtype, use_safetensors=True,
                                             local_files_only=True).eval()
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
    from safetensors.torch import load_file

    with _no_init():  # every weight is loaded next; the position tables are computed, not initialised
        adapter = MotionAdapter.from_config(config)
    missing, unexpected = adapter.load_state_dict(convert_animatediff_checkpoint_to_diffusers(load_file(path)),
                                                  strict=False)
    assert not unexpected and all(name.endswith("pos_embed.pe") for name in missing)  # check_motion_adapter saw to it
    with _no_fp32_warning():
        return adapter.to(dtype).eval()


@contextmanager
def _no_fp32_warning() -> Iterator[None]:
    """Without diffusers' "There are modules in ... that should be kept in float32: []" warning, which 0.42's
    ``ModelMixin.to`` logs on every cast to a dtype even when there is no such module (its list is empty)."""
    from diffusers.utils import logging as diffusers_logging

    log = diffusers_logging.get_logger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _no_init():
    """diffusers' switch that skips random initialisation of modules whose every weight is loaded right after (the
    motion UNet: half a minute of a CPU's time at SD1.5 size)."""
    try:
        from diffusers.models.modeling_utils import no_init_weights
    except ImportError:   # pragma: no cover - older or newer diffusers
        from contextlib import nullcontext as no_init_weights
    return no_init_weights()


def check_adapter_fits(adapter_config: Mapping[str, Any], unet_config: Mapping[str, Any], *, adapter: str = "the "
                       "motion adapter", unet: str = "the UNet") -> None:
    """Raise a clear error naming both when a motion adapter's blocks do not match the UNet's (number of blocks,
    their channels, the layers per block), or when the adapter needs inputs this corrector does not give (PIA)."""
    adapter_channels = [int(c) for c in adapter_config["block_out_channels"]]
    unet_channels = [int(c) for c in unet_config["block_out_channels"]]
    adapter_layers = _per_block(adapter_config.get("motion_layers_per_block", 2), len(adapter_channels))
    unet_layers = _per_block(unet_config.get("layers_per_block", 2), len(unet_channels))
    if adapter_channels != unet_channels or adapter_layers != unet_layers:
        raise InvalidInputError(
            f"{adapter} does not fit {unet}: the adapter is made for {len(adapter_channels)} UNet blocks with "
            f"channels {tuple(adapter_channels)} and {tuple(adapter_layers)} layers, the UNet has "
            f"{len(unet_channels)} blocks with channels {tuple(unet_channels)} and {tuple(unet_layers)} layers "
            f"(cross-attention width {unet_config.get('cross_attention_dim')}). SD1.5 motion modules (mm_sd_v15*, "
            f"channels (320, 640, 1280, 1280)) fit SD1.x checkpoints; SDXL (channels (320, 640, 1280), cross-attention "
            f"2048) needs an SDXL motion module, which this corrector does not run. Use a matching pair.")
    if adapter_config.get("conv_in_channels"):
        raise UnknownModelFamilyError(
            f"{adapter} has its own input convolution ({adapter_config['conv_in_channels']} channels: a PIA "
            f"image-animation adapter); video correction takes plain AnimateDiff motion modules.")


def check_animatediff(sd_path: str | Path, motion_adapter_path: str | Path, *, motion_num_attention_heads: int = 8,
                      motion_norm_num_groups: int = 32) -> dict[str, Any]:
    """Every check of the two paths that needs nothing loaded; returns the motion adapter's config."""
    config = check_motion_adapter(motion_adapter_path, motion_num_attention_heads=motion_num_attention_heads,
                                  motion_norm_num_groups=motion_norm_num_groups)
    check_diffusers_model(sd_path)
    return config


def load_animatediff(sd_path: str | Path, motion_adapter_path: str | Path, *, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32, beta_schedule: Optional[str] = "linear",
                     native_frames: int = NATIVE_FRAMES, decode_chunk_size: int = DECODE_CHUNK_SIZE,
                     motion_num_attention_heads: int = 8, motion_norm_num_groups: int = 32,
                     config_dir: Optional[str | Path] = None) -> AnimateDiffCorrector:
    """Load AnimateDiff as an ``AnimateDiffCorrector``: SD1.x from ``sd_path`` (a diffusers folder or a single-file
    checkpoint, see ``loading.load_diffusers_corrector``; ``config_dir`` as there; or a pixel-space folder without a
    vae) and the motion adapter at
    ``motion_adapter_path`` (module docstring), combined with ``UNetMotionModel.from_unet2d``, fully offline.

    ``beta_schedule`` replaces the base model's (AnimateDiff was trained with "linear"; None keeps the base model's).
    ``motion_num_attention_heads`` / ``motion_norm_num_groups`` are for single-file motion modules only (a folder's
    config.json says them). The adapter's files, headers and fit to the UNet are checked before its weights load.
    """
    from diffusers import UNetMotionModel

    if beta_schedule is not None and beta_schedule not in BETA_SCHEDULES:
        raise InvalidInputError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)} or None (the base "
                                f"model's); got {beta_schedule!r}.")
    adapter_config = check_animatediff(sd_path, motion_adapter_path,
                                       motion_num_attention_heads=motion_num_attention_heads,
                                       motion_norm_num_groups=motion_norm_num_groups)
    base = load_diffusers_corrector(sd_path, device="cpu", dtype=dtype, config_dir=config_dir)
    check_adapter_fits(adapter_config, base.unet.config, adapter=f"the motion adapter {Path(motion_adapter_path).name}",
                       unet=f"the UNet of {Path(sd_path).name}")
    if base.architecture not in ("sd", "pixel"):
        raise UnknownModelFamilyError(
            f"{Path(sd_path).name} is an {base.architecture!r} model; AnimateDiff video correction runs SD1.x-shaped "
            f"latent models (SD1.5 and its fine-tunes) and pixel-space models of that shape (no VAE).")
    adapter = load_motion_adapter(motion_adapter_path, dtype=dtype, motion_num_attention_heads=motion_num_attention_heads,
                                  motion_norm_num_groups=motion_norm_num_groups)
    with _no_init(), _no_fp32_warning():  # from_unet2d copies every weight from the UNet and the adapter (tested)
        unet = UNetMotionModel.from_unet2d(base.unet, adapter).eval()
    scheduler_config = dict(base.scheduler_config)
    if beta_schedule is not None:
        scheduler_config["beta_schedule"] = beta_schedule
    corrector = AnimateDiffCorrector(unet=unet, vae=base.vae, text_encoder=base.text_encoders[0],
                                     tokenizer=base.tokenizers[0], scheduler_config=scheduler_config,
                                     native_frames=native_frames, decode_chunk_size=decode_chunk_size)
    return corrector.to(device)

