"""The values that travel on the pack's custom wires, their type names, and the names every node shares.

All values are frozen: a node returns a new one and never changes what it was given (ComfyUI caches
node outputs by their inputs, so a changed input would silently corrupt the cache).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from acdc_core.state import StoryState
from .bridge import ManagedModel

CATEGORY = "ACDC"

# Custom wire types, namespaced so they never meet another pack's wires.
ARM = "ACDC_ARM"          # an ARM backend (any family of acdc_core.arm.FAMILIES)             -> ModelHandle
DM = "ACDC_DM"            # a corrector (acdc_core.correct.Corrector: diffusers, or ComfyUI's) -> ModelHandle
MEMORY = "ACDC_MEMORY"    # the memory module (local LLM, endpoint, or off)                   -> ModelHandle
STORY = "ACDC_STORY"      # the story so far                                                  -> StoryState
FRAME = "ACDC_FRAME"      # one frame on its way through the steps                            -> acdc_core Frame
LOOP = "ACDC_LOOP"        # the link between Loop Frame (open) and (close)                    -> LoopHandle
VIDEO = "ACDC_VIDEO"      # a video so far (frames, windows, the ARM's context)               -> VideoState
VIDEO_DM = "ACDC_VIDEO_DM"  # a video corrector (acdc_core.correct.video: AnimateDiff)       -> ModelHandle

BUILTIN = "(built-in) toy world"  # the loaders' choice for the pack's built-in default models
# The built-in video models until the toy video world lands: tiny random weights (the plumbing only).
BUILTIN_VIDEO = "(built-in) toy video world"

# What a finished story comes out as, from Loop Frame (close) and from ACDC Story alike.
STORY_OUTPUTS = (STORY, "IMAGE", "IMAGE", "STRING")
STORY_OUTPUT_NAMES = ("story", "frames", "arm_frames", "dm_prompts")
STORY_OUTPUT_TOOLTIPS = (
    "The finished story (for a later Loop Frame (open)'s resume).",
    "Every frame as it went into the ARM's context (corrected and fixed), as one batch.",
    "Every frame as the ARM first drew it, before correction, as one batch.",
    "The prompt the diffusion model got for each frame, one line per frame.",
)

DEFAULT_STORY = ("Benny, a golden retriever, plays in a sunny meadow with a red ball.\n"
                 "He jumps over a fallen log.\n"
                 "He chases a butterfly near the river.\n"
                 "He rests in the shade of an oak tree.\n"
                 "He watches the sun set behind the hills.\n"
                 "He falls asleep under the stars.")


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model: the engine object, its host-managed weights, and what was loaded (for messages)."""

    engine: Any
    managed: Optional[ManagedModel]
    name: str

    def use(self) -> Any:
        """The engine object, with its weights on the compute device."""
        if self.managed is not None:
            self.managed.use()
        return self.engine

    def __repr__(self) -> str:
        return f"{type(self.engine).__name__}({self.name})"


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
