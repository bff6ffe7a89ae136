"""Widgets several nodes share, and how their values become engine values (each rule written once)."""
from __future__ import annotations

from typing import Optional

from acdc_core.errors import InvalidInputError, check_number
from acdc_core.state import CORRECT_ALL, CORRECT_NONE, parse_correct_frames, story_lines
from . import bridge

SEED_MAX = 2 ** 53  # exact as a float in the browser
DTYPES = ["auto", "float32", "bfloat16", "float16"]
CORRECT_FRAMES = [CORRECT_ALL, CORRECT_NONE] + [str(k) for k in range(1, 51)]
SAME_SEED = -1      # a seed widget's "use the seed it derives from" (the DM's seed for the fix, ...)


def tooltip(text: str, **options) -> dict:
    return {"tooltip": text, **options}


def seed_input(text: str, *, allow_same: bool = False) -> tuple:
    # No "control after generate": a seed that changed by itself after every run would defeat the cache
    # that lets a re-run (a new t', a painted mask) reuse the frames it does not affect.
    low = SAME_SEED if allow_same else 0
    return ("INT", {"default": low, "min": low, "max": SEED_MAX, "control_after_generate": False, "tooltip": text})


def optional_seed(value: int) -> Optional[int]:
    """A seed widget with ``allow_same``: None for -1 (derive it), else the seed."""
    return None if int(value) == SAME_SEED else int(value)


def dtype_input() -> tuple:
    return (DTYPES, tooltip("Weight precision. auto: float32 on the CPU, bfloat16 (or float16) on a GPU."))


def sampler_input() -> tuple:
    from acdc_core.correct import SCHEDULERS
    return (bridge.HOST.sampler_names(), tooltip(
        "The denoising algorithm (diffusers calls it the scheduler). ddim (eta 0) is the paper's. A diffusion "
        f"model loaded by this pack takes {', '.join(SCHEDULERS)}; a ComfyUI model (ComfyUI Model as Corrector) "
        "takes any of ComfyUI's samplers.", default="ddim"))


def correct_frames_input(what: str) -> tuple:
    return (CORRECT_FRAMES, tooltip(
        f"ACDC #k: how many frames {what}, counted from frame 1. all: every frame (ACDC); k: only the first k "
        "(later frames stay as the ARM made them); none: no frame (the ARM alone).", default=CORRECT_ALL))


def read_correct_frames(value) -> Optional[int]:
    """The ``correct_frames`` widget as the engine's value (``acdc_core.state.parse_correct_frames``).

    A plain number 0 can only come from a workflow saved before correct_frames became a list: then 0 meant
    "every frame", which is "none" now. Such a workflow is refused with what changed, never silently run
    the opposite way; numbers from 1 up meant, and mean, the first k frames.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and int(value) == 0:
        raise InvalidInputError(
            "correct_frames is 0, from a workflow saved with an earlier acdc-story, where 0 meant 'every frame'. "
            "It is now a list: pick 'all' for every frame (what 0 did), 'none' for the ARM alone, or a number k "
            "for only the first k frames (ACDC #k).")
    if isinstance(value, float):
        value = int(value)
    return parse_correct_frames(value)


def check_correct_frames(value) -> Optional[str]:
    """For VALIDATE_INPUTS: None if the widget's value is good, else the message."""
    if value is None:   # linked: checked when it runs
        return None
    try:
        read_correct_frames(value)
    except InvalidInputError as error:
        return str(error)
    return None


EMPTY_STORY = "the story text is empty: write at least one line (one line per frame)."


def check_story_text(text):
    """For VALIDATE_INPUTS of a story text widget: True, or the message for a story with no line."""
    return EMPTY_STORY if text is not None and not story_lines(text) else True


def check_float_widgets(cls, **values) -> Optional[str]:
    """For VALIDATE_INPUTS of a node with FLOAT widgets: None if every value given is a finite number within its
    widget's min and max, else the message naming the input. A value of None (a linked input) is checked at run time.

    ComfyUI's own check of min and max lets NaN through (``nan < min`` is False, and the JSON of an API prompt may
    hold NaN), and it skips both checks for every input VALIDATE_INPUTS names, so this checks both.
    """
    spec = cls.INPUT_TYPES()
    widgets = {**spec.get("required", {}), **spec.get("optional", {})}
    for name, value in values.items():
        if value is None:
            continue
        options = widgets[name][1]
        try:
            check_number(value, name, minimum=options.get("min"), maximum=options.get("max"))
        except InvalidInputError as error:
            return str(error)
    return None
