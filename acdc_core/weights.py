"""Which weight files the engine loads: safetensors only. Pickle checkpoints can run code when they are
loaded, so every loader refuses them by the one list of suffixes here, with a message that says to convert."""
from __future__ import annotations

from pathlib import Path

PICKLE_SUFFIXES: frozenset[str] = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


def is_pickle(path: str | Path) -> bool:
    """Whether ``path`` is named like a pickle checkpoint (by its suffix, case-insensitive)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def pickle_files(folder: str | Path, pattern: str = "*") -> list[str]:
    """Names of the pickle checkpoints matching ``pattern`` in ``folder`` (sorted; empty if none)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.glob(pattern) if p.is_file() and is_pickle(p)) if folder.is_dir() else []
