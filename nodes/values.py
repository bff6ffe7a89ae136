"""The values that travel on the pack's custom wires, and helpers every node file shares.

All values are frozen: a node returns a new one and never changes what it was given (ComfyUI caches
node outputs by their inputs, so a changed input would silently corrupt the cache).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from acdc_core.state import StoryState
from .bridge import ManagedModel

CATEGORY = "ACDC"

# Custom wire types, namespaced so they never meet another pack's wires.
ARM = "ACDC_ARM"          # an ARM backend (Janus / Janus-Pro)                      -> ModelHandle
DM = "ACDC_DM"            # a diffusion model for correction (SD1.5 / SDXL)          -> ModelHandle
MEMORY = "ACDC_MEMORY"    # the memory module (local LLM, endpoint, or off)          -> ModelHandle
STORY = "ACDC_STORY"      # the story so far                                         -> acdc_core StoryState
TOKENS = "ACDC_TOKENS"    # a frame's ARM tokens, its number and the story before it -> FrameTokens
LOOP = "ACDC_LOOP"        # the link between Loop Frame (open) and (close)           -> LoopHandle

SEED_MAX = 2 ** 53  # exact as a float in the browser
BUILTIN = "(built-in) toy world"  # the loaders' choice for the pack's built-in default models


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model: the engine object, its ComfyUI-managed weights, and what was loaded (for messages)."""

    engine: Any
    managed: Optional[ManagedModel]
    name: str

    def use(self) -> Any:
        """The engine object, with its weights on ComfyUI's compute device."""
        if self.managed is not None:
            self.managed.use()
        return self.engine

    def __repr__(self) -> str:
        return f"{type(self.engine).__name__}({self.name})"


@dataclass(frozen=True, eq=False)
class FrameTokens:
    """What ARM Token Generator made: the tokens of frame ``index`` (0-based), sampled after ``state``."""

    state: StoryState        # the story before this frame (frames 0..index-1 done)
    index: int
    tokens: torch.Tensor     # [1, tokens_per_image], long, CPU
    arm_seed: int
    seconds: dict = field(default_factory=dict)

    @property
    def frame(self) -> int:
        """The 1-based frame number users see."""
        return self.index + 1

    @property
    def prompt(self) -> str:
        return self.state.prompts[self.index]

    def __repr__(self) -> str:
        return f"FrameTokens(frame {self.frame} of {len(self.state.prompts)}, {tuple(self.tokens.shape)})"


@dataclass(frozen=True, eq=False)
class LoopHandle:
    """From Loop Frame (open) to (close): which open node, the story's length, and which pass this is.

    ``frame`` is None on the template pass (the loop as the user wired it, which only plans the
    expansion) and the 0-based frame index on each expanded iteration.
    """

    open_id: str
    total: int
    start_state: StoryState
    frame: Optional[int] = None

    @property
    def start(self) -> int:
        return len(self.start_state.records)


def tooltip(text: str, **options) -> dict:
    return {"tooltip": text, **options}


def seed_input(text: str) -> tuple:
    # No "control after generate": a seed that changed by itself after every run would defeat the cache
    # that lets a re-run (a new t', a painted mask) reuse the frames it does not affect.
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": False, "tooltip": text})


def parse_prompts(text: str) -> tuple[str, ...]:
    """Story text -> one prompt per frame: one per line, blank lines and lines starting with # skipped."""
    return tuple(line.strip() for line in str(text or "").splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))


def single_image(image: torch.Tensor, what: str) -> torch.Tensor:
    """A ComfyUI IMAGE [1, H, W, 3] -> engine [1, 3, H, W], or a clear error."""
    from acdc_core.errors import InvalidInputError
    from acdc_core.images import bhwc_to_nchw

    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInputError(f"{what} must be an IMAGE [B, H, W, 3]; got {got}.")
    if image.shape[0] != 1:
        raise InvalidInputError(f"{what} must hold one frame; got a batch of {image.shape[0]}. In a story "
                                f"each frame goes through the chain on its own (Loop Frame makes the frames).")
    return bhwc_to_nchw(image.float())  # [1, H, W, 3] -> [1, 3, H, W]


def story_results(state: StoryState) -> dict:
    """A finished story as node outputs (story, frames, ARM frames, DM prompts) plus a side-by-side preview."""
    from acdc_core.errors import InvalidInputError
    from acdc_core.images import nchw_to_bhwc, resize_to
    from acdc_core.report import strip_image
    from .bridge import save_picture

    records = state.records
    if not records:
        raise InvalidInputError("the story has no frames yet.")
    # One batch needs one size: frames corrected by the DM are larger than frames the ARM alone made
    # (ACDC #k); bring every frame to the largest size.
    size = max((tuple(r.corrected_image.shape[-2:]) for r in records), key=lambda hw: hw[0] * hw[1])
    frames = torch.cat([resize_to(r.corrected_image[None].float(), size) for r in records])
    arm_size = tuple(records[0].arm_image.shape[-2:])
    arm_frames = torch.cat([resize_to(r.arm_image[None].float(), arm_size) for r in records])
    dm_prompts = "\n".join(r.memory_prompt if r.memory_prompt is not None else r.story_prompt for r in records)
    strip = strip_image([("ARM frame (before correction)", [r.arm_image for r in records]),
                         ("ACDC (corrected, in context)", [r.corrected_image for r in records])],
                        [r.story_prompt for r in records])
    ui = {"images": [save_picture(strip, "story")], "acdc_frames": [len(records)]}
    # [N, 3, H, W] -> ComfyUI IMAGE [N, H, W, 3]
    return {"ui": ui, "result": (state, nchw_to_bhwc(frames), nchw_to_bhwc(arm_frames), dm_prompts)}
