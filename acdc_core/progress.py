"""Progress reporting and cancellation, without any host dependency.

Long loops call ``progress(stage, step, total, preview)``. A host (ComfyUI, a CLI, a test) passes its own
callable; it may raise to cancel the work (ComfyUI's interrupt check does), and the loop lets that
exception through untouched. ``preview`` is an optional image tensor [3, H, W] in [0, 1].
"""
from __future__ import annotations

from typing import Optional, Protocol

import torch


class ProgressFn(Protocol):
    def __call__(self, stage: str, step: int, total: int,
                 preview: Optional[torch.Tensor] = None) -> None: ...


def no_progress(stage: str, step: int, total: int, preview: Optional[torch.Tensor] = None) -> None:
    """The default: report nothing, never cancel."""


def print_progress(stream=None) -> ProgressFn:
    """A simple text progress reporter for the CLI: one line per stage end."""
    import sys

    out = stream or sys.stderr

    def report(stage: str, step: int, total: int, preview: Optional[torch.Tensor] = None) -> None:
        if step == total:
            print(f"  {stage}: {step}/{total}", file=out, flush=True)

    return report

