"""Measure video ACDC in the toy video world: the paper's variants on held-out clips, every frame judged.

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

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..memory import MemoryModule, MemorySettings
from ..progress import ProgressFn, no_progress
from ..video import VideoSettings, VideoState, generate_frame, new_video, run_video
from . import video_judge
from .video_world import Clip

__all__ = ["VideoVariant", "VIDEO_VARIANTS", "SWEEP", "CHECKS", "run_clip", "judge_state", "evaluate_clips",
           "per_frame_rows"]

CHECKS = ("ok", "subject_ok", "background_ok", "motion_ok", "imaging_ok", "moved")


@dataclass(frozen=True)
class VideoVariant:
    name: str
    correct: str                 # "none", "first" or "all" (VideoSettings.correct)
    strength: Optional[float] = None   # t'; None: the settings' own


VIDEO_VARIANTS: tuple[VideoVariant, ...] = (
    VideoVariant("ARM only", "none"),
    VideoVariant("ACDC (first window)", "first"),
    VideoVariant("ACDC (every window)", "all"),
)
SWEEP: tuple[VideoVariant, ...] = (
    VideoVariant("ACDC (first window) t'=0.4", "first", 0.4),
    VideoVariant("ACDC (first window) t'=0.6", "first", 0.6),
)


def _no_memory() -> MemoryModule:
    # A toy clip's prompt is self-contained already (name, species, colour, place, time, motion): the DM gets it.
    return MemoryModule(None, MemorySettings(mode="off"))


def run_clip(clip: Clip, arm, corrector, settings: VideoSettings, variants: Sequence[VideoVariant] = VIDEO_VARIANTS,
             *, seed: int = 0, progress: ProgressFn = no_progress) -> dict[str, VideoState]:
    """Every variant on one clip with ``seed``: the first window's frames are written once and shared."""
    base = replace(settings, seed=seed, dm_seed=None, correct="none")
    state = new_video(clip.prompt, base)
    for i in range(base.window):
        progress("frame", i, base.frames)
        state = generate_frame(state, arm, progress=progress)
    out = {}
    for v in variants:
        s = replace(base, correct=v.correct, strength=v.strength if v.strength is not None else base.strength)
        out[v.name] = run_video(clip.prompt, arm, corrector if v.correct != "none" else None, _no_memory(), s,
                                start=replace(state, settings=s), progress=progress)
    return out


def context_frames(state: VideoState, arm) -> list[torch.Tensor]:
    """The frames that went back into the ARM's context: corrected windows re-encoded and decoded."""
    frames: list[torch.Tensor] = []
    for r in state.windows:
        frames += list(arm.decode(r.tokens_after)) if r.corrected else list(r.arm_frames)
    return frames


def judge_state(state: VideoState, clip: Clip, arm=None) -> dict[str, dict]:
    """The judge on the shown frames, and (given ``arm``) on what went back into the context."""
    out = {"shown": video_judge.judge_clip(torch.stack(state.output_frames()), clip)}
    if arm is not None:
        out["context"] = video_judge.judge_clip(torch.stack(context_frames(state, arm)), clip)
    return out


def _scores(verdict: dict) -> np.ndarray:
    """[frames, CHECKS] of 0/1, NaN where a check does not apply (``moved`` of frame 1 or of a standing clip)."""
    return np.array([[np.nan if f.get(c) is None else float(f[c]) for c in CHECKS] for f in verdict["frames"]])


def evaluate_clips(clips: Sequence[Clip], arm, corrector, settings: VideoSettings, *,
                   variants: Sequence[VideoVariant] = VIDEO_VARIANTS, seed_of: Callable[[int], int] = lambda k: 1000 + k,
                   on_clip: Callable[[int, dict], None] = lambda k, states: None) -> dict:
    """Run and judge every variant on every clip. Returns {variant: {"shown": [clips, frames, CHECKS],
    "context": [clips, frames, CHECKS], "seconds": {stage: total}, "frames": clips * frames}}."""
    out = {v.name: {"shown": [], "context": [], "seconds": {}, "frames": 0} for v in variants}
    for k, clip in enumerate(clips):
        states = run_clip(clip, arm, corrector, settings, variants, seed=seed_of(k))
        on_clip(k, states)
        for name, state in states.items():
            judged = judge_state(state, clip, arm)
            result = out[name]
            result["shown"].append(_scores(judged["shown"]))
            result["context"].append(_scores(judged["context"]))
            result["frames"] += len(state.frames)
            seconds = result["seconds"]
            for f in state.frames:
                seconds["arm"] = seconds.get("arm", 0.0) + f.seconds
            for r in state.windows:
                for stage, s in r.seconds.items():
                    seconds[stage] = seconds.get(stage, 0.0) + s
    for result in out.values():
        result["shown"], result["context"] = np.array(result["shown"]), np.array(result["context"])
    return out


def per_frame_rows(results: dict, which: str = "shown") -> list[dict]:
    """Rows: variant x check, columns f1..fN: the mean over clips (NaN-aware)."""
    rows = []
    for name, result in results.items():
        scores = result[which]
        for c, check in enumerate(CHECKS):
            row = {"variant": name, "check": check}
            with np.errstate(all="ignore"):
                means = np.nanmean(scores[:, :, c], axis=0) if np.isfinite(scores[:, :, c]).any() else \
                    np.full(scores.shape[1], np.nan)
            row.update({f"f{i + 1}": (None if np.isnan(m) else round(float(m), 3)) for i, m in enumerate(means)})
            rows.append(row)
    return rows
