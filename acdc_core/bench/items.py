"""A benchmark's item set: stories (or prompt lists), each with an id and a fixed seed, read from and written to
JSONL, one item per line::

    {"id": "heldout-0000", "prompts": ["Tom, a red cat, ...", "He jumps.", ...], "seed": 1000}

An item may carry ``"toy": {"split": "heldout", "index": 0}``: it is story ``index`` of the toy world's split, and
the toy judge can read its frames against the scenes it was rendered from. A video item says how many frames it has
(``"frames": 24``; its prompts: the video's prompt, or one per window); a toy video clip is
``"toy": {"split": "heldout", "index": k, "world": "video"}``. An item set is untrusted input: every field is checked
before anything runs.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import MAX_SEED, InvalidInputError

__all__ = ["BenchItem", "read_items", "write_items", "items_digest", "TOY_SPLITS"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TOY_SPLITS = ("heldout", "test")
TOY_WORLDS = ("story", "video")


@dataclass(frozen=True)
class BenchItem:
    id: str
    prompts: tuple[str, ...]
    seed: int
    toy: Optional[tuple[str, int]] = None     # (split, index) of a toy-world story (or clip: world "video")
    frames: Optional[int] = None              # a video item: its number of frames (None: a story)
    world: str = "story"                      # the toy world a toy item is from

    @property
    def video(self) -> bool:
        return self.frames is not None

    def to_json(self) -> dict:
        out = {"id": self.id, "prompts": list(self.prompts), "seed": self.seed}
        if self.frames is not None:
            out["frames"] = self.frames
        if self.toy is not None:
            out["toy"] = {"split": self.toy[0], "index": self.toy[1], **({"world": "video"} if self.video else {})}
        return out


def _item(record, where: str) -> BenchItem:
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: an item is a JSON object with id, prompts and seed; got {type(record).__name__}.")
    unknown = sorted(set(record) - {"id", "prompts", "seed", "toy", "frames"})
    if unknown:
        raise InvalidInputError(f"{where}: unknown field(s) {', '.join(unknown)}; an item has id, prompts, seed "
                                "(and toy, frames).")
    item_id = record.get("id")
    if not isinstance(item_id, str) or not _ID.fullmatch(item_id) or item_id in (".", ".."):
        raise InvalidInputError(f"{where}: id {item_id!r} must be 1-100 letters, digits, '.', '_' or '-', starting "
                                "with a letter or digit (it names the item's folder).")
    prompts = record.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InvalidInputError(f"{where}: prompts must be a non-empty list of non-empty strings (one per frame).")
    frames = record.get("frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 4096):
        raise InvalidInputError(f"{where}: frames (a video item's length) must be a whole number from 2 to 4096; got "
                                f"{frames!r}.")
    seed = record.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - (frames or len(prompts)):
        raise InvalidInputError(f"{where}: seed must be a whole number from 0 to 2^64 - 1 - frames; got {seed!r}.")
    toy, world = record.get("toy"), "story"
    if toy is not None:
        if (not isinstance(toy, dict) or not {"split", "index"} <= set(toy) <= {"split", "index", "world"}
                or toy["split"] not in TOY_SPLITS or toy.get("world", "story") not in TOY_WORLDS
                or isinstance(toy["index"], bool) or not isinstance(toy["index"], int) or toy["index"] < 0):
            raise InvalidInputError(f"{where}: toy must be {{\"split\": \"heldout\" or \"test\", \"index\": k >= 0}} "
                                    "(and \"world\": \"video\" for a toy video clip).")
        toy, world = (toy["split"], toy["index"]), toy.get("world", "story")
        if (world == "video") != (frames is not None):
            raise InvalidInputError(f"{where}: a toy video clip (world \"video\") has frames, a toy story has none.")
    return BenchItem(item_id, tuple(p.strip() for p in prompts), seed, toy, frames, world)


def read_items(path) -> list[BenchItem]:
    """The items of a JSONL file (blank lines skipped), checked: fields, unique ids."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"the item set {path} does not exist; give a JSONL file (one story per line: id, "
                                "prompts, seed) or use --toy.")
    items, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise InvalidInputError(f"{path}:{n} is not JSON ({error}).") from None
        item = _item(record, f"{path}:{n}")
        if item.id in seen:
            raise InvalidInputError(f"{path}:{n}: id {item.id!r} is used twice; ids must be unique.")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise InvalidInputError(f"the item set {path} holds no items.")
    return items


def _lines(items: Iterable[BenchItem]) -> str:
    return "".join(json.dumps(item.to_json(), ensure_ascii=False) + "\n" for item in items)


def write_items(path, items: Sequence[BenchItem]) -> Path:
    path = Path(path)
    path.write_text(_lines(items), encoding="utf-8")
    return path


def items_digest(items: Sequence[BenchItem]) -> str:
    """sha256 of the item set as written: two runs with this digest run the same stories with the same seeds."""
    return hashlib.sha256(_lines(items).encode("utf-8")).hexdigest()
