"""Metrics of the paper's benchmark, each scoring one item's frames from the frames (and the item's prompts) alone.

A story metric has a ``name``, the ``columns`` it scores and ``score(frames, item) -> {column: [value per
frame]}`` (frames [H, W, 3] uint8; NaN where a column does not apply to a frame, e.g. consistency with the previous
frame at frame 1). Every model a metric uses is loaded from a local folder or file; a missing one is a clear error
naming what to place where (nothing is downloaded).

  toy     the toy world's judge (``acdc_core.toy.judge``, as ``toy.evaluate.ToyJudgeMetric``): physically valid, consistent with frame 1, matches the
          prompt, share of prompt attributes -- for items of the toy world
  toy-video  the toy video world's judge (``acdc_core.toy.video_judge``, as ``toy.evaluate_video.ToyVideoJudgeMetric``):
          ok, subject, background, motion, imaging, moved -- for toy video clips
  clip    CLIP ViT (a local transformers folder): frame consistency with the previous frame (the paper's) and with
          frame 1, and CLIP-sim (text-image, on CLIPScore's scale: 100 x cosine, floored at 0)
  vbench-style  VBench's dimensions by its formulas on models you placed (``video.py``): subject consistency (DINO
          ViT-B/16), background consistency (CLIP ViT-B/32), aesthetic (LAION head on CLIP ViT-L/14), dynamic
          (RAFT flow; torchvision) -- each column only where its model was given

  imagereward  ImageReward, an external evaluator run in its own environment (``acdc_core.bench.external``: ``acdc
          bench external`` scores the frames, the merge reads the scores back)

Set metrics: FID against reference frames (``stats.frechet_distance``, ``acdc bench merge --fid``), in Inception,
CLIP or DINO features (``features.py``).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np

from ..errors import InvalidInputError

__all__ = ["StoryMetric", "METRICS", "load_metric"]

METRICS = ("toy", "toy-video", "clip", "vbench-style", "imagereward")


class StoryMetric(Protocol):
    name: str
    columns: tuple[str, ...]

    def score(self, frames: Sequence[np.ndarray], item) -> dict[str, list[float]]:
        ...


def load_metric(name: str, *, clip: Optional[str] = None, device: str = "cpu", dino: Optional[str] = None,
                clip_b32: Optional[str] = None, clip_l14: Optional[str] = None, aesthetic_head: Optional[str] = None,
                raft: Optional[str] = None, out=None) -> StoryMetric:
    """The metric called ``name`` (``METRICS``), its models loaded from where they were given."""
    if name == "toy":
        from ..toy.evaluate import ToyJudgeMetric

        return ToyJudgeMetric()
    if name == "toy-video":
        from ..toy.evaluate_video import ToyVideoJudgeMetric

        return ToyVideoJudgeMetric()
    if name == "clip":
        from .clip import ClipMetric

        if not clip:
            raise InvalidInputError("the clip metric needs a CLIP model: give --clip FOLDER, a transformers folder of "
                                    "CLIP (e.g. openai/clip-vit-large-patch14, downloaded once by you: config.json, "
                                    "model.safetensors, the tokenizer and preprocessor_config.json).")
        return ClipMetric.from_folder(clip, device=device)
    if name == "vbench-style":
        from .features import ClipImageFeatures, ClsFeatures
        from .video import Aesthetic, RaftFlow, VBenchStyleMetric

        if bool(clip_l14) != bool(aesthetic_head):
            raise InvalidInputError("the aesthetic dimension needs both --clip-l14 (CLIP ViT-L/14) and "
                                    "--aesthetic-head (LAION's linear head, safetensors).")
        return VBenchStyleMetric(
            dino=ClsFeatures.from_folder(dino, device) if dino else None,
            clip_b32=ClipImageFeatures.from_folder(clip_b32, device) if clip_b32 else None,
            aesthetic=Aesthetic.load(clip_l14, aesthetic_head, device) if clip_l14 else None,
            flow=RaftFlow.load(raft, device) if raft else None)
    if name == "imagereward":
        from ..bench.external import ExternalScores

        if out is None:
            raise InvalidInputError("the imagereward metric reads a benchmark's external scores: merge a benchmark.")
        return ExternalScores.from_bench(out, name)
    raise InvalidInputError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}.")
