"""Diffusion correction by SDEdit: the project's own denoising loop over Stable Diffusion components.

ACDC step 4 (see docs / arXiv 2410.04721): noise the ARM's frame forward to diffusion time ``t'`` and denoise
it back to 0 with the diffusion model conditioned on the frame's prompt. The loop here is written out rather
than borrowed from ``StableDiffusionImg2ImgPipeline`` because ACDC needs three things the pipeline does not
give: ``t'`` as an exact fraction of diffusion time, masked repair of a user-painted region with every pixel
outside it untouched, and (later) the same loop over 5-D video latents.

How ``strength`` (= t') maps to steps
-------------------------------------
Sampling is DDIM with eta = 0, built from the model's own scheduler config with ``timestep_spacing="trailing"``:
the N-step schedule is ``t_k = round(T - k*T/N) - 1`` for k = 0..N-1 (T = 1000 train timesteps), so it starts
at t = 999 (pure noise) and timestep t stands for diffusion time (t + 1) / T. SDEdit keeps exactly the
scheduled timesteps with ``(t + 1) / T <= t'``, starts by noising the clean latents to the first kept one and
runs the rest. Whenever N divides T this is ``floor(t' * N)`` steps: t' = 0.5, N = 50 runs 25 steps,
499, 479, ..., 19. (SD1.5's default "leading" spacing would start at 481 instead.)

Latent and pixel-space models
-----------------------------
The loop runs in the model's latent space: SD's VAE latents (``VAELatents``, 8 pixels per latent cell), or the
pixels themselves for a pixel-space model such as DeepFloyd IF or the toy world's DM (``PixelSpace``, an
identity "VAE" with no weights). Both answer the same four questions — encode, decode, pixels per latent cell,
the multiple image sides must have — so the loop below reads the same for either.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch

from ..errors import InvalidInputError
from ..progress import ProgressFn, no_progress
from .base import check_mask, check_request, grow_mask, latent_mask, paste_outside
from .schedule import check_strength, kept

# The samplers (diffusers schedulers) a DiffusionCorrector takes, by the names ComfyUI gives the same
# algorithms; the first is the default, the paper's DDIM (eta = 0). All run the trailing schedule of the
# module docstring, so t' means the same for each.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}


def sdedit_timesteps(scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """The timesteps SDEdit runs: of the ``steps``-step schedule, those at or below t' (``schedule.kept``).

    ``scheduler`` must use trailing spacing (see the module docstring). Raises if no step qualifies.
    """
    train_steps = scheduler.config.num_train_timesteps
    check_strength(strength, steps, "strength (t')", train_steps)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps[kept(scheduler.timesteps, strength, train_steps)]


def sdedit_sampler(scheduler_config: Mapping[str, Any], name: str, steps: int, strength: float,
                   generator: torch.Generator) -> tuple[Any, torch.Tensor, dict[str, Any]]:
    """The sampler ``name`` (one of ``SCHEDULERS``) for one SDEdit run: a fresh scheduler from the model's own config
    with trailing spacing, the timesteps at or below t' (``sdedit_timesteps``), and the options of its ``step`` (DDIM:
    eta = 0, the paper's; an ancestral sampler draws its noise from ``generator``). Multistep and sigma-based samplers
    start at the first kept step (their begin index). Shared by the image and the video corrector."""
    import diffusers

    scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(scheduler_config, timestep_spacing="trailing")
    timesteps = sdedit_timesteps(scheduler, steps, strength)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index((len(scheduler.timesteps) - len(timesteps)) * scheduler.order)
    step_options = {"eta": 0.0} if name == "ddim" else {"generator": generator}
    return scheduler, timesteps, step_options


class VAELatents:
    """SD's latent space: an ``AutoencoderKL`` (8x downsampling, latents multiplied by its ``scaling_factor``)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        self.vae = vae
        # Pixels per latent cell: the VAE halves the size at every level after the first, 8 for SD's four levels.
        self.latent_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_multiple = self.latent_scale

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Pixels [N, 3, H, W] in [-1, 1] -> scaled latents [N, 4, H/8, W/8] (a posterior sample, as diffusers'
        img2img does). Video [B, 3, F, H, W] would fold frames into the batch here."""
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return posterior.sample(generator) * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels [N, 3, H, W] in [-1, 1] (roughly: the decoder's output is not clamped)."""
        latents = (latents / self.vae.config.scaling_factor).to(self.vae.dtype)
        return self.vae.decode(latents, return_dict=False)[0]


class PixelSpace(torch.nn.Module):
    """The "VAE" of a pixel-space diffusion model (as DeepFloyd IF is): the latents ARE the pixels, in [-1, 1].

    It has no weights; it stands where SD's VAE stands (``DiffusionCorrector.vae``). ``image_multiple`` is the
    UNet's downsampling factor (2 per level after the first): image sides must be multiples of it.
    """

    latent_scale = 1  # pixels per latent cell

    def __init__(self, image_multiple: int = 1) -> None:
        super().__init__()
        self.image_multiple = image_multiple

    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return pixels

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def extra_repr(self) -> str:
        return f"image_multiple={self.image_multiple}"


class DiffusionCorrector:
    """SDEdit correction (and masked repair) with a Stable Diffusion 1.x / 2.x-shaped or SDXL model, or a
    pixel-space model of the SD1.x shape without a VAE (``vae`` is then a ``PixelSpace``): the corrector kind
    "diffusers" (``registry.CORRECTOR_KINDS``), meeting ``base.Corrector``.

    ``architecture`` says which: "sd" (SD1.x/2.x-shaped), "sdxl" or "pixel". Holds the diffusers / transformers
    components; keeps no state between calls (a fresh scheduler is built from ``scheduler_config`` every call).
    Build it with ``acdc_core.correct.load_corrector``.
    """

    kind = "diffusers"
    schedulers: tuple[str, ...] = tuple(SCHEDULERS)

    def __init__(self, *, unet: torch.nn.Module, vae: torch.nn.Module, text_encoders: Sequence[torch.nn.Module],
                 tokenizers: Sequence[Any], scheduler_config: Mapping[str, Any],
                 force_zeros_for_empty_prompt: bool = True) -> None:
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.latent_space = vae if isinstance(vae, PixelSpace) else VAELatents(self.vae)
        self.text_encoders = tuple(encoder.eval() for encoder in text_encoders)
        self.tokenizers = tuple(tokenizers)
        self.scheduler_config = dict(scheduler_config)
        # SDXL conditions on both text encoders plus pooled text and size ids ("text_time" added conditioning).
        self.architecture = ("sdxl" if unet.config.get("addition_embed_type") == "text_time"
                             else "pixel" if isinstance(vae, PixelSpace) else "sd")
        # SDXL was trained with an all-zero embedding, not the encoded "", as its unconditional input.
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt and self.architecture == "sdxl"
        expected = 2 if self.architecture == "sdxl" else 1
        if len(self.text_encoders) != expected or len(self.tokenizers) != expected:
            raise InvalidInputError(
                f"this UNet needs {expected} text encoder(s) and tokenizer(s); got {len(self.text_encoders)} "
                f"and {len(self.tokenizers)}.")

    # -- what the story loop asks about the model ---------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def image_multiple(self) -> int:
        """Image sides must be multiples of this: 8 for SD (pixels per latent cell), the UNet's downsampling
        factor for a pixel-space model."""
        return self.latent_space.image_multiple

    @property
    def native_size(self) -> tuple[int, int]:
        """(H, W) in pixels the UNet was trained at: 512x512 for SD1.5, 1024x1024 for SDXL, 32x32 for the toy DM."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        scale = self.latent_space.latent_scale
        return height * scale, width * scale

    @property
    def text_window(self) -> int:
        """Tokens the text encoder reads, BOS and EOS included (77 for CLIP)."""
        return min(tokenizer.model_max_length for tokenizer in self.tokenizers)

    @property
    def is_inpainting_unet(self) -> bool:
        """True for a 9-channel inpainting UNet (latents + mask + masked-image latents)."""
        return self.unet.config.in_channels == 9

    def modules(self) -> dict[str, torch.nn.Module]:
        """The UNet, the VAE (a weightless ``PixelSpace`` for pixel-space models) and the text encoder(s)."""
        return {"unet": self.unet, "vae": self.vae,
                **{f"text_encoder_{i}": encoder for i, encoder in enumerate(self.text_encoders)}}

    def to(self, device: torch.device | str) -> "DiffusionCorrector":
        """Move every component (used to offload the diffusion model while the ARM runs)."""
        for module in self.modules().values():
            module.to(device)
        return self

    def fit_prompt(self, prompt: str) -> str:
        """``prompt`` cut at a word boundary so that it fits ``text_window`` tokens; unchanged if it fits."""
        if self._token_count(prompt) <= self.text_window:
            return prompt
        word_ends = [match.end() for match in re.finditer(r"\S+", prompt)]
        fits, too_long = 0, len(word_ends)  # invariant: the first `fits` words fit, the first `too_long` don't
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            if self._token_count(prompt[:word_ends[middle - 1]]) <= self.text_window:
                fits = middle
            else:
                too_long = middle
        if fits == 0:  # a single "word" longer than the window: fall back to cutting tokens
            tokenizer = self.tokenizers[0]
            ids = tokenizer(prompt, truncation=True, max_length=self.text_window).input_ids
            return tokenizer.decode(ids, skip_special_tokens=True)
        return prompt[:word_ends[fits - 1]].rstrip(" ,;:")

    def _token_count(self, text: str) -> int:
        return max(len(tokenizer(text, verbose=False).input_ids) for tokenizer in self.tokenizers)

    # -- the correction ----------------------------------------------------------------------------------

    def correct(self, images: torch.Tensor, prompts: str | Sequence[str], *, strength: float, steps: int = 50,
                guidance_scale: float = 7.5, seed: int = 0, negative_prompt: str = "",
                scheduler: Optional[str] = None, mask: Optional[torch.Tensor] = None, mask_dilate: int = 8,
                mask_feather: int = 8, progress: ProgressFn = no_progress) -> torch.Tensor:
        """SDEdit ``images`` [N, 3, H, W] in [0, 1] at strength t' in (0, 1]; returns [N, 3, H, W] in [0, 1].

        ``prompts`` is one prompt for all images or one per image (longer prompts are truncated to
        ``text_window`` tokens; ``fit_prompt`` cuts them on a word boundary instead). Runs the DDIM steps at or
        below t' (module docstring), with ``scheduler`` (one of ``SCHEDULERS``; default DDIM). The same ``seed`` gives the same output; the noise is drawn on the CPU,
        so CPU and GPU runs agree up to floating-point differences. Guidance <= 1 turns guidance off.

        ``mask`` [N, 1, H, W] or [N, H, W] in [0, 1], 1 = repaint: only that region changes. It is grown by
        ``mask_dilate`` px and feathered over ``mask_feather`` px more; pixels farther than
        ``mask_dilate + mask_feather`` px from the mask come back exactly as given. An all-zero mask returns
        the images unchanged without running anything. ``progress("sdedit", step, total)`` is called after
        every step and may raise to cancel.
        """
        images, prompts, scheduler = check_request(
            images, prompts, strength, steps, guidance_scale, mask_dilate, mask_feather,
            image_multiple=self.image_multiple, schedulers=self.schedulers, scheduler=scheduler,
            train_steps=self.scheduler_config.get("num_train_timesteps", 1000))
        blend = None
        if mask is not None:
            mask = check_mask(mask, images)
            if not bool((mask > 0).any()):
                return images.clone()  # nothing to repaint
            blend = grow_mask(mask.float(), mask_dilate, mask_feather)  # [N, 1, H, W], 0 where pixels stay

        with torch.inference_mode():
            corrected = self._sdedit(images, prompts, strength, steps, guidance_scale, seed, negative_prompt,
                                     scheduler, blend, progress)
            if blend is not None:
                corrected = paste_outside(images.float(), corrected.to(images.device).float(), blend)
        # A plain tensor (not an inference-mode one), on the caller's device and in the caller's dtype.
        return corrected.to(images.device, images.dtype).clone()

    def _sdedit(self, images: torch.Tensor, prompts: list[str], strength: float, steps: int,
                guidance_scale: float, seed: int, negative_prompt: str, scheduler_name: str,
                blend: Optional[torch.Tensor], progress: ProgressFn) -> torch.Tensor:
        # 1. The schedule: the sampler (DDIM, eta = 0, by default) from the model's own config, trailing
        #    spacing, the steps at or below t'. Multistep and sigma-based samplers start at the first kept step.
        generator = torch.Generator("cpu").manual_seed(seed)
        scheduler, timesteps, step_options = sdedit_sampler(self.scheduler_config, scheduler_name, steps, strength,
                                                            generator)

        # 2. Clean latents of the frames, then forward diffusion to the first kept timestep.
        pixels = images.to(self.device, torch.float32) * 2 - 1  # [0, 1] -> [-1, 1], the VAE's range
        clean = self._encode(pixels, generator)
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(self.device, clean.dtype)
        latents = scheduler.add_noise(clean, noise, timesteps[:1].repeat(len(clean)))

        # 3. Masked repair: the latent-size mask, and for a 9-channel UNet its extra inputs.
        cells, inpaint_inputs = None, None
        if blend is not None:
            # A latent cell may change if any of its 8x8 pixels may (1x1 in pixel space).
            cells = latent_mask(blend.to(self.device), self.latent_space.latent_scale).to(clean.dtype)
            if self.is_inpainting_unet:
                # As SD inpainting was trained: a hard mask, and the image with the region greyed out (0).
                hard = (cells > 0).to(clean.dtype)
                masked = pixels * (blend.to(self.device, pixels.dtype) == 0)
                inpaint_inputs = torch.cat([hard, self._encode(masked, generator)], dim=1)  # [N, 1 + 4, h, w]
                cells = None  # the inpainting UNet sees the mask itself; nothing to re-impose

        # 4. Denoise, then decode back to [0, 1] pixels.
        embeds, added = self._conditioning(prompts, negative_prompt, guidance_scale > 1, tuple(images.shape[-2:]))
        latents = self._denoise(latents, timesteps, scheduler, embeds, added, guidance_scale,
                                clean=clean, noise=noise, cells=cells, inpaint_inputs=inpaint_inputs,
                                step_options=step_options, progress=progress)
        return self._decode(latents)

    def _denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, scheduler: Any, embeds: torch.Tensor,
                 added: Optional[dict[str, torch.Tensor]], guidance_scale: float, *, clean: torch.Tensor,
                 noise: torch.Tensor, cells: Optional[torch.Tensor], inpaint_inputs: Optional[torch.Tensor],
                 step_options: dict[str, Any], progress: ProgressFn, stage: str = "sdedit") -> torch.Tensor:
        """The denoising loop. Latents are [B, C, ...]: images [B, C, h, w], or a video window [B, C, F, h, w]
        (``video.AnimateDiffCorrector``) — every operation here works along the batch (dim 0) and channel (dim 1)
        axes only. ``cells``: where a plain UNet may change the latents (the rest is re-imposed from ``clean`` after
        every step). ``progress(stage, step, total)`` after every step; it may raise to cancel."""
        guided = guidance_scale > 1
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents  # [uncond; cond] in one UNet call
            model_input = scheduler.scale_model_input(model_input, t)
            if inpaint_inputs is not None:
                extra = torch.cat([inpaint_inputs] * 2) if guided else inpaint_inputs
                model_input = torch.cat([model_input, extra], dim=1)  # channels: 4 latents + 1 mask + 4 masked
            noise_pred = self.unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                                   return_dict=False)[0]
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False, **step_options)[0]

            if cells is not None:
                # Plain UNet: outside the mask, put back the known latents at the next step's noise level.
                if i + 1 < len(timesteps):
                    known = scheduler.add_noise(clean, noise, timesteps[i + 1:i + 2].repeat(len(clean)))
                else:
                    known = clean
                latents = (1 - cells) * known + cells * latents
            progress(stage, i + 1, len(timesteps), None)
        return latents

    # -- the pieces --------------------------------------------------------------------------------------

    def _encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Pixels [N, 3, H, W] in [-1, 1] -> the UNet's latents (module docstring), in the UNet's dtype."""
        return self.latent_space.encode(pixels, generator).to(self.unet.dtype)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels [N, 3, H, W] in [0, 1]."""
        pixels = self.latent_space.decode(latents)
        return (pixels.float() / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]

    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-token text embeddings [N, 77, D] (and SDXL's pooled embedding [N, D2])."""
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(self.device)
            if self.architecture != "sdxl":
                hidden.append(encoder(ids)[0])  # SD1.x: the last layer, after the final layer norm
            else:
                output = encoder(ids, output_hidden_states=True)
                hidden.append(output.hidden_states[-2])  # SDXL: the penultimate layer of both encoders
                pooled = output[0]  # text_embeds of the projection encoder (the last one)
        # SDXL concatenates the two encoders' features: [N, 77, 768] + [N, 77, 1280] -> [N, 77, 2048].
        embeds = torch.cat(hidden, dim=-1).to(self.unet.dtype)
        return embeds, None if pooled is None else pooled.to(self.unet.dtype)

    def _conditioning(self, prompts: list[str], negative_prompt: str, guided: bool,
                      size: tuple[int, int]) -> tuple[torch.Tensor, Optional[dict[str, torch.Tensor]]]:
        """Text conditioning for one UNet call per step: [uncond; cond] stacked on the batch axis if guided."""
        embeds, pooled = self._encode_text(prompts)
        if guided:
            if self.force_zeros_for_empty_prompt and negative_prompt == "":
                negative, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            else:
                negative, negative_pooled = self._encode_text([negative_prompt] * len(prompts))
            embeds = torch.cat([negative, embeds])
            pooled = None if pooled is None else torch.cat([negative_pooled, pooled])
        if self.architecture != "sdxl":
            return embeds, None
        # SDXL's size conditioning: original size, crop top-left, target size -> (H, W, 0, 0, H, W).
        time_ids = torch.tensor([[*size, 0, 0, *size]], dtype=embeds.dtype, device=self.device)
        return embeds, {"text_embeds": pooled, "time_ids": time_ids.repeat(len(embeds), 1)}
