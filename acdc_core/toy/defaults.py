"""The pack's built-in default models: the toy world's trained ARM, DM and memory LLM, shipped in
``acdc_core/toy/models`` (safetensors, a model card each), and the settings they are run with."""
from __future__ import annotations

from pathlib import Path

from ..arm.base import SamplingSettings
from ..memory import MemorySettings
from ..state import StorySettings

MODELS = Path(__file__).resolve().parent / "models"
ARM_DIR, DM_DIR, MEMORY_DIR = MODELS / "arm", MODELS / "dm", MODELS / "memory"

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
