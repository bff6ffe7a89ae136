"""The toy world's judge as a benchmark metric: it reads each frame from its pixels alone and checks it against the
scenes the item's story was rendered from (``acdc_core.toy.judge``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["ToyJudgeMetric"]


class ToyJudgeMetric:
    name = "toy"
    columns = ("physical_valid", "consistent", "matches_prompt", "prompt_attributes")

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        from ..bench.items import toy_story

        return self.score_story(frames, toy_story(item))

    def score_story(self, frames: Sequence, story) -> dict[str, list[float]]:
        """The columns of the frames of the toy world's ``story`` (a ``world.Story``); frames [H, W, 3] uint8 or
        [3, H, W] in [0, 1]. prompt_attributes: the share of the prompt's attributes (species, colour, place, time,
        position, pose) read as prompted -- matches_prompt needs all six at once, which few 32 px frames manage; the
        share shows the drift underneath."""
        from ..toy.judge import ATTRIBUTES, judge_story

        verdicts = judge_story(list(frames), story)
        out = {c: [float(v[c]) for v in verdicts] for c in self.columns[:3]}
        out["prompt_attributes"] = [1.0 - len(v["mismatched"]) / len(ATTRIBUTES) for v in verdicts]
        return out
