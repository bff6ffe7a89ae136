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
from .errors import InvalidInputError


@dataclass(frozen=True)
class StorySettings:
    """Everything that decides a story's frames, apart from the models and the prompts.

    strength is SDEdit's t' (the fraction of diffusion time the ARM frame is noised to, in (0, 1]);
    steps is the length of the full DDIM schedule of which only the steps at or below t' run.
    correct_frames: None corrects every frame (ACDC); k corrects only the first k (the paper's ACDC #k);
    0 is the ARM alone. correction_size: (H, W) the DM works at; None = the DM's native size.
    """

    sampling: SamplingSettings = SamplingSettings()
    strength: float = 0.5
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    correct_frames: Optional[int] = None
    fix_strength: float = 0.8
    fix_prompt: Optional[str] = None
    mask_dilate: int = 8
    mask_feather: int = 8
    correction_size: Optional[tuple[int, int]] = None
    seed: int = 0

    def validate(self) -> "StorySettings":
        self.sampling.validate()
        for name in ("strength", "fix_strength"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise InvalidInputError(
                    f"{name} (t') must be in (0, 1]: it is the fraction of diffusion time the frame is "
                    f"noised to; got {value}. The paper uses 0.4-0.5 for images.")
        if self.steps < 1:
            raise InvalidInputError(f"steps must be at least 1, got {self.steps}.")
        for name in ("strength", "fix_strength"):
            # SDEdit runs the scheduled steps at or below t': floor(t' * steps) of them.
            if getattr(self, name) * self.steps < 1:
                raise InvalidInputError(
                    f"{name} {getattr(self, name)} with {self.steps} steps leaves no denoising step to run; "
                    f"use at least {int(1 / getattr(self, name)) + 1} steps or a higher {name}.")
        if self.guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be >= 0, got {self.guidance_scale}.")
        if self.correct_frames is not None and self.correct_frames < 0:
            raise InvalidInputError(
                f"correct_frames must be None (all), 0 (ARM only) or a positive k; got {self.correct_frames}.")
        if self.mask_dilate < 0 or self.mask_feather < 0:
            raise InvalidInputError("mask_dilate and mask_feather must be >= 0 pixels.")
        return self

    def corrects(self, index: int) -> bool:
        return self.correct_frames is None or index < self.correct_frames

    def seeds(self, index: int) -> tuple[int, int]:
        """(ARM seed, DM seed) of frame ``index``: the base seed plus the frame index, recorded per frame."""
        return self.seed + index, self.seed + index


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
    dm_seed: int
    corrected: bool
    fixed: bool
    seconds: dict = field(default_factory=dict)   # per-stage wall time

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
            "tokens_before": self.tokens_before.tolist(), "tokens_after": self.tokens_after.tolist(),
        }


@dataclass(frozen=True)
class StoryState:
    """The story so far: its prompts, the ARM context (with corrected tokens swapped in) and the records."""

    prompts: tuple[str, ...]
    context: ARMContext = field(default_factory=ARMContext)
    records: tuple[FrameRecord, ...] = ()
    planned_memory: Optional[tuple[str, ...]] = None   # whole-story memory: all DM prompts, from one query

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

    def truncated(self, frames: int) -> "StoryState":
        """The state after the first ``frames`` frames (to resume from an earlier frame, e.g. after a fix).

        The cache memo is shared, so the ARM reuses the prefix it already computed.
        """
        if not 0 <= frames <= len(self.records):
            raise InvalidInputError(f"cannot go back to frame {frames}: the story has {len(self.records)}.")
        context = replace(self.context, chunks=self.context.chunks[:frames])
        return replace(self, context=context, records=self.records[:frames])


def new_story(prompts) -> StoryState:
    """Validate the story prompts and return the empty state."""
    if isinstance(prompts, str):
        prompts = [p for p in prompts.splitlines()]
    prompts = tuple(str(p).strip() for p in prompts)
    prompts = tuple(p for p in prompts if p)
    if not prompts:
        raise InvalidInputError(
            "the story is empty: give at least one prompt (one line per frame).")
    return StoryState(prompts=prompts)
