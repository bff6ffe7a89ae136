"""Diffusion correction (ACDC step 4): SDEdit and masked repair, behind one protocol (``base.Corrector``).

    corrector = load_corrector("sd15.safetensors")          # or a diffusers folder; SD1.5, SDXL, pixel space
    fixed = corrector.correct(frames, prompt, strength=0.5)  # frames [N, 3, H, W] in [0, 1]
"""
from .base import Corrector, grow_mask, paste_outside
from .loading import detect_checkpoint_family
from .registry import CORRECTOR_KINDS, check_corrector_path, corrector_kind, load_corrector
from .schedule import check_strength, steps_run
from .sdedit import SCHEDULERS, DiffusionCorrector, sdedit_timesteps

__all__ = ["Corrector", "CORRECTOR_KINDS", "DiffusionCorrector", "SCHEDULERS", "load_corrector", "check_corrector_path", "corrector_kind",
           "detect_checkpoint_family", "grow_mask", "paste_outside", "sdedit_timesteps", "check_strength",
           "steps_run"]
