"""ACDC in the toy world: per frame index, the judge's scores for ARM only, ACDC #2, ACDC without memory
and ACDC on held-out stories (the toy analogue of the paper's Tables 1-2), bootstrap 95% intervals of
the differences that matter, and the time spent per stage. Writes results/toy_acdc.{md,json}.

    .venv/bin/python benchmarks/bench_toy_acdc.py [--stories 100]
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
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stories = split_stories("heldout", args.stories)
    arm, corrector, llm = defaults.load_toy_models()
    started = time.perf_counter()

    def tick(k, name, state):
        if (k + 1) % 10 == 0:
            print(f"  {name}: {k + 1}/{len(stories)} stories ({time.perf_counter() - started:.0f} s)", flush=True)

    results = evaluate(stories, arm, corrector, llm, defaults.TOY_SETTINGS,
                       memory_settings=defaults.TOY_MEMORY_SETTINGS, on_story=tick)
    wall = time.perf_counter() - started

    rows = per_frame_table(results)
    later = slice(3, None)  # frames 4-6
    comparisons = [("ACDC", "ARM only"), ("ACDC", "ACDC w/o memory"), ("ACDC #2", "ARM only"),
                   ("ACDC w/o memory", "ARM only")]
    diffs = []

    def metric_values(variant: str):
        yield from ((metric, results[variant]["scores"][:, :, m]) for m, metric in enumerate(METRICS))
        yield GRADED, results[variant][GRADED]

    for a, b in comparisons:
        for (metric, va), (_, vb) in zip(metric_values(a), metric_values(b)):
            mean, low, high = bootstrap_difference(va, vb, frames=later)
            diffs.append({"difference": f"{a} - {b}", "metric": metric, "frames": "4-6", "mean": mean,
                          "ci95_low": low, "ci95_high": high, "excludes_zero": bool(low > 0 or high < 0)})
    # error accumulation: the ARM only's later frames against its early ones, per story (paired). Frame 1 is
    # consistent with itself by definition, so consistency compares frames 4-6 with frames 2-3.
    for metric, values in metric_values("ARM only"):
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
    notes = (f"{len(stories)} held-out stories x 6 frames, seeds 1000+k, judged from the pixels alone: the frame "
             f"the story shows (corrected where corrected). {GRADED}: share of the six prompt attributes read as "
             f"prompted. Settings: {defaults.TOY_SETTINGS}. Wall time {wall:.0f} s.")
    write_results("toy_acdc", rows, notes)
    write_results("toy_acdc_differences", diffs, "Paired bootstrap (2000 resamples of stories), 95% percentile "
                  "intervals: variants on frames 4-6, and the ARM only's frames 4-6 against its frames 1-3 "
                  "(consistency: 2-3, frame 1 being consistent with itself).")
    write_results("toy_acdc_stage_seconds", stages, f"Mean seconds per frame and stage ({args.threads} thread(s)); "
                  "'-': the stage does not run in that variant.")
    (RESULTS / "toy_acdc_scores.json").write_text(json.dumps(
        {"machine": machine(), "metrics": list(METRICS),
         "scores": {k: v["scores"].tolist() for k, v in results.items()},
         GRADED: {k: np.round(v[GRADED], 4).tolist() for k, v in results.items()}}))
    for path in ("toy_acdc.md", "toy_acdc_differences.md", "toy_acdc_stage_seconds.md"):
        print((RESULTS / path).read_text())


if __name__ == "__main__":
    main()
