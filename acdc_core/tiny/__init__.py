"""Tiny, seeded, locally built models (random weights) for tests, the demo and benchmarks. No hub.

They exercise the real loading code paths (transformers / diffusers folders, safetensors) at a size that
runs in seconds on a CPU. Random weights prove the plumbing, not the quality.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_SEED = 0


def build_default_models(folder: Path, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Build (once) the ARM, DM and memory LLM the demo runs on; return their folders."""
    from .janus import build_tiny_janus
    from .llm import build_tiny_llm
    from .sd import build_tiny_sd

    folder = Path(folder)
    parts = {"arm": (build_tiny_janus, folder / "tiny-janus"),
             "dm": (build_tiny_sd, folder / "tiny-sd"),
             "llm": (build_tiny_llm, folder / "tiny-llm")}
    paths = {}
    for name, (build, path) in parts.items():
        done = path / ".complete"
        if not done.exists():
            build(path, seed=seed)
            done.write_text(f"seed={seed}\n")
        paths[name] = path
    return paths
