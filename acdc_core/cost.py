"""Where a run's time and memory go, stage by stage.

Every timed stage of the story and video loops (the ARM's sampling, decoding, the memory's query, the correction,
the fix, the re-encoding) runs inside ``stage(name)``, which gives the block its wall time and reports it, with
the memory peak it reached, to every ``Meter`` that is open (``meter()``). Nothing is measured beyond the time
while no meter is open.

Memory: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` during the stage (reset at the stage's start; an
enclosing stage keeps the larger of its own and its inner stages' peaks); elsewhere the process's peak resident
memory so far (``ru_maxrss``), which never falls, so on a CPU it says how much the run needed, not what one stage
added.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

__all__ = ["Meter", "StageCost", "meter", "stage", "memory_kind"]

_meters: list["Meter"] = []
_peaks: list[int] = []      # the running CUDA peak of each enclosing stage, innermost last


@dataclass
class StageCost:
    seconds: float = 0.0
    calls: int = 0
    peak_bytes: int = 0


@dataclass
class Meter:
    """The stages measured while the meter was open: {stage: StageCost}."""

    stages: dict[str, StageCost] = field(default_factory=dict)

    def add(self, name: str, seconds: float, peak_bytes: int) -> None:
        cost = self.stages.setdefault(name, StageCost())
        cost.seconds += seconds
        cost.calls += 1
        cost.peak_bytes = max(cost.peak_bytes, peak_bytes)

    def summary(self) -> dict[str, dict]:
        """JSON-friendly: {stage: {"seconds", "calls", "peak_mb"}}."""
        return {name: {"seconds": round(c.seconds, 4), "calls": c.calls, "peak_mb": round(c.peak_bytes / 2 ** 20, 1)}
                for name, c in self.stages.items()}


def memory_kind() -> str:
    """What ``peak_mb`` means on this machine."""
    return ("CUDA peak allocated during the stage" if _cuda() else
            "process peak resident memory so far (CPU: it never falls)")


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _rss_bytes() -> int:
    try:
        import resource
    except ImportError:          # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextmanager
def meter() -> Iterator[Meter]:
    """``with meter() as m:`` -> ``m`` holds the cost of every stage that ran inside the block."""
    m = Meter()
    _meters.append(m)
    try:
        yield m
    finally:
        _meters.remove(m)


@contextmanager
def stage(name: str) -> Iterator[list]:
    """``with stage("arm") as took:`` -> ``took[0]`` is the block's wall time in seconds; open meters get the stage's
    time and memory peak."""
    took = [0.0]
    cuda = bool(_meters) and _cuda()
    if cuda:
        if _peaks:
            _peaks[-1] = max(_peaks[-1], torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        _peaks.append(0)
    start = time.perf_counter()
    try:
        yield took
    finally:
        took[0] = time.perf_counter() - start
        if cuda:
            peak = max(_peaks.pop(), torch.cuda.max_memory_allocated())
            if _peaks:
                _peaks[-1] = max(_peaks[-1], peak)
        else:
            peak = _rss_bytes() if _meters else 0
        for m in list(_meters):
            m.add(name, took[0], peak)
