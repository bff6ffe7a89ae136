"""Measure video ACDC in the toy video world: the paper's variants on held-out clips, every frame judged -- as
``acdc bench`` items (``toy_video_items``) scored by the ``toy-video`` metric (``ToyVideoJudgeMetric``);
``benchmarks/bench_toy_video.py`` runs it at scale.

The variants (the toy analogue of the paper's Table 3 and its t' study):
  ARM only                   the ARM's N frames, nothing corrected (``correct="none"``)
  ACDC (first window)        the first window of L frames corrected, generation continues from it (the paper)
  ACDC (every window)        every window corrected as it closes
  ACDC (first window) t'=x   the paper's setting at another t' (the sweep)
Every variant runs each clip with the same seeds and the same first window: the ARM writes frames 1..L once, and
each variant goes on from that state (``run_clip``), so frames 1..L of the ARM are identical in all of them and
every difference after them is the correction's.

What is judged (``video_judge``, from the pixels alone): ``shown``, the frames the video shows (the DM's output in
a corrected window, else the ARM's frames); and ``context``, what goes back into the ARM's context (the corrected
window re-encoded with the ARM's tokenizer, decoded; the ARM's own frames elsewhere).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..bench.items import BenchItem
from ..bench.variants import SWEEP, VIDEO_VARIANTS, VideoVariant, context_frames, run_video_variants
from ..progress import ProgressFn, no_progress
from ..video import VideoSettings, VideoState
from . import video_judge
from ..errors import InvalidInputError
from .video_world import Clip, split_clips

__all__ = ["VideoVariant", "VIDEO_VARIANTS", "SWEEP", "CHECKS", "run_clip", "judge_state", "toy_video_items",
           "toy_clip", "ToyVideoJudgeMetric"]

CHECKS = ("ok", "subject_ok", "background_ok", "motion_ok", "imaging_ok", "moved")


def run_clip(clip: Clip, arm, corrector, settings: VideoSettings, variants: Sequence[VideoVariant] = VIDEO_VARIANTS,
             *, seed: int = 0, progress: ProgressFn = no_progress) -> dict[str, VideoState]:
    """Every variant on one clip with ``seed`` (``bench.variants.run_video_variants`` on its prompt)."""
    return run_video_variants(clip.prompt, arm, corrector, settings, variants, seed=seed, progress=progress)


def toy_video_items(split: str = "heldout", count: int = 100, start: int = 0, seed_offset: int = 0) -> list[BenchItem]:
    """Clips ``start .. start + count - 1`` of the toy video world's ``split`` as video items; clip k runs with seed
    ``1000 + seed_offset + k`` (``benchmarks/bench_toy_video.py``'s seeds)."""
    if split != "heldout":
        raise InvalidInputError(f"the toy video world has one held-out split, 'heldout'; got {split!r}.")
    if count < 1 or start < 0 or seed_offset < 0:
        raise InvalidInputError("the toy video item set needs count >= 1, start >= 0 and seed offset >= 0.")
    clips = split_clips(split, start + count)[start:]
    return [BenchItem(f"clip-{split}-{start + k:04d}", (c.prompt,), 1000 + seed_offset + start + k,
                      (split, start + k), frames=c.frames, world="video") for k, c in enumerate(clips)]


_CLIPS: list[Clip] = []


def toy_clip(item) -> Clip:
    """The toy video world's Clip an item was made from."""
    global _CLIPS
    if item.toy is None or item.world != "video":
        raise InvalidInputError(f"item {item.id} is not a toy video clip (no toy field with world \"video\"): the toy "
                                "video judge cannot score it.")
    split, index = item.toy
    if split != "heldout":
        raise InvalidInputError(f"item {item.id}: the toy video world's clips are in 'heldout', not {split!r}.")
    if index >= len(_CLIPS):
        _CLIPS = split_clips(split, max(index + 1, 2 * len(_CLIPS)))
    clip = _CLIPS[index]
    if (clip.prompt,) != item.prompts or clip.frames != item.frames:
        raise InvalidInputError(f"item {item.id} says it is toy clip {index}, but its prompt or length differ from that "
                                "clip's.")
    return clip


class ToyVideoJudgeMetric:
    """The toy video judge as a benchmark metric (``acdc_core.metrics``): every frame read from its pixels alone and
    checked against the clip's prompt-level facts; ``moved`` NaN where it does not apply."""

    name = "toy-video"
    columns = CHECKS

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        table = _scores(video_judge.judge_clip(list(frames), toy_clip(item)))
        return {c: table[:, k].tolist() for k, c in enumerate(CHECKS)}


def judge_state(state: VideoState, clip: Clip, arm=None) -> dict[str, dict]:
    """The judge on the shown frames, and (given ``arm``) on what went back into the context."""
    out = {"shown": video_judge.judge_clip(torch.stack(state.output_frames()), clip)}
    if arm is not None:
        out["context"] = video_judge.judge_clip(torch.stack(context_frames(state, arm)), clip)
    return out


def _scores(verdict: dict) -> np.ndarray:
    """[frames, CHECKS] of 0/1, NaN where a check does not apply (``moved`` of frame 1 or of a standing clip)."""
    return np.array([[np.nan if f.get(c) is None else float(f[c]) for c in CHECKS] for f in verdict["frames"]])


