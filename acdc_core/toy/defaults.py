"""The pack's built-in default models: the toy world's trained ARM, DM and memory LLM, and the toy video world's
video ARM and video DM (AnimateDiff-style: a pixel-space image UNet + a motion adapter), shipped in
``acdc_core/toy/models`` (safetensors, a model card each), and the settings they are run with."""
from __future__ import annotations

from pathlib import Path

from ..arm.base import SamplingSettings
from ..memory import MemorySettings
from ..state import StorySettings
from ..video import VideoSettings

MODELS = Path(__file__).resolve().parent / "models"
ARM_DIR, DM_DIR, MEMORY_DIR = MODELS / "arm", MODELS / "dm", MODELS / "memory"
VIDEO_ARM_DIR, VIDEO_DM_DIR = MODELS / "video_arm", MODELS / "video_dm"
VIDEO_ADAPTER_DIR = VIDEO_DM_DIR / "motion_adapter"

# The settings every toy run uses unless told otherwise: the paper's t' = 0.5 with a 20-step DDIM
# schedule (10 steps run), and the ARM's own sampling defaults. t', steps and the ARM's settings were fixed
# before the toy benchmark first ran. The DM's CFG was 3 until its overshoot was found to be the source of
# black/white/green fringe pixels around the animals (clipped, out-of-range pixels where the prompt disagrees
# with the frame; nothing to do with resizing or the mask blend); 1.5 was then chosen on 20 *training-split*
# stories (CFG 1 / 1.25 / 1.5 / 2 / 3; it had the fewest clipped pixels and the best judge scores there), and
# the held-out benchmark was run again with it (README, "Toy benchmark").
TOY_SETTINGS = StorySettings(sampling=SamplingSettings(guidance_scale=1.0, temperature=1.0), strength=0.5,
                             steps=20, guidance_scale=1.5, correction_size=None)
TOY_MEMORY_SETTINGS = MemorySettings(mode="per-frame")


# The toy video world (``video_world``): 24 frames, windows of 8, the paper's t' = 0.5 with a 20-step DDIM schedule
# (10 steps run), the ARM's own sampling. Fixed before the video benchmark first ran.
TOY_VIDEO_SETTINGS = VideoSettings(frames=24, window=8, correct="first", strength=0.5, steps=20, guidance_scale=1.5)


def available() -> bool:
    """True when all three trained models are present."""
    return all((d / "MODEL_CARD.md").is_file() for d in (ARM_DIR, DM_DIR, MEMORY_DIR))


def load_toy_models(device: str = "cpu"):
    """(arm, corrector, memory LLM backend) from the shipped folders, through the normal loaders."""
    from ..arm import load_arm
    from ..correct import load_corrector
    from ..memory import load_local_llm

    return (load_arm(ARM_DIR, device=device), load_corrector(DM_DIR, device=device),
            load_local_llm(MEMORY_DIR, device=device))


def video_available() -> bool:
    """True when both trained video models are present."""
    return all((d / "MODEL_CARD.md").is_file() for d in (VIDEO_ARM_DIR, VIDEO_DM_DIR))


def load_toy_video_models(device: str = "cpu"):
    """(video arm, video corrector) from the shipped folders, through the normal loaders."""
    from ..arm import load_arm
    from ..correct.video import load_animatediff

    return load_arm(VIDEO_ARM_DIR, device=device), load_animatediff(VIDEO_DM_DIR, VIDEO_ADAPTER_DIR, device=device)
