"""Diffusion correction (ACDC step 4): SDEdit and masked repair, behind one protocol (``base.Corrector``).

    corrector = load_corrector("sd15.safetensors")          # or a diffusers folder; SD1.5, SDXL, pixel space
    fixed = corrector.correct(frames, prompt, strength=0.5)  # frames [N, 3, H, W] in [0, 1]

    video = load_animatediff("sd15/", "mm_sd_v15_v2.safetensors")  # AnimateDiff: SD1.5 + a motion module
    window = video.correct_video(frames, prompt, strength=0.5)     # one window [F, 3, H, W] in [0, 1]
"""
from .base import Corrector, grow_mask, paste_outside
from .loading import detect_checkpoint_family
from .registry import CORRECTOR_KINDS, check_corrector_path, corrector_kind, load_corrector
from .schedule import check_strength, steps_run
from .sdedit import SCHEDULERS, DiffusionCorrector, sdedit_timesteps
from .video import AnimateDiffCorrector, VideoCorrector, load_animatediff

__all__ = ["Corrector", "CORRECTOR_KINDS", "DiffusionCorrector", "SCHEDULERS", "load_corrector", "check_corrector_path", "corrector_kind",
           "detect_checkpoint_family", "grow_mask", "paste_outside", "sdedit_timesteps", "check_strength",
           "steps_run", "VideoCorrector", "AnimateDiffCorrector", "load_animatediff"]
