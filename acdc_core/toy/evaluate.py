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

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..bench.variants import VARIANTS as ALL_VARIANTS
from ..bench.variants import Variant, context_images, run_variant
from ..memory import MemorySettings
from ..metrics.stats import bootstrap_difference  # noqa: F401  (the benchmarks import it from here)
from ..state import StorySettings, StoryState
from ..metrics.toy import ToyJudgeMetric
from .judge import judge_story
from .world import Story

# The toy judge's 0/1 columns, and the graded companion of matches_prompt (``metrics.toy``).
METRICS, GRADED = ToyJudgeMetric.columns[:3], ToyJudgeMetric.columns[3]


# The paper's variants (``acdc_core.bench.variants``) but "DM alone": the toy tables compare the ARM's variants.
VARIANTS: tuple[Variant, ...] = tuple(v for v in ALL_VARIANTS if v.arm)


def judged(story: Story, state: StoryState) -> list[dict]:
    """The judge's verdict on every frame the story shows."""
    return judge_story([r.corrected_image for r in state.records], story)


def evaluate(stories: Sequence[Story], arm, corrector, memory_backend, settings: StorySettings, *,
             memory_settings: MemorySettings = MemorySettings(), variants: Sequence[Variant] = VARIANTS,
             seed_of: Callable[[int], int] = lambda k: 1000 + k,
             on_story: Callable[[int, str, StoryState], None] = lambda k, name, state: None) -> dict:
    """Run every variant on every story. Returns {variant: {"scores": array [stories, frames, metrics]
    of 0/1, GRADED: array [stories, frames] in [0, 1], "context": the scores of what went back into the ARM's
    context (``context_images``), "seconds": {stage: total}}}."""
    out: dict = {}
    judge = ToyJudgeMetric()
    for variant in variants:
        scores, graded, context, seconds = [], [], [], {}
        for k, story in enumerate(stories):
            state = run_variant(story.prompts, variant, arm, corrector, memory_backend,
                                replace(settings, seed=seed_of(k)), memory_settings)
            on_story(k, variant.name, state)
            shown = judge.score_story([r.corrected_image for r in state.records], story)
            scores.append(np.stack([shown[m] for m in METRICS], axis=1))
            graded.append(shown[GRADED])
            back = judge.score_story(context_images(state, arm), story)
            context.append(np.stack([back[m] for m in METRICS], axis=1))
            for record in state.records:
                for stage, s in record.seconds.items():
                    seconds[stage] = seconds.get(stage, 0.0) + s
        out[variant.name] = {"scores": np.array(scores), GRADED: np.array(graded), "context": np.array(context),
                             "seconds": seconds}
    return out


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
