"""Shared helpers for benchmarks: best-of-N wall time and a results file per benchmark.

Benchmarks report *ratios* against the library baseline measured in the same run, never absolute
pass/fail thresholds. Each writes benchmarks/results/<name>.json and a Markdown table <name>.md.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

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


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}


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
