"""ACDC in the toy world: the paper's Tables 1-2 on the shipped toy models, through ``acdc bench``.

    .venv/bin/python benchmarks/bench_toy_acdc.py [--split heldout|test] [--stories 100] [--start 0]
        [--seed-offset 0] [--workers 2] [--name toy_acdc]

Runs ``acdc bench run`` on the toy world's stories (ARM only, DM alone, ACDC #2, ACDC w/o memory, ACDC), one shard
per worker (``--shard i/N``, one thread each), then ``acdc bench merge`` with the toy judge, and copies the merged
tables to ``results/<name>.md`` (per frame index, the frames the story shows: mean [95% bootstrap interval]),
``<name>_context.md`` (the frames as they went back into the ARM's context), ``<name>_differences.md`` and
``<name>_context_differences.md`` (paired bootstrap of the differences, each variant's later frames against its
earlier ones), ``<name>_cost.md`` (seconds and memory per frame and stage) and ``<name>.json``.

Stories: ``world.split_stories(split, start + stories)[start:]``; story k runs with seed ``1000 + seed_offset + k``.
``heldout`` is the development set every setting was chosen on; ``test`` (``world.TEST_SEED_START``) is kept apart:
run it once, tune nothing on it (``--name toy_acdc_test``). The bench folder is kept (``--keep``, default a
temporary folder): re-running with the same ``--keep`` continues an interrupted run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import run_acdc_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("heldout", "test"), default="heldout")
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first story (index in the split)")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes, one shard and one thread each")
    parser.add_argument("--variants", nargs="+", help="a subset of acdc bench's variants (default all)")
    parser.add_argument("--keep", type=Path, help="the bench folder (default: a temporary one, removed)")
    parser.add_argument("--name", default="toy_acdc", help="results/<name>*.md")
    args = parser.parse_args()

    run = ["--toy", args.split, "--count", str(args.stories), "--start", str(args.start), "--seed-offset",
           str(args.seed_offset)] + (["--variants", *args.variants] if args.variants else [])
    run_acdc_bench(run, workers=args.workers, name=args.name, keep=args.keep, note=(
        f"{args.stories} {args.split} stories (split indices {args.start}..{args.start + args.stories - 1}), seeds "
        f"{1000 + args.seed_offset + args.start}+k, the toy built-ins at the toy settings"))


if __name__ == "__main__":
    main()
