"""Does a toy story ARM's physics fall with the frame index? ARM only, per frame, under one or more samplings.

    .venv/bin/python benchmarks/probe_toy_arm.py [--arm FOLDER] [--stories 50] [--seed 0]
        [--sampling '{"temperature": 0.7}' ...] [--name toy_arm_probe]

For each sampling (the ARM's defaults overridden by the JSON given; none: the defaults alone), runs
``train_arm.judged_runs`` on the first ``--stories`` held-out stories (story k seeded ``seed + 1000 k``, as the ARM's
model card): ARM only continuing from its own frames, the same seeds with the true earlier frames in the context
(oracle), and the VQ round trip of the truth. Writes ``results/<name>.md`` and ``.json``: per run and check, the rate
at each frame index, and two paired story-bootstrap differences (95%): ARM only's frames 4-6 minus frames 1-3 (does it
fall?) and ARM only minus oracle on frames 2-6 (does its own context make it worse than the truth does?); and, on
ARM only's frames 2-6, the share valid after a valid and after a broken previous frame (is a broken frame copied
on?). Also the true codes' teacher-forced loss per frame index (is frame 1 harder to get right than the rest?).
One thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_results  # noqa: E402

CHECKS = ("physical_valid", "consistent", "matches_prompt")


def _matrix(results: list[list[dict]], key: str) -> np.ndarray:
    return np.array([[float(frame[key]) for frame in story] for story in results])


def teacher_forced_loss(arm, stories) -> np.ndarray:
    """Mean cross-entropy (nats) of the true image codes under ``arm``, per frame index, given the true story."""
    from acdc_core.toy.train_arm import StoryTokens, _SceneCodes, image_code_loss

    tokens = StoryTokens(arm.tokenizer, arm.manifest, _SceneCodes(arm.vq))
    offset, codebook = arm.manifest.image_token_offset, arm.manifest.codebook_size
    per_story = []
    for story in stories:
        with torch.no_grad():
            loss = image_code_loss(arm.lm, tokens(story)[None], offset, codebook, reduction="none")
        per_story.append(loss.view(len(story.scenes), -1).mean(1).numpy())
    return np.mean(per_story, axis=0)


def main() -> None:
    from acdc_core.arm import load_arm
    from acdc_core.errors import InvalidInputError
    from acdc_core.stats import bootstrap_difference
    from acdc_core.toy import train_arm, world

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", type=Path, default=ROOT / "acdc_core" / "toy" / "models" / "arm")
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling", action="append", default=[],
                        help="JSON object of SamplingSettings fields to override (repeat for several)")
    parser.add_argument("--name", default="toy_arm_probe", help="results/<name>.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    arm = load_arm(args.arm)
    samplings = {}                                        # label -> the ARM's defaults with the overrides
    for text in args.sampling or ["{}"]:
        try:
            override = json.loads(text)
            sampling = replace(arm.default_sampling, **override).validate()
        except (json.JSONDecodeError, TypeError, InvalidInputError) as error:
            fields = ", ".join(arm.default_sampling.__dataclass_fields__)
            parser.error(f"--sampling {text!r} is not a JSON object of sampling fields ({fields}): {error}")
        samplings[json.dumps(override, sort_keys=True) if override else "defaults"] = sampling
    stories = world.split_stories("heldout", args.stories)
    rows = [{"sampling": "-", "run": "teacher forced", "check": "code loss (nats per code)",
             **{f"f{i + 1}": round(float(v), 4) for i, v in enumerate(teacher_forced_loss(arm, stories))}}]
    for label, sampling in samplings.items():
        start = time.perf_counter()
        runs = train_arm.judged_runs(arm, stories, sampling, args.seed)
        for run, results in runs.items():
            for key in CHECKS:
                rates = _matrix(results, key).mean(axis=0)
                rows.append({"sampling": label, "run": run, "check": key,
                             **{f"f{i + 1}": round(float(r), 3) for i, r in enumerate(rates)}})
        loop, oracle = (_matrix(runs["arm_only"], "physical_valid"), _matrix(runs["oracle_context"], "physical_valid"))
        later = bootstrap_difference(loop[:, 3:6], loop[:, 0:3], frames=slice(None))
        own = bootstrap_difference(loop, oracle, frames=slice(1, 6))
        for name, (mean, low, high) in (("ARM only valid, frames 4-6 minus 1-3", later),
                                        ("ARM only minus oracle valid, frames 2-6", own)):
            rows.append({"sampling": label, "run": "difference", "check": name,
                         "f1": f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"})
        # Does a broken frame beget broken frames? Frames 2-6 of ARM only, by the previous frame's verdict.
        after = {verdict: loop[:, 1:][loop[:, :-1] == verdict] for verdict in (1.0, 0.0)}
        for verdict, name in ((1.0, "ARM only valid after a valid frame"), (0.0, "ARM only valid after a broken frame")):
            rows.append({"sampling": label, "run": "persistence", "check": name,
                         "f1": f"{after[verdict].mean():.3f} of {after[verdict].size}" if after[verdict].size else "-"})
        print(f"{label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    path = write_results(args.name, rows, notes=(
        f"ARM `{args.arm.relative_to(ROOT) if args.arm.is_relative_to(ROOT) else args.arm}`, {len(stories)} held-out "
        f"stories, seeds {args.seed}+1000k; rates per frame index; differences: mean [95% paired story bootstrap] "
        f"(in column f1)."))
    print(path.read_text())


if __name__ == "__main__":
    main()
