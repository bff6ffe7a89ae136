"""A benchmark's folder: one folder per variant and item, complete or absent.

    OUT/bench.json                       what this benchmark is (item set digest, variants, models, settings)
    OUT/items.jsonl                      its item set
    OUT/runs/<variant>/<item>/           one finished item: frames/shown_NN.png (what the story shows),
                                         frames/context_NN.png (what went back into the ARM's context, where the
                                         variant has one), run.json, done.json
    OUT/merged/                          the merge step's tables

An item is written into a hidden ``.<item>.partial-<pid>`` folder beside its place and renamed into place only when
every file is written and ``done.json`` (the sha256 of every file) is in it, so a killed run leaves no half-written
item where a finished one would be. ``check_item`` re-hashes the files: a folder whose files are missing, extra or
changed is not complete (the runner redoes it, the merge refuses it).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from ..images import to_pil

__all__ = ["BENCH_FILE", "ITEMS_FILE", "DONE_FILE", "RUN_FILE", "item_dir", "check_item", "write_item",
           "read_frames", "clear_partials", "check_bench", "window_of",
           "MIN_VIDEO_FRAMES", "video_segments", "segment_names", "segment_label"]

BENCH_FILE, ITEMS_FILE, DONE_FILE, RUN_FILE = "bench.json", "items.jsonl", "done.json", "run.json"
FORMAT = 1


def item_dir(out: Path, variant_slug: str, item_id: str) -> Path:
    return Path(out) / "runs" / variant_slug / item_id


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def check_item(folder: Path) -> Optional[str]:
    """None when ``folder`` holds a complete item, else why not."""
    if not folder.is_dir():
        return "missing"
    done = folder / DONE_FILE
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
        hashes = record["files"]
        if not isinstance(hashes, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {DONE_FILE}"
    present = [f for f in _files(folder) if f != DONE_FILE]
    if sorted(hashes) != present:
        return "its files are not the ones it finished with"
    for name, digest in hashes.items():
        if _sha256(folder / name) != digest:
            return f"{name} changed after it was written"
    return None


def write_item(folder: Path, run: dict, shown: Sequence, context: Optional[Sequence] = None) -> None:
    """Write one finished item (``run.json`` from ``run``; frames [3, H, W] in [0, 1]) atomically into ``folder``,
    replacing an incomplete one there."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "frames").mkdir(parents=True)
    for kind, frames in (("shown", shown), ("context", context or ())):
        for k, image in enumerate(frames):
            to_pil(image).save(partial / "frames" / f"{kind}_{k + 1:02d}.png", format="PNG")
    (partial / RUN_FILE).write_text(json.dumps(run, indent=1), encoding="utf-8")
    hashes = {name: _sha256(partial / name) for name in _files(partial)}
    (partial / DONE_FILE).write_text(json.dumps({"files": hashes}, indent=1), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


def read_frames(folder: Path, kind: str = "shown") -> list[np.ndarray]:
    """An item's frames of ``kind`` ("shown" or "context") as [H, W, 3] uint8, in order."""
    paths = sorted((folder / "frames").glob(f"{kind}_[0-9][0-9].png"))
    out = []
    for path in paths:
        with Image.open(path) as picture:
            out.append(np.asarray(picture.convert("RGB")))
    return out


def clear_partials(out: Path, variant_slugs: Sequence[str], item_ids: Sequence[str]) -> int:
    """Remove the partial folders a killed run left for these items (only these: other shards' are theirs)."""
    mine = set(item_ids)
    removed = 0
    for v in variant_slugs:
        root = Path(out) / "runs" / v
        for path in root.glob(".*.partial-*") if root.is_dir() else ():
            if path.name[1:].partition(".partial-")[0] in mine:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def check_bench(out: Path, identity: dict) -> None:
    """Make ``out`` this benchmark's folder: new, or holding the same benchmark (same identity); else refuse."""
    out = Path(out)
    path = out / BENCH_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise InvalidInputError(f"{path} is not readable JSON; give the benchmark another --out.") from None
        if earlier != identity:
            differ = sorted(k for k in set(earlier) | set(identity) if earlier.get(k) != identity.get(k))
            raise InvalidInputError(f"{out} holds another benchmark (different {', '.join(differ)}); re-run it with the "
                                    "same items, variants, models and settings, or give another --out.")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{BENCH_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(identity, indent=1), encoding="utf-8")
    os.replace(tmp, path)   # several shards may start at once: each writes the same content


def window_of(identity: dict) -> Optional[int]:
    """A video benchmark's window L (``bench.json``'s identity); None for a story benchmark."""
    return int(identity["settings"]["window"]) if identity.get("kind") == "video" else None


# a video (or segment) VBench can score: motion smoothness interpolates every other frame and needs two of them,
# so three frames at least
MIN_VIDEO_FRAMES = 3


def video_segments(frames: int, window: int) -> list[tuple[int, int]]:
    """The parts of an N-frame video scored as videos of their own: all of it, and frames L+1..N (the paper's later
    frames) where they are ``MIN_VIDEO_FRAMES`` or more. [start, end), 0-based; named by ``segment_names``."""
    return [(0, frames)] + ([(window, frames)] if frames - window >= MIN_VIDEO_FRAMES else [])


def segment_names(window: int) -> tuple[str, str]:
    """The names of ``video_segments``' parts, in order."""
    return ("all frames", f"frames {window + 1}-N")


def segment_label(segment: tuple[int, int]) -> str:
    return f"{segment[0] + 1}-{segment[1]}"
