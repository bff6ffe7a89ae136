"""Diffusion correction (ACDC step 4): SDEdit and masked repair with a Stable Diffusion model.

    corrector = load_corrector("sd15.safetensors")          # or a diffusers folder; SD1.5 or SDXL
    fixed = corrector.correct(frames, prompt, strength=0.5)  # frames [N, 3, H, W] in [0, 1]
"""
from .loading import detect_checkpoint_family, load_corrector
from .sdedit import DiffusionCorrector, grow_mask, sdedit_timesteps

__all__ = ["DiffusionCorrector", "load_corrector", "detect_checkpoint_family", "grow_mask", "sdedit_timesteps"]
