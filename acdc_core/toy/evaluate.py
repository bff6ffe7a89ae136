"""Measure ACDC in the toy world: run the paper's variants on stories and judge every frame.

The variants (the toy analogue of the paper's Tables 1-2):
  ARM only          correct_frames=0: the ARM's frames, nothing corrected
  ACDC #2           only the first two frames corrected (memory on)
  ACDC w/o memory   every frame corrected, the DM gets the raw story sentence
  ACDC              every frame corrected, the DM gets the memory's self-contained prompt
Every variant runs each story with the same seed, so frame 1 of the ARM is the same in all of them.
The judged frame is what the story shows: the corrected frame where a frame was corrected, else the
ARM's frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np

from ..memory import MemoryModule, MemorySettings
from ..progress import ProgressFn, no_progress
from ..state import StorySettings, StoryState
from ..story import run_story
from .judge import ATTRIBUTES, judge_story
from .world import Story

METRICS = ("physical_valid", "consistent", "matches_prompt")
# Graded companion of matches_prompt: the share of the prompt's attributes (species, colour, place, time,
# position, pose) the judge reads as prompted. matches_prompt needs all six at once, which few 32 px frames
# of this ARM manage; the share shows the drift underneath.
GRADED = "prompt_attributes"


@dataclass(frozen=True)
class Variant:
    name: str
    correct_frames: Optional[int]   # None = all, 0 = ARM only
    memory: bool


VARIANTS: tuple[Variant, ...] = (
    Variant("ARM only", 0, False),
    Variant("ACDC #2", 2, True),
    Variant("ACDC w/o memory", None, False),
    Variant("ACDC", None, True),
)


def run_variant(prompts: Sequence[str], variant: Variant, arm, corrector, memory_backend, settings: StorySettings,
                memory_settings: MemorySettings = MemorySettings(), progress: ProgressFn = no_progress
                ) -> StoryState:
    """One story under one variant. ``settings.seed`` should be the story's own fixed seed."""
    mode = memory_settings.mode if variant.memory else "off"
    memory = MemoryModule(memory_backend if variant.memory else None, replace(memory_settings, mode=mode),
                          fit=corrector.fit_prompt)
    return run_story(prompts, arm, corrector if variant.correct_frames != 0 else None, memory,
                     replace(settings, correct_frames=variant.correct_frames), progress=progress)


def judged(story: Story, state: StoryState) -> list[dict]:
    """The judge's verdict on every frame the story shows."""
    return judge_story([r.corrected_image for r in state.records], story)


def context_images(state: StoryState, arm) -> list:
    """What went back into the ARM's context for every frame: a corrected frame re-encoded with the ARM's
    tokenizer, decoded (the ARM's own frame where nothing was corrected)."""
    return [arm.decode(r.tokens_after)[0] if r.corrected or r.fixed else r.arm_image for r in state.records]


def evaluate(stories: Sequence[Story], arm, corrector, memory_backend, settings: StorySettings, *,
             memory_settings: MemorySettings = MemorySettings(), variants: Sequence[Variant] = VARIANTS,
             seed_of: Callable[[int], int] = lambda k: 1000 + k,
             on_story: Callable[[int, str, StoryState], None] = lambda k, name, state: None) -> dict:
    """Run every variant on every story. Returns {variant: {"scores": array [stories, frames, metrics]
    of 0/1, GRADED: array [stories, frames] in [0, 1], "context": the scores of what went back into the ARM's
    context (``context_images``), "seconds": {stage: total}}}."""
    out: dict = {}
    for variant in variants:
        scores, graded, context, seconds = [], [], [], {}
        for k, story in enumerate(stories):
            state = run_variant(story.prompts, variant, arm, corrector, memory_backend,
                                replace(settings, seed=seed_of(k)), memory_settings)
            on_story(k, variant.name, state)
            verdicts = judged(story, state)
            scores.append([[float(v[m]) for m in METRICS] for v in verdicts])
            graded.append([1.0 - len(v["mismatched"]) / len(ATTRIBUTES) for v in verdicts])
            context.append([[float(v[m]) for m in METRICS] for v in judge_story(context_images(state, arm), story)])
            for record in state.records:
                for stage, s in record.seconds.items():
                    seconds[stage] = seconds.get(stage, 0.0) + s
        out[variant.name] = {"scores": np.array(scores), GRADED: np.array(graded), "context": np.array(context),
                             "seconds": seconds}
    return out


def bootstrap_difference(a: np.ndarray, b: np.ndarray, *, frames: slice, samples: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """Mean of (a - b) over ``frames`` and stories, with a 95% percentile interval from resampling
    stories (paired: the same stories and seeds under both variants). ``a``, ``b``: [stories, frames]; NaN marks a
    frame where the score does not apply (left out; a story with no score in ``frames`` is left out)."""
    d = a[:, frames] - b[:, frames]
    counts = np.isfinite(d).sum(axis=1)
    diff = np.where(np.isfinite(d), d, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]   # per story
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def per_frame_table(results: dict) -> list[dict]:
    """Rows: variant x metric (METRICS, then GRADED when present), columns: frame 1..N means."""
    rows = []
    for name, result in results.items():
        columns = [(metric, result["scores"][:, :, m]) for m, metric in enumerate(METRICS)]
        if GRADED in result:
            columns.append((GRADED, result[GRADED]))
        for metric, values in columns:
            row = {"variant": name, "metric": metric}
            row.update({f"f{i + 1}": float(values[:, i].mean()) for i in range(values.shape[1])})
            rows.append(row)
    return rows
