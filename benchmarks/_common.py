"""Shared helpers for benchmarks: best-of-N wall time and a results file per benchmark.

Benchmarks report *ratios* against the library baseline measured in the same run, never absolute
pass/fail thresholds. Each writes benchmarks/results/<name>.json and a Markdown table <name>.md.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(cases: dict, repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each ``name -> (setup, fn)`` over ``repeats`` timed rounds after ``warmup`` untimed ones, the
    cases taking turns so that a burst of load from another process hits them alike. ``setup`` runs untimed before
    every call."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(warmup + repeats):
        for name, (setup, fn) in cases.items():
            setup()
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def against_pipeline(ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], unet: torch.nn.Module,
                     device: str, repeats: int) -> tuple[float, int, dict[str, float]]:
    """Our SDEdit loop against a diffusers pipeline on the same UNet: (max |ours - theirs| of one run each, also the
    warm-up; the UNet calls of one of ours, CFG's rows in one call; the best seconds of each over ``repeats``
    interleaved runs, synchronised on a GPU)."""
    calls: list[int] = []
    hook = unet.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    try:
        difference = (ours() - theirs()).abs().max().item()
    finally:
        hook.remove()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = interleaved({"ours": (sync, lambda: (ours(), sync())), "pipeline": (sync, lambda: (theirs(), sync()))},
                        repeats=repeats, warmup=0)
    return difference, len(calls) // 2, {name: min(t) for name, t in times.items()}


def spread(times: list[float]) -> tuple[float, float]:
    """(min, median) of timed runs."""
    ordered = sorted(times)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return ordered[0], median


def load_average() -> str:
    """The machine's 1-, 5- and 15-minute load averages (other processes skew timings), or "?"."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def placement_arguments(parser, name: str, *, dtype: bool = True) -> None:
    """The options every real-size benchmark takes: ``--device``, ``--dtype`` and ``--name`` (its results file)."""
    parser.add_argument("--device", default="cpu", help="e.g. cuda (a GPU: see gpu.sh)")
    if dtype:
        parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    parser.add_argument("--name", default=name, help="the results file's name (results/<name>.md)")


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "load_avg_1_5_15": load_average()}


def write_results(name: str, rows: list[dict], notes: str = "") -> Path:
    """Write rows (dicts) as JSON and as a Markdown table; return the .md path. The table's columns are
    every key of any row, in first-seen order; a row without a key shows "-" there."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows, "notes": notes},
                                                     indent=2))
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"# {name}", "", notes, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, "-")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"machine: {machine()}"]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


COPIES = {"per_frame_shown.md": "", "per_frame_context.md": "_context", "differences_shown.md": "_differences",
          "differences_context.md": "_context_differences", "cost.md": "_cost"}


def run_acdc_bench(run: list[str], *, workers: int, name: str, keep: Optional[Path], note: str) -> None:
    """``acdc bench run`` (arguments ``run`` after ``--out``) as ``workers`` shards of one thread each, then
    ``acdc bench merge``; the merged tables are copied to results/<name>*.md (``COPIES``, each with ``note`` and the
    wall time) and results/<name>.json. ``keep``: the bench folder (re-running with it continues a run), else a
    temporary one, removed at the end."""
    import shutil
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parent.parent
    out = keep or Path(tempfile.mkdtemp(prefix=f"{name}_"))
    command = [sys.executable, "-m", "acdc_core.cli", "bench", "run", "--out", str(out), *run, "--threads", "1",
               "--no-merge"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before, started = load_average(), time.perf_counter()
    shards = [subprocess.Popen(command + ["--shard", f"{i}/{workers}"], cwd=root, env=env) for i in range(workers)]
    if any(s.wait() for s in shards):
        raise SystemExit(f"a worker failed; the finished items are in {out} (re-run with --keep {out}).")
    wall = time.perf_counter() - started
    merged = subprocess.run([sys.executable, "-m", "acdc_core.cli", "bench", "merge", "--out", str(out)], cwd=root,
                            env=env)
    if merged.returncode:
        raise SystemExit(merged.returncode)
    note = (f"\n{note}; {workers} workers x 1 thread, {wall:.0f} s wall; load average before {before}, after "
            f"{load_average()}.\n")
    for source, suffix in COPIES.items():
        text = (out / "merged" / source).read_text(encoding="utf-8")
        (RESULTS / f"{name}{suffix}.md").write_text(text + note, encoding="utf-8")
    shutil.copy(out / "merged" / "merged.json", RESULTS / f"{name}.json")
    print((RESULTS / f"{name}.md").read_text(encoding="utf-8"))
    print((RESULTS / f"{name}_differences.md").read_text(encoding="utf-8"))
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
