"""Measure ACDC in the toy world: run the paper's variants on stories and judge every frame.

The variants (the toy analogue of the paper's Tables 1-2):
  ARM only          correct_frames=0: the ARM's frames, nothing corrected
  ACDC #2           only the first two frames corrected (memory on)
  ACDC w/o memory   every frame corrected, the DM gets the raw story sentence
  ACDC              every frame corrected, the DM gets the memory's self-contained prompt
Every variant runs each story with the same seed, so frame 1 of the ARM is the same in all of them.
The judged frame is what the story shows: the corrected frame where a frame was corrected, else the
ARM's frame. ``ToyJudgeMetric`` is the judge as ``acdc bench``'s "toy" metric, ``toy_items`` the toy stories as its
item set.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..bench.items import TOY_SPLITS, BenchItem
from ..bench.variants import VARIANTS as ALL_VARIANTS
from ..bench.variants import Variant, context_images, run_variant
from ..errors import InvalidInputError
from ..memory import MemorySettings
from ..state import StorySettings, StoryState
from ..stats import bootstrap_difference  # noqa: F401  (the benchmarks import it from here)
from .judge import ATTRIBUTES, judge_story
from .world import Story, render_story, split_stories


class ToyJudgeMetric:
    """The toy world's judge as a benchmark metric (``acdc_core.metrics``): it reads each frame from its pixels alone
    and checks it against the scenes the item's story was rendered from."""

    name = "toy"
    columns = ("physical_valid", "consistent", "matches_prompt", "prompt_attributes")

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        return self.score_story(frames, toy_story(item))

    def score_story(self, frames: Sequence, story) -> dict[str, list[float]]:
        """The columns of the frames of the toy world's ``story`` (a ``world.Story``); frames [H, W, 3] uint8 or
        [3, H, W] in [0, 1]. prompt_attributes: the share of the prompt's attributes (species, colour, place, time,
        position, pose) read as prompted -- matches_prompt needs all six at once, which few 32 px frames manage; the
        share shows the drift underneath."""
        verdicts = judge_story(list(frames), story)
        out = {c: [float(v[c]) for v in verdicts] for c in self.columns[:3]}
        out["prompt_attributes"] = [1.0 - len(v["mismatched"]) / len(ATTRIBUTES) for v in verdicts]
        return out


# The toy judge's 0/1 columns, and the graded companion of matches_prompt.
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


def toy_items(split: str = "heldout", count: int = 100, start: int = 0, seed_offset: int = 0) -> list[BenchItem]:
    """Stories ``start .. start + count - 1`` of the toy world's ``split``; story k runs with seed
    ``1000 + seed_offset + k`` (``benchmarks/bench_toy_acdc.py``'s seeds)."""
    if split not in TOY_SPLITS:
        raise InvalidInputError(f"the toy split is heldout or test, got {split!r}.")
    if count < 1 or start < 0 or seed_offset < 0:
        raise InvalidInputError("the toy item set needs count >= 1, start >= 0 and seed offset >= 0.")
    stories = split_stories(split, start + count)[start:]
    return [BenchItem(f"{split}-{start + k:04d}", tuple(s.prompts), 1000 + seed_offset + start + k,
                      (split, start + k)) for k, s in enumerate(stories)]


_SPLITS: dict[str, list] = {}


def _story_at(split: str, index: int) -> Story:
    """Story ``index`` of ``split``, the split's stories sampled once per process (``split_stories`` is a prefix
    of itself: its first k stories do not depend on how many are asked for)."""
    stories = _SPLITS.get(split, [])
    if index >= len(stories):
        stories = _SPLITS[split] = split_stories(split, max(index + 1, 2 * len(stories)))
    return stories[index]


def toy_reference(item) -> list[torch.Tensor]:
    """The toy world's true frames of ``item`` ([3, H, W] in [0, 1]): FID's reference (``bench.reference``)."""
    return [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in render_story(toy_story(item))]


def toy_story(item) -> Story:
    """The toy world's Story an item was made from (its scenes: what the judge checks frames against)."""
    if item.toy is None:
        raise InvalidInputError(f"item {item.id} is not a toy-world story (no 'toy' field): the toy judge cannot "
                                "score it.")
    split, index = item.toy
    story = _story_at(split, index)
    if tuple(story.prompts) != item.prompts:
        raise InvalidInputError(f"item {item.id} says it is toy story {index} of {split}, but its prompts differ "
                                "from that story's.")
    return story
