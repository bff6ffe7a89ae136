"""What the ACDC loop needs from a diffusion model that corrects frames (step 4), whatever the model is.

Every corrector kind meets ``Corrector``: this package's own ``DiffusionCorrector`` (Stable Diffusion 1.x/2.x,
SDXL or a pixel-space UNet through diffusers, see ``registry.CORRECTOR_KINDS``) and correctors a host builds
from its own models (the node pack's ComfyUI-model corrector). The rules every kind shares are written here
once: the input checks (``check_request``), the mask checks, how a mask grows and feathers (``grow_mask``) and
how the untouched pixels are put back (``paste_outside``).

Images cross this protocol as float tensors ``[N, 3, H, W]`` in ``[0, 1]`` (channels first).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError, check_number
from ..progress import ProgressFn, no_progress
from .schedule import check_strength


@runtime_checkable
class Corrector(Protocol):
    """A diffusion model that SDEdits frames and repaints masked regions."""

    kind: str                          # which kind of corrector ("diffusers", or a host's own, e.g. "comfyui")
    schedulers: tuple[str, ...]        # the samplers ``correct`` takes; the first is the default
    native_size: tuple[int, int]       # (H, W) the model was trained at
    image_multiple: int                # image sides must be multiples of this
    text_window: int                   # tokens the text encoder reads (prompts longer than that are cut)

    def fit_prompt(self, prompt: str) -> str:
        """``prompt`` cut at a word so that it fits ``text_window``; unchanged if it fits."""
        ...

    def correct(self, images: torch.Tensor, prompts: str | Sequence[str], *, strength: float, steps: int = 50,
                guidance_scale: float = 7.5, seed: int = 0, negative_prompt: str = "",
                scheduler: Optional[str] = None, mask: Optional[torch.Tensor] = None, mask_dilate: int = 8,
                mask_feather: int = 8, progress: ProgressFn = no_progress) -> torch.Tensor:
        """SDEdit ``images`` at t' = ``strength`` out of a ``steps``-step schedule (the steps at or below t' run,
        see ``schedule``); with ``mask`` only the masked region changes. Returns ``[N, 3, H, W]`` in [0, 1]."""
        ...

    def to(self, device: torch.device | str) -> "Corrector":
        """Move the weights (the story loop offloads the corrector while another stage runs)."""
        ...

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every torch module holding weights, by name, for a host's memory manager (empty: the host manages them)."""
        ...


def check_request(images: Any, prompts: Any, strength: float, steps: int, guidance_scale: float,
                  mask_dilate: int, mask_feather: int, *, image_multiple: int, schedulers: Sequence[str],
                  scheduler: Optional[str], train_steps: int = 1000, name: str = "images",
                  count: str = "N") -> tuple[torch.Tensor, list[str], str]:
    """Every check of a correction request, before any model runs. Returns (images, one prompt per image, scheduler).

    ``name`` and ``count`` word the messages: the video corrector checks its window as "frames" [F, 3, H, W]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or not images.is_floating_point() or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInputError(f"{name} must be a float tensor [{count}, 3, H, W] in [0, 1]; got {got}.")
    height, width = images.shape[-2:]
    if height % image_multiple or width % image_multiple:
        raise InvalidInputError(
            f"{name} are {height}x{width} (HxW) but the diffusion model needs sides that are multiples of "
            f"{image_multiple}; resize to e.g. {height // image_multiple * image_multiple}x"
            f"{width // image_multiple * image_multiple} (acdc_core.images.resize_to).")
    if isinstance(prompts, str):
        prompts = [prompts] * len(images)
    prompts = list(prompts)
    if len(prompts) != len(images) or not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(f"give one prompt or a list of {len(images)} prompts (one per image); "
                                f"got {len(prompts)} item(s).")
    check_strength(strength, steps, "strength (t')", train_steps)
    check_number(guidance_scale, "guidance_scale", minimum=0, hint=" <= 1 turns guidance off.")
    if mask_dilate < 0 or mask_feather < 0:
        raise InvalidInputError(f"mask_dilate and mask_feather must be >= 0 pixels; got {mask_dilate} "
                                f"and {mask_feather}.")
    return images, prompts, check_scheduler(scheduler, schedulers)


def check_scheduler(scheduler: Optional[str], schedulers: Sequence[str]) -> str:
    """The sampler to use (None: the corrector's default, the first of ``schedulers``), or a clear error."""
    scheduler = schedulers[0] if scheduler is None else scheduler
    if scheduler not in schedulers:
        raise InvalidInputError(f"scheduler {scheduler!r} is not one this diffusion model samples with; use one of "
                                f"{', '.join(schedulers)}.")
    return scheduler


def check_mask(mask: Any, images: torch.Tensor) -> torch.Tensor:
    """The mask as [N, 1, H, W] float on the images' device, or a clear error naming both shapes."""
    if not isinstance(mask, torch.Tensor):
        raise InvalidInputError(f"mask must be a tensor [N, 1, H, W] or [N, H, W]; got {type(mask).__name__}.")
    shaped = mask.unsqueeze(1) if mask.ndim == 3 else mask  # [N, H, W] -> [N, 1, H, W]
    n, _, height, width = images.shape
    if shaped.ndim != 4 or tuple(shaped.shape) != (n, 1, height, width):
        raise InvalidInputError(
            f"mask has shape {tuple(mask.shape)} but the images have shape {tuple(images.shape)}; the mask "
            f"must be [{n}, 1, {height}, {width}] or [{n}, {height}, {width}] (1 = repaint).")
    return shaped.to(images.device, torch.float32)


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a [N, 1, H, W] mask by ``pixels`` in every direction (a square, i.e. Chebyshev-distance, grow)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def grow_mask(mask: torch.Tensor, dilate: int, feather: int) -> torch.Tensor:
    """Blend weights [N, 1, H, W] from a user mask: 1 on the mask grown by ``dilate`` px, then a linear ramp
    down over ``feather`` more px. EXACTLY 0 farther than ``dilate + feather`` px from the mask."""
    grown = _dilate(mask, dilate)
    # Average the grown mask with its 1..feather px grown copies: at distance j (1..feather) outside it,
    # feather - j + 1 of the feather + 1 terms are 1, a linear ramp that reaches 0 at distance feather + 1.
    total, ring = grown.clone(), grown
    for _ in range(feather):
        ring = _dilate(ring, 1)
        total = total + ring
    return total / (feather + 1)


def latent_mask(blend: torch.Tensor, latent_scale: int) -> torch.Tensor:
    """The blend weights at latent size: a latent cell may change if any of its pixels may (max-pool)."""
    return F.max_pool2d(blend, latent_scale) if latent_scale > 1 else blend


def paste_outside(original: torch.Tensor, corrected: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """``corrected`` where ``blend`` is 1, ``original`` where it is 0 (bit for bit), a mix on the ramp."""
    return torch.where(blend > 0, original + (corrected - original) * blend, original)
