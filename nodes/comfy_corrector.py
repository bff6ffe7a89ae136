"""ComfyUI's own models as the ACDC corrector: a ``acdc_core.correct.Corrector`` over a MODEL, CLIP and VAE.

Whatever ComfyUI loads (Load Checkpoint with LoRAs, SD1.5, SDXL, SD3.5, Flux, ...) corrects the frames with
ComfyUI's own machinery, reached only through the bridge's host: the frame is VAE-encoded, the prompt
CLIP-encoded, and ComfyUI's KSampler runs at denoise = t' from the frame's latent; a fix mask becomes the
latent's noise mask, and the untouched pixels are put back after decoding, as the engine's own corrector does.

Steps: the engine's ``steps`` is the length N of the full schedule, of which the ``S = floor(t' x N)`` steps at
or below t' run (``acdc_core.correct.schedule``). ComfyUI's KSampler counts the steps it *runs*: with ``steps = S``
and ``denoise = d`` it builds a schedule of ``int(S / d)`` and runs its last S. So this corrector asks ComfyUI for
S steps at the denoise that makes that schedule exactly N long (``schedule_denoise``: S / (N + 1/2), which is t'
up to the half step): the same number of model calls as the engine's corrector for the same settings (25 at
t' = 0.5 with 50 steps), cond and uncond batched in each. On ComfyUI's ``simple`` schedule (the default here) the
N-step schedule is the engine's trailing one (999, 979, ... 19 for N = 50; exactly whenever N divides 1000), so
with the ``ddim`` sampler (eta 0) both correctors run the very same timesteps: 499 ... 19 at t' = 0.5.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from acdc_core.correct.base import check_mask, check_request, grow_mask, latent_mask, paste_outside
from acdc_core.correct.schedule import steps_run
from acdc_core.progress import ProgressFn, no_progress
from . import bridge

DEFAULT_SCHEDULER = "simple"


def schedule_denoise(run: int, steps: int) -> float:
    """ComfyUI's denoise for running the last ``run`` steps of a ``steps``-long schedule: its KSampler builds
    ``int(run / denoise)`` steps, which this makes exactly ``steps`` (the half step keeps rounding off it)."""
    return 1.0 if run >= steps else run / (steps + 0.5)


class ComfyCorrector:
    """The corrector kind "comfyui". ``scheduler`` is ComfyUI's sigma schedule (simple, karras, normal, ...);
    the sampler is chosen per call (``correct(scheduler=...)``, ComfyUI's sampler names, ddim first)."""

    kind = "comfyui"
    text_window = 1 << 20        # ComfyUI encodes a long prompt in as many 77-token windows as it needs

    def __init__(self, model: Any, clip: Any, vae: Any, *, scheduler: str = DEFAULT_SCHEDULER,
                 host: Optional[bridge.Host] = None) -> None:
        host = bridge.HOST if host is None else host
        self.model, self.clip, self.vae, self.scheduler, self.host = model, clip, vae, scheduler, host
        names = host.sampler_names()
        self.schedulers = tuple(["ddim"] + [n for n in names if n != "ddim"]) if "ddim" in names else tuple(names)
        side = host.native_side(model)
        self.native_size = (side, side)
        self.image_multiple = host.vae_scale(vae)

    def __repr__(self) -> str:
        return f"ComfyCorrector({type(self.model).__name__}, scheduler={self.scheduler!r})"

    def fit_prompt(self, prompt: str) -> str:
        return prompt

    def to(self, device: torch.device | str) -> "ComfyCorrector":
        return self              # ComfyUI's model management moves its own models when it samples

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def correct(self, images: torch.Tensor, prompts: str | Sequence[str], *, strength: float, steps: int = 50,
                guidance_scale: float = 7.5, seed: int = 0, negative_prompt: str = "",
                scheduler: Optional[str] = None, mask: Optional[torch.Tensor] = None, mask_dilate: int = 8,
                mask_feather: int = 8, progress: ProgressFn = no_progress) -> torch.Tensor:
        """SDEdit with ComfyUI's KSampler (see the module docstring); images [N, 3, H, W] in [0, 1], one at a time,
        each with the noise of ``seed``."""
        images, prompts, sampler = check_request(
            images, prompts, strength, steps, guidance_scale, mask_dilate, mask_feather,
            image_multiple=self.image_multiple, schedulers=self.schedulers, scheduler=scheduler)
        blend = None
        if mask is not None:
            mask = check_mask(mask, images)
            if not bool((mask > 0).any()):
                return images.clone()  # nothing to repaint
            blend = grow_mask(mask, mask_dilate, mask_feather)
        run = steps_run(strength, steps)
        negative = self.host.encode_text(self.clip, negative_prompt)
        out = []
        for k, (image, prompt) in enumerate(zip(images.float(), prompts)):
            latent = self.host.vae_encode(self.vae, image[None].permute(0, 2, 3, 1))   # [1, 3, H, W] -> IMAGE
            noise_mask = None
            if blend is not None:
                noise_mask = latent_mask(blend[k:k + 1], self.image_multiple).to(latent.dtype)
            samples = self.host.sample(
                self.model, latent, seed=seed, steps=run, cfg=guidance_scale if guidance_scale > 1 else 1.0,
                sampler_name=sampler, scheduler=self.scheduler, positive=self.host.encode_text(self.clip, prompt),
                negative=negative, denoise=schedule_denoise(run, steps), noise_mask=noise_mask,
                callback=lambda step, total: progress("sdedit", step, total, None))
            pixels = self.host.vae_decode(self.vae, samples).float().permute(0, 3, 1, 2).cpu()   # IMAGE -> [1, 3, H, W]
            if blend is not None:
                pixels = paste_outside(image[None].cpu(), pixels, blend[k:k + 1].cpu())
            out.append(pixels.clamp(0, 1))
        return torch.cat(out).to(images.device, images.dtype)
