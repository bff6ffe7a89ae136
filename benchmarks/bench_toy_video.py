"""Video ACDC in the toy video world: per frame index and judged dimension, ARM only, ACDC with the first window
corrected (the paper's setting) and ACDC with every window corrected on held-out clips, the t' sweep 0.4 / 0.5 /
0.6, paired bootstrap 95% intervals of the differences the paper claims, and the seconds per frame and stage.
Writes results/toy_video*.{md,json}.

    .venv/bin/python benchmarks/bench_toy_video.py [--clips 100] [--start 0] [--seed-offset 0] [--workers 2]

Clips are the held-out split's clips ``start .. start + clips - 1`` (``video_world.split_clips``); clip k (counted
from 0 in the whole split) runs with ARM seed ``1000 + seed_offset + k``. ``--workers`` processes of one thread
each share the clips (results are identical to one process: every clip has its own seeds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acdc_core.toy import defaults  # noqa: E402
from acdc_core.toy.evaluate import bootstrap_difference  # noqa: E402
from acdc_core.toy.evaluate_video import CHECKS, SWEEP, VIDEO_VARIANTS, evaluate_clips, per_frame_rows  # noqa: E402
from acdc_core.toy.video_world import WINDOW, split_clips  # noqa: E402
from benchmarks._common import RESULTS, machine, write_results  # noqa: E402

ARM, FIRST, ALL = (v.name for v in VIDEO_VARIANTS)


def _shard(job: tuple[list[int], int, int, bool]) -> dict:
    """One worker: evaluate the clips with these split indices (one torch thread)."""
    import torch

    torch.set_num_threads(1)
    indices, start, seed_offset, sweep = job
    clips = split_clips("heldout", start + max(indices) + 1)
    arm, corrector = defaults.load_toy_video_models()
    variants = VIDEO_VARIANTS + (SWEEP if sweep else ())
    done = [0]
    t0 = time.perf_counter()

    def tick(k, states):
        done[0] += 1
        if done[0] % 5 == 0:
            print(f"  worker {indices[0] % 997}: {done[0]}/{len(indices)} clips ({time.perf_counter() - t0:.0f} s)",
                  flush=True)

    chosen = [clips[start + i] for i in indices]
    seeds = {j: 1000 + seed_offset + start + i for j, i in enumerate(indices)}
    return {"indices": indices, "results": evaluate_clips(chosen, arm, corrector, defaults.TOY_VIDEO_SETTINGS,
                                                          variants=variants, seed_of=seeds.__getitem__, on_clip=tick)}


def merge(parts: list[dict]) -> dict:
    """The workers' results in clip order."""
    order = np.argsort(np.concatenate([p["indices"] for p in parts]))
    names = list(parts[0]["results"])
    out = {}
    for name in names:
        rs = [p["results"][name] for p in parts]
        seconds: dict = {}
        for r in rs:
            for stage, s in r["seconds"].items():
                seconds[stage] = seconds.get(stage, 0.0) + s
        out[name] = {"shown": np.concatenate([r["shown"] for r in rs])[order],
                     "context": np.concatenate([r["context"] for r in rs])[order],
                     "seconds": seconds, "frames": sum(r["frames"] for r in rs)}
    return out


def differences(results: dict, which: str) -> list[dict]:
    later = slice(WINDOW, None)
    rows = []

    def add(check, label, frames_label, a, b, frames):
        mean, low, high = bootstrap_difference(a, b, frames=frames)
        rows.append({"pixels": which, "difference": label, "check": check, "frames": frames_label,
                     "mean": round(mean, 4), "ci95_low": round(low, 4), "ci95_high": round(high, 4),
                     "excludes_zero": bool(low > 0 or high < 0)})

    n = results[ARM][which].shape[1]
    for c, check in enumerate(CHECKS):
        values = {name: r[which][:, :, c] for name, r in results.items()}
        for name in values:
            if name != ARM:
                add(check, f"{name} - ARM only", f"{WINDOW + 1}-{n}", values[name], values[ARM], later)
        # claim 1: the ARM only's frames past the first window against its first window (paired per clip)
        arm = values[ARM]
        with np.errstate(all="ignore"):
            late = np.array([[np.nanmean(row[WINDOW:]) if np.isfinite(row[WINDOW:]).any() else np.nan] for row in arm])
            early = np.array([[np.nanmean(row[1:WINDOW]) if np.isfinite(row[1:WINDOW]).any() else np.nan] for row in arm])
        add(check, "ARM only: frames past L - frames 2..L", f"{WINDOW + 1}-{n} vs 2-{WINDOW}", late, early, slice(None))
        last = slice(n - WINDOW, None)
        add(check, "ARM only: last window - frames 2..L", f"{n - WINDOW + 1}-{n} vs 2-{WINDOW}",
            np.array([[np.nanmean(r[last])] for r in arm]), early, slice(None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first held-out clip (index in the split)")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true", help="skip the t' = 0.4 / 0.6 variants")
    parser.add_argument("--name", default="toy_video", help="results/<name>*.md")
    args = parser.parse_args()

    started = time.perf_counter()
    shards = [list(range(i, args.clips, args.workers)) for i in range(args.workers)]
    jobs = [(s, args.start, args.seed_offset, not args.no_sweep) for s in shards if s]
    if len(jobs) == 1:
        parts = [_shard(jobs[0])]
    else:
        with ProcessPoolExecutor(len(jobs)) as pool:
            parts = list(pool.map(_shard, jobs))
    results = merge(parts)
    wall = time.perf_counter() - started

    s = defaults.TOY_VIDEO_SETTINGS
    where = (f"{args.clips} held-out clips (split indices {args.start}..{args.start + args.clips - 1}) x {s.frames} "
             f"frames, window L = {s.window}, ARM seeds {1000 + args.seed_offset + args.start}+k, t' {s.strength}, "
             f"{s.steps}-step schedule, DM CFG {s.guidance_scale}; judged by toy.video_judge from the pixels alone.")
    write_results(args.name, per_frame_rows(results, "shown"),
                  f"Per frame index: the share of frames that pass each check, on the frames the video shows "
                  f"(corrected where corrected). {where} Wall time {wall:.0f} s, {args.workers} worker(s).")
    write_results(f"{args.name}_context", per_frame_rows(results, "context"),
                  "The same on what goes back into the ARM's context: corrected windows re-encoded with the ARM's "
                  f"tokenizer and decoded (ARM frames elsewhere). {where}")
    write_results(f"{args.name}_differences", differences(results, "shown") + differences(results, "context"),
                  "Paired bootstrap (2000 resamples of clips), 95% percentile intervals; 'moved' (dynamic degree) "
                  "leaves out frame 1 and clips whose animal stands still.")
    stages = []
    for name, r in results.items():
        per = {k: round(v / r["frames"], 4) for k, v in r["seconds"].items()}
        stages.append({"variant": name, **per, "total": round(sum(r["seconds"].values()) / r["frames"], 4)})
    write_results(f"{args.name}_stage_seconds", stages,
                  "Mean seconds per frame and stage (one thread per worker); decode/memory/correct/encode are per "
                  "window, divided by all frames. The first window's ARM frames are shared by all variants and "
                  "counted in each.")
    (RESULTS / f"{args.name}_scores.json").write_text(json.dumps(
        {"machine": machine(), "checks": list(CHECKS), "args": vars(args),
         "scores": {k: {w: np.where(np.isnan(v[w]), -1, v[w]).astype(int).tolist() for w in ("shown", "context")}
                    for k, v in results.items()}}))
    for suffix in ("", "_differences", "_stage_seconds"):
        print((RESULTS / f"{args.name}{suffix}.md").read_text())


if __name__ == "__main__":
    main()
