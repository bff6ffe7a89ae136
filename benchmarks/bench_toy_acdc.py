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
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, load_average  # noqa: E402

COPIES = {"per_frame_shown.md": "", "per_frame_context.md": "_context", "differences_shown.md": "_differences",
          "differences_context.md": "_context_differences", "cost.md": "_cost"}


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

    out = args.keep or Path(tempfile.mkdtemp(prefix="toy_acdc_"))
    run = [sys.executable, "-m", "acdc_core.cli", "bench", "run", "--out", str(out), "--toy", args.split,
           "--count", str(args.stories), "--start", str(args.start), "--seed-offset", str(args.seed_offset),
           "--threads", "1", "--no-merge"] + (["--variants", *args.variants] if args.variants else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before, started = load_average(), time.perf_counter()
    workers = [subprocess.Popen(run + ["--shard", f"{i}/{args.workers}"], cwd=ROOT, env=env)
               for i in range(args.workers)]
    if any(w.wait() for w in workers):
        raise SystemExit(f"a worker failed; the finished items are in {out} (re-run with --keep {out}).")
    wall = time.perf_counter() - started
    merged = subprocess.run([sys.executable, "-m", "acdc_core.cli", "bench", "merge", "--out", str(out)], cwd=ROOT,
                            env=env)
    if merged.returncode:
        raise SystemExit(merged.returncode)
    note = (f"\n{args.stories} {args.split} stories (split indices {args.start}..{args.start + args.stories - 1}), "
            f"seeds {1000 + args.seed_offset + args.start}+k, the toy built-ins at the toy settings; {args.workers} "
            f"workers x 1 thread, {wall:.0f} s wall; load average before {before}, after {load_average()}.\n")
    for source, suffix in COPIES.items():
        text = (out / "merged" / source).read_text(encoding="utf-8")
        (RESULTS / f"{args.name}{suffix}.md").write_text(text + note, encoding="utf-8")
    shutil.copy(out / "merged" / "merged.json", RESULTS / f"{args.name}.json")
    print((RESULTS / f"{args.name}.md").read_text(encoding="utf-8"))
    print((RESULTS / f"{args.name}_differences.md").read_text(encoding="utf-8"))
    if args.keep is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
