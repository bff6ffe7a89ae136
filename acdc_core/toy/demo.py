"""The README's main job: one toy story under ARM only / ACDC without memory / ACDC, in one picture a
person reads at a glance (rows: variants, columns: frames, prompts underneath) plus the judge's table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..images import to_pil
from ..memory import MemorySettings
from ..progress import ProgressFn, no_progress
from ..report import strip_image
from ..state import StorySettings
from .evaluate import METRICS, VARIANTS, judged, run_variant
from .rewriter import parse_sentence
from .world import Scene, Story

DEMO_VARIANTS = tuple(v for v in VARIANTS if v.name in ("ARM only", "ACDC w/o memory", "ACDC"))
_MARK = {True: "yes", False: "NO"}


def story_from_prompts(prompts: Sequence[str]) -> Optional[Story]:
    """A Story (with the scenes the judge checks against) from prompts in the toy world's words, or None
    when they do not pin down every attribute of every frame."""
    state: dict = {}
    scenes = []
    for prompt in prompts:
        state = parse_sentence(prompt, state)
        try:
            scenes.append(Scene(**state))
        except (TypeError, InvalidInputError):   # an attribute never said, or a word outside the world
            return None
    return Story(tuple(scenes), tuple(prompts))


def judge_table(story: Story, verdicts: dict[str, list[dict]]) -> str:
    """Markdown: a row per variant and check, a column per frame."""
    n = len(story.prompts)
    lines = ["| variant | check | " + " | ".join(f"frame {i + 1}" for i in range(n)) + " | total |",
             "|---|---|" + "---|" * (n + 1)]
    for name, frames in verdicts.items():
        for metric in METRICS:
            marks = [_MARK[bool(f[metric])] for f in frames]
            lines.append(f"| {name} | {metric.replace('_', ' ')} | " + " | ".join(marks)
                         + f" | {sum(bool(f[metric]) for f in frames)}/{n} |")
    return "\n".join(lines)


def run_demo(out: Path, prompts: Sequence[str], arm, corrector, llm, settings: StorySettings,
             memory_settings: MemorySettings = MemorySettings(), *, story: Optional[Story] = None,
             progress: ProgressFn = no_progress) -> dict:
    """Run the demo variants on ``prompts``; write strip.png, judge.md, run.json and frames/ under ``out``.
    ``story`` (the true scenes) lets the judge check the frames; without it they are not judged."""
    judge = story is not None
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    states, verdicts = {}, {}
    for variant in DEMO_VARIANTS:
        progress("variant", len(states), len(DEMO_VARIANTS))
        state = run_variant(prompts, variant, arm, corrector, llm, settings, memory_settings, progress=progress)
        states[variant.name] = state
        slug = variant.name.lower().replace(" ", "_").replace("/", "")
        for r in state.records:
            to_pil(r.corrected_image).save(out / "frames" / f"{slug}_{r.index + 1:02d}.png")
        if judge:
            verdicts[variant.name] = judged(story, state)

    def label(name: str) -> str:
        if not judge:
            return name
        counts = {m: sum(bool(f[m]) for f in verdicts[name]) for m in METRICS}
        n = len(prompts)
        return (f"{name} - valid {counts['physical_valid']}/{n}, consistent {counts['consistent']}/{n}, "
                f"matches prompt {counts['matches_prompt']}/{n}")

    rows = [(label(name), [r.corrected_image for r in state.records]) for name, state in states.items()]
    strip_image(rows, list(prompts), cell=128).save(out / "strip.png")
    table = judge_table(story, verdicts) if judge else "(prompts outside the toy world: not judged)"
    (out / "judge.md").write_text(table + "\n")
    record = {
        "prompts": list(prompts),
        "memory_prompts": list(states["ACDC"].memory_prompts),
        "settings": repr(settings),
        "variants": {name: {"frames": [r.summary() for r in state.records],
                            "judge": [{k: (v if not isinstance(v, (np.bool_, np.integer)) else v.item())
                                       for k, v in f.items()} for f in verdicts.get(name, [])]}
                     for name, state in states.items()},
    }
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return {"table": table, "states": states, "verdicts": verdicts}
