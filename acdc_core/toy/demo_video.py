"""``acdc demo --video``: one held-out toy clip under ARM only and ACDC (first window corrected, the paper's setting),
in one animation a person reads at a glance — the two side by side, the frame index above each, the corrected window
framed in green, the judge's verdict under every frame — plus the judge's table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..images import to_pil
from ..progress import ProgressFn, no_progress
from ..report import save_animation, side_by_side, strip_image
from ..video import VideoSettings
from .evaluate_video import VIDEO_VARIANTS, judge_state, run_clip
from .video_world import Clip

DEMO_VIDEO_VARIANTS = VIDEO_VARIANTS[:2]          # ARM only, ACDC (first window)
SUMMARY_KEYS = ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
                "imaging_quality")
_FAILED = {"subject_ok": "subject", "background_ok": "background", "motion_ok": "motion", "imaging_ok": "imaging"}


def _note(frame: dict) -> str:
    failed = [word for key, word in _FAILED.items() if not frame[key]]
    return "judge: ok" if not failed else "judge: " + ", ".join(failed) + " wrong"


def judge_table(verdicts: dict[str, dict], window: int) -> str:
    """Markdown: per variant and check, the frames passing in each window and overall; then the clip's scores."""
    n = len(next(iter(verdicts.values()))["frames"])
    spans = [(a, min(a + window, n)) for a in range(0, n, window)]
    head = " | ".join(f"frames {a + 1}-{b}" for a, b in spans)
    lines = [f"| variant | check | {head} | all |", "|---|---|" + "---|" * (len(spans) + 1)]
    for name, verdict in verdicts.items():
        frames = verdict["frames"]
        for key in ("ok",) + tuple(_FAILED):
            cells = [f"{sum(bool(f[key]) for f in frames[a:b])}/{b - a}" for a, b in spans]
            lines.append(f"| {name} | {key.replace('_ok', '') if key != 'ok' else 'every check'} | "
                         + " | ".join(cells) + f" | {sum(bool(f[key]) for f in frames)}/{n} |")
    lines += ["", "| variant | " + " | ".join(k.replace("_", " ") for k in SUMMARY_KEYS) + " |",
              "|---|" + "---|" * len(SUMMARY_KEYS)]
    for name, verdict in verdicts.items():
        s = verdict["summary"]
        lines.append(f"| {name} | " + " | ".join("-" if s.get(k) is None else f"{s[k]:.2f}" for k in SUMMARY_KEYS)
                     + " |")
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run_video_demo(out: Path, clip: Clip, arm, corrector, settings: VideoSettings, *, seed: int,
                   fps: float = 6.0, progress: ProgressFn = no_progress) -> dict:
    """Run ARM only and ACDC on ``clip`` with ``seed``; write side_by_side.webp, strip.png, judge.md, run.json and
    frames/ under ``out``; returns {"table", "states", "verdicts"}."""
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    states = run_clip(clip, arm, corrector, settings, DEMO_VIDEO_VARIANTS, seed=seed, progress=progress)
    verdicts = {name: judge_state(state, clip)["shown"] for name, state in states.items()}
    columns, marked, notes = [], [], []
    for name, state in states.items():
        frames = state.output_frames()
        slug = "arm_only" if state.settings.correct == "none" else "acdc"
        for k, frame in enumerate(frames):
            to_pil(frame).save(out / "frames" / f"{slug}_{k + 1:02d}.png")
        columns.append((name, frames))
        marked.append(state.corrected_flags())
        notes.append([_note(f) for f in verdicts[name]["frames"]])
    save_animation(out / "side_by_side.webp", side_by_side(columns, cell=192, marked=marked, notes=notes), fps=fps)
    picks = list(range(0, settings.frames, 3))
    strip_image([(name, [frames[k] for k in picks]) for name, frames in columns],
                [f"frame {k + 1}" + (" (corrected)" if marked[1][k] else "") for k in picks],
                cell=96).save(out / "strip.png")
    table = judge_table(verdicts, settings.window)
    (out / "judge.md").write_text(f"{clip.prompt}\n\n{table}\n")
    record = {"identity": {"command": "demo --video"}, "prompt": clip.prompt, "clip": _plain(vars(clip)), "seed": seed,
              "settings": repr(settings),
              "variants": {name: {**state.summary(), "judge": _plain(verdicts[name])} for name, state in states.items()}}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return {"table": table, "states": states, "verdicts": verdicts}
