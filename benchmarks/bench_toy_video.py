"""Video ACDC in the toy video world, through ``acdc bench``: per frame index and judged dimension, ARM only, ACDC
with the first window corrected (the paper's setting) and ACDC with every window corrected on held-out clips, the
t' sweep 0.4 / 0.6, paired bootstrap 95% intervals of the differences the paper claims, and the seconds per frame
and stage.

    .venv/bin/python benchmarks/bench_toy_video.py [--clips 100] [--start 0] [--seed-offset 0] [--workers 2]
        [--no-sweep | --variants V ...] [--keep DIR] [--name toy_video]

Runs ``acdc bench run --toy-video heldout`` (one shard per worker, one thread each), then ``acdc bench merge`` with
the toy video judge, and copies the merged tables to ``results/<name>.md`` (per frame index, the frames the video
shows: mean [95% bootstrap interval]), ``<name>_context.md`` (what went back into the ARM's context),
``<name>_differences.md`` and ``<name>_context_differences.md`` (each ACDC variant against ARM only on frames
L+1..N, every window against the first, the sweep against t' = 0.5, and each variant's frames past L against its
frames 2..L), ``<name>_cost.md`` and ``<name>.json``. Clip k of the held-out split (counted from 0) runs with ARM
seed ``1000 + seed_offset + k``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acdc_core.bench.variants import SWEEP, VIDEO_VARIANTS  # noqa: E402
from acdc_core.toy import defaults  # noqa: E402
from benchmarks._common import run_acdc_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first held-out clip (index in the split)")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes, one shard and one thread each")
    parser.add_argument("--no-sweep", action="store_true", help="skip the t' = 0.4 / 0.6 variants")
    parser.add_argument("--variants", nargs="+", help="these video variants instead (e.g. the sweep alone with "
                        "\"ACDC (first window)\" to compare it with)")
    parser.add_argument("--keep", type=Path, help="the bench folder (default: a temporary one, removed)")
    parser.add_argument("--name", default="toy_video", help="results/<name>*.md")
    args = parser.parse_args()

    variants = args.variants or [v.name for v in VIDEO_VARIANTS + (() if args.no_sweep else SWEEP)]
    s = defaults.TOY_VIDEO_SETTINGS
    run = ["--toy-video", "heldout", "--count", str(args.clips), "--start", str(args.start), "--seed-offset",
           str(args.seed_offset), "--variants", *variants]
    run_acdc_bench(run, workers=args.workers, name=args.name, keep=args.keep, note=(
        f"{args.clips} held-out clips (split indices {args.start}..{args.start + args.clips - 1}) x {s.frames} frames, "
        f"window L = {s.window}, ARM seeds {1000 + args.seed_offset + args.start}+k, t' {s.strength}, {s.steps}-step "
        f"schedule, DM CFG {s.guidance_scale}; judged by toy.video_judge from the pixels alone"))


if __name__ == "__main__":
    main()
