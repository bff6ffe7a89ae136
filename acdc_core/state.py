"""The story as a value: settings, one record per frame, and the state the loop carries.

Every object here is frozen. The loop never changes a state it was given; it returns a new one, which
is what ComfyUI's output cache (and any caller keeping an earlier state to branch from) relies on.
Images are [3, H, W] float tensors in [0, 1]; tokens are [n_images, tokens_per_image] long tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from .arm.base import ARMContext, SamplingSettings
from .correct.schedule import check_range
from .errors import MAX_SEED, InvalidInputError, check_number, check_seed


FIX_STRENGTH = "fix_strength (the fix's t')"
CORRECT_ALL = "all"
CORRECT_NONE = "none"


def frame_seed(base: int, index: int) -> int:
    """The seed of frame ``index`` (0-based) from a base seed: frame k (1-based) uses base + k - 1.

    The one seed rule: the CLI, the all-in-one node and every stage node of the wired chain use it.
    """
    return int(base) + int(index)


def parse_correct_frames(value) -> Optional[int]:
    """ACDC #k as the engine holds it, from what a user typed: the number of frames corrected, counted from
    frame 1. ``None`` / ``"all"``: every frame (ACDC); ``0`` / ``"none"``: no frame (the ARM alone);
    ``k`` (int or digits): the first k frames (the paper's ACDC #k)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == CORRECT_ALL):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == CORRECT_NONE:
            return 0
        if not text.isdigit():
            raise InvalidInputError(
                f"correct_frames must be 'all' (every frame), 'none' (the ARM alone) or a number k of frames to "
                f"correct (ACDC #k); got {value!r}.")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            f"correct_frames must be 'all', 'none' (0) or a number k >= 1 of frames to correct; got {value!r}.")
    return value


def describe_correct_frames(value: Optional[int]) -> str:
    """The words for a ``correct_frames`` value, for messages and records: "all", "none" or "k"."""
    return CORRECT_ALL if value is None else CORRECT_NONE if value == 0 else str(value)


@dataclass(frozen=True)
class StorySettings:
    """Everything that decides a story's frames, apart from the models and the prompts.

    strength is SDEdit's t' (the fraction of diffusion time the ARM frame is noised to, in (0, 1]);
    steps is the length of the full schedule of which only the steps at or below t' run; scheduler is the
    corrector's sampler (``ddim``, the paper's, by default; see the corrector's ``schedulers``).
    correct_frames (see ``parse_correct_frames``): None corrects every frame (ACDC); k corrects only the first
    k (the paper's ACDC #k); 0 is the ARM alone. correction_size: (H, W) the DM works at; None = its native size.
    Seeds: frame i samples the ARM with ``frame_seed(seed, i)`` and the DM with ``frame_seed(dm_seed, i)``
    (``dm_seed`` None: the same base as the ARM); the physical fix uses ``fix_seed`` the same way (None: the
    frame's DM seed).
    """

    sampling: SamplingSettings = SamplingSettings()
    strength: float = 0.5
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    scheduler: str = "ddim"
    correct_frames: Optional[int] = None
    fix_strength: float = 0.8
    fix_prompt: Optional[str] = None
    mask_dilate: int = 8
    mask_feather: int = 8
    correction_size: Optional[tuple[int, int]] = None
    seed: int = 0
    dm_seed: Optional[int] = None
    fix_seed: Optional[int] = None

    def validate(self) -> "StorySettings":
        self.sampling.validate()
        # Ranges only: whether a t' leaves a step to run matters only where it is used (``story.validate_inputs``).
        check_range(self.strength, self.steps, "strength (t')")
        check_range(self.fix_strength, self.steps, FIX_STRENGTH)
        check_number(self.guidance_scale, "guidance_scale (the DM's CFG)", minimum=0)
        if self.correct_frames is not None and (isinstance(self.correct_frames, bool)
                                                or not isinstance(self.correct_frames, int) or self.correct_frames < 0):
            raise InvalidInputError(
                f"correct_frames must be None (all), 0 (ARM only) or a positive k; got {self.correct_frames!r}.")
        for name in ("mask_dilate", "mask_feather"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{name} must be a whole number of pixels >= 0, got {value!r}.")
        if self.correction_size is not None:
            size = tuple(self.correction_size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise InvalidInputError(f"correction_size must be (height, width) in whole pixels >= 1, got "
                                        f"{self.correction_size!r}.")
        for name in ("seed", "dm_seed", "fix_seed"):
            value = getattr(self, name)
            if value is not None:
                check_seed(value, name)
        return self

    def check_seeds(self, frames: int) -> None:
        """Every seed a story of ``frames`` frames uses fits a torch generator (seed + frames - 1 <= 2^64 - 1)."""
        for name in ("seed", "dm_seed", "fix_seed"):
            value = getattr(self, name)
            if value is not None and frame_seed(value, frames - 1) > MAX_SEED:
                raise InvalidInputError(
                    f"{name} {value} is too large for a story of {frames} frames: frame k uses {name} + k - 1, "
                    f"which must stay <= 2^64 - 1; use a {name} <= {MAX_SEED - frames + 1}.")

    def corrects(self, index: int) -> bool:
        """The ACDC #k rule: is frame ``index`` (0-based) corrected?"""
        return self.correct_frames is None or index < self.correct_frames

    def seeds(self, index: int) -> tuple[int, int]:
        """(ARM seed, DM seed) of frame ``index``, by ``frame_seed``; recorded per frame."""
        return frame_seed(self.seed, index), frame_seed(self.seed if self.dm_seed is None else self.dm_seed, index)


@dataclass(frozen=True)
class FrameRecord:
    """What happened to one frame. ``corrected_image`` is at the correction size, the rest at ARM size."""

    index: int
    story_prompt: str
    memory_prompt: Optional[str]        # the DM prompt y_i; None where the frame was not corrected
    arm_image: torch.Tensor              # x_i = D(v_i)
    corrected_image: torch.Tensor        # x~_i (== arm_image when the frame was not corrected)
    tokens_before: torch.Tensor          # v_i
    tokens_after: torch.Tensor           # v~_i = E(x~_i) (== v_i when not corrected)
    arm_seed: int
    dm_seed: Optional[int]               # None where no ACDC corrector ran on the frame
    corrected: bool
    fixed: bool
    seconds: dict = field(default_factory=dict)   # per-stage wall time
    context_frames: Optional[tuple[int, ...]] = None   # the earlier frames (0-based) the ARM saw; None: all
    memory_fallback: bool = False        # the memory LLM gave nothing usable: the DM prompt is the story sentence

    @property
    def tokens_kept(self) -> float:
        """Share of image tokens the correction left unchanged (1.0 when not corrected)."""
        return float((self.tokens_before == self.tokens_after).float().mean())

    def summary(self) -> dict:
        """A JSON-friendly record (no tensors but the token ids as lists)."""
        return {
            "index": self.index, "story_prompt": self.story_prompt, "memory_prompt": self.memory_prompt,
            "corrected": self.corrected, "fixed": self.fixed, "arm_seed": self.arm_seed,
            "dm_seed": self.dm_seed, "tokens_kept": round(self.tokens_kept, 4),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "memory_fallback": self.memory_fallback,
            "arm_saw_frames": frame_ranges(self.context_frames) if self.context_frames is not None else None,
            "tokens_before": self.tokens_before.tolist(), "tokens_after": self.tokens_after.tolist(),
        }


@dataclass(frozen=True)
class StoryState:
    """The story so far: its prompts, the ARM context (with corrected tokens swapped in) and the records."""

    prompts: tuple[str, ...]
    context: ARMContext = field(default_factory=ARMContext)
    records: tuple[FrameRecord, ...] = ()
    planned_memory: Optional[tuple] = None   # whole-story memory: every frame's MemoryAnswer, from one query

    @property
    def next_index(self) -> int:
        return len(self.records)

    @property
    def done(self) -> bool:
        return len(self.records) >= len(self.prompts)

    @property
    def memory_prompts(self) -> tuple[str, ...]:
        return tuple(r.memory_prompt for r in self.records if r.memory_prompt is not None)

    def with_frame(self, record: FrameRecord, tokens_in_context: torch.Tensor) -> "StoryState":
        return replace(self, context=self.context.append(record.story_prompt, tokens_in_context),
                       records=self.records + (record,))


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame on its way through the five steps: what every step knows about it so far.

    Made by ``story.generate`` (step 1) and handed from step to step (in ComfyUI, along the wired chain, as the
    LATENT dict carries samples and noise_mask together), each step returning a new one:
    ``decode`` sets ``arm_image`` (x_i) and ``image``; ``correct`` sets ``image`` (x~_i), ``corrected``,
    ``dm_seed`` and ``memory_prompt``, or records that ACDC #k leaves the frame alone (``corrected=False``);
    ``fix`` sets ``image`` and ``fixed``; ``reencode`` turns it into the next ``StoryState``.
    ``corrected`` is None while no ACDC corrector has decided: the pixels re-encoded are then whatever image
    the host gives (e.g. ComfyUI's own KSampler chain between decode and re-encode).
    Images are ``[1, 3, H, W]`` in [0, 1]; ``image`` is at the correction size once corrected.
    """

    state: StoryState                       # the story before this frame
    index: int                              # 0-based; the frame is state.prompts[index]
    tokens: torch.Tensor                    # v_i [1, tokens_per_image]
    arm_seed: int
    arm_image: Optional[torch.Tensor] = None    # x_i = D(v_i)
    image: Optional[torch.Tensor] = None        # the frame's pixels now
    corrected: Optional[bool] = None
    fixed: bool = False
    dm_seed: Optional[int] = None
    memory_prompt: Optional[str] = None
    seconds: tuple[tuple[str, float], ...] = ()   # (stage, wall seconds), in the order the stages ran
    context_frames: Optional[tuple[int, ...]] = None   # earlier frames (0-based) the ARM was conditioned on
    memory_fallback: bool = False           # the DM prompt is the story sentence: the memory LLM gave nothing usable

    @property
    def prompt(self) -> str:
        """The frame's story prompt u_i."""
        return self.state.prompts[self.index]

    @property
    def number(self) -> int:
        """The 1-based frame number users see."""
        return self.index + 1

    def timed(self, stage: str, seconds: float, **changes) -> "Frame":
        """A new frame with ``changes`` and ``seconds`` added to ``stage``'s time."""
        return replace(self, seconds=self.seconds + ((stage, float(seconds)),), **changes)

    def stage_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, value in self.seconds:
            out[stage] = out.get(stage, 0.0) + value
        return out

    def __repr__(self) -> str:
        state = {None: "undecided", True: "corrected", False: "left as the ARM made it"}[self.corrected]
        return (f"Frame({self.number} of {len(self.state.prompts)}, {state}{', fixed' if self.fixed else ''}, "
                f"arm seed {self.arm_seed}, dm seed {self.dm_seed})")


def frame_ranges(indices) -> str:
    """0-based frame indices as the 1-based ranges people read: (0, 4, 5, 6) -> "1, 5-7"; () -> "none"."""
    numbers = sorted(int(i) + 1 for i in indices)
    parts: list[list[int]] = []
    for n in numbers:
        if parts and parts[-1][1] == n - 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts) or "none"


def parse_frame_ranges(text: str) -> tuple[int, ...]:
    """The inverse of ``frame_ranges``: "1, 5-7" -> (0, 4, 5, 6)."""
    out: list[int] = []
    for part in ("" if text.strip() == "none" else text).split(","):
        if part.strip():
            first, _, last = part.strip().partition("-")
            out.extend(range(int(first) - 1, int(last or first)))
    return tuple(out)


def story_lines(text: str) -> tuple[str, ...]:
    """Story text -> one prompt per frame: one per line, blank lines and lines starting with # skipped.

    The one parser of story text (the CLI's prompts file, the nodes' story fields, ``new_story``).
    """
    return tuple(line.strip() for line in str(text or "").splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))


def new_story(prompts) -> StoryState:
    """Validate the story prompts (a sequence, or story text: see ``story_lines``) and return the empty state."""
    prompts = story_lines(prompts) if isinstance(prompts, str) else tuple(str(p).strip() for p in prompts)
    prompts = tuple(p for p in prompts if p)
    if not prompts:
        raise InvalidInputError(
            "the story is empty: give at least one prompt (one line per frame).")
    return StoryState(prompts=prompts)
