"""ACDC in the toy world: per frame index, the judge's scores for ARM only, ACDC #2, ACDC without memory
and ACDC on held-out stories (the toy analogue of the paper's Tables 1-2), bootstrap 95% intervals of
the differences that matter, and the time spent per stage. Writes results/toy_acdc.{md,json}.

    .venv/bin/python benchmarks/bench_toy_acdc.py [--split heldout|test] [--stories 100] [--start 0] [--seed-offset 0]

Stories: ``world.split_stories(split, start + stories)[start:]``; story k (counted from 0 in the split) runs with
seed ``1000 + seed_offset + k``. ``heldout`` is the development set every setting was chosen on; ``test``
(``world.TEST_SEED_START``) is kept apart: run it once, tune nothing on it (``--name toy_acdc_test``).
Every frame is judged twice: as the story shows it (the DM's output where corrected) and as it went back into the
ARM's context (re-encoded with the ARM's tokenizer, decoded): ``results/<name>_context.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acdc_core.toy import defaults, split_stories  # noqa: E402
from acdc_core.toy.evaluate import GRADED, METRICS, bootstrap_difference, evaluate, per_frame_table  # noqa: E402
from benchmarks._common import RESULTS, machine, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("heldout", "test"), default="heldout")
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first story (index in the split)")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="toy_acdc", help="results/<name>*.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stories = split_stories(args.split, args.start + args.stories)[args.start:]
    arm, corrector, llm = defaults.load_toy_models()
    started = time.perf_counter()

    def tick(k, name, state):
        if (k + 1) % 10 == 0:
            print(f"  {name}: {k + 1}/{len(stories)} stories ({time.perf_counter() - started:.0f} s)", flush=True)

    results = evaluate(stories, arm, corrector, llm, defaults.TOY_SETTINGS,
                       memory_settings=defaults.TOY_MEMORY_SETTINGS, on_story=tick,
                       seed_of=lambda k: 1000 + args.seed_offset + args.start + k)
    wall = time.perf_counter() - started

    rows = per_frame_table(results)
    context_rows = per_frame_table({name: {"scores": r["context"]} for name, r in results.items()})
    later = slice(3, None)  # frames 4-6
    comparisons = [("ACDC", "ARM only"), ("ACDC", "ACDC w/o memory"), ("ACDC #2", "ARM only"),
                   ("ACDC w/o memory", "ARM only")]
    diffs = []

    def metric_values(variant: str):
        yield from ((metric, results[variant]["scores"][:, :, m]) for m, metric in enumerate(METRICS))
        yield GRADED, results[variant][GRADED]
        yield from ((f"{metric} (context)", results[variant]["context"][:, :, m]) for m, metric in enumerate(METRICS))

    for a, b in comparisons:
        for (metric, va), (_, vb) in zip(metric_values(a), metric_values(b)):
            mean, low, high = bootstrap_difference(va, vb, frames=later)
            diffs.append({"difference": f"{a} - {b}", "metric": metric, "frames": "4-6", "mean": mean,
                          "ci95_low": low, "ci95_high": high, "excludes_zero": bool(low > 0 or high < 0)})
    # error accumulation: the ARM only's later frames against its early ones, per story (paired). Frame 1 is
    # consistent with itself by definition, so consistency compares frames 4-6 with frames 2-3.
    for metric, values in metric_values("ARM only"):
        if metric.endswith("(context)"):
            continue     # the ARM only's context is its own frames: the same as above
        first = 1 if metric == "consistent" else 0
        late, early = values[:, 3:].mean(1, keepdims=True), values[:, first:3].mean(1, keepdims=True)
        mean, low, high = bootstrap_difference(late, early, frames=slice(None))
        diffs.append({"difference": "ARM only: later - earlier frames", "metric": metric,
                      "frames": f"4-6 vs {first + 1}-3", "mean": mean, "ci95_low": low, "ci95_high": high,
                      "excludes_zero": bool(low > 0 or high < 0)})
    names = list(dict.fromkeys(stage for r in results.values() for stage in r["seconds"]))
    frames = len(stories) * 6
    stages = [{"variant": name,
               **{k: round(r["seconds"][k] / frames, 4) if k in r["seconds"] else "-" for k in names},
               "total": round(sum(r["seconds"].values()) / frames, 4)} for name, r in results.items()]
    notes = (f"{len(stories)} {args.split} stories (split indices {args.start}..{args.start + len(stories) - 1}) x 6 "
             f"frames, seeds {1000 + args.seed_offset + args.start}+k, judged from the pixels alone: the frame "
             f"the story shows (corrected where corrected). {GRADED}: share of the six prompt attributes read as "
             f"prompted. Settings: {defaults.TOY_SETTINGS}. Wall time {wall:.0f} s.")
    write_results(args.name, rows, notes)
    write_results(f"{args.name}_context", context_rows, "The same frames as they went back into the ARM's context "
                  "(corrected frames re-encoded with the ARM's tokenizer and decoded). " + notes)
    write_results(f"{args.name}_differences", diffs, "Paired bootstrap (2000 resamples of stories), 95% percentile "
                  "intervals: variants on frames 4-6, and the ARM only's frames 4-6 against its frames 1-3 "
                  "(consistency: 2-3, frame 1 being consistent with itself).")
    write_results(f"{args.name}_stage_seconds", stages, f"Mean seconds per frame and stage ({args.threads} thread(s)); "
                  "'-': the stage does not run in that variant.")
    (RESULTS / f"{args.name}_scores.json").write_text(json.dumps(
        {"machine": machine(), "metrics": list(METRICS),
         "scores": {k: v["scores"].tolist() for k, v in results.items()},
         GRADED: {k: np.round(v[GRADED], 4).tolist() for k, v in results.items()}}))
    for suffix in ("", "_context", "_differences", "_stage_seconds"):
        print((RESULTS / f"{args.name}{suffix}.md").read_text())


if __name__ == "__main__":
    main()
