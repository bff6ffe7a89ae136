"""Which items a process runs: shard ``i`` of ``N`` takes items i, i + N, i + 2N, ... of the item set.

The shard comes from ``--shard i/N``, else from the ``RANK`` / ``WORLD_SIZE`` a launcher sets (``torchrun``,
``accelerate launch``, one job per host of a cluster with those two set), else it is 0/1 (everything). No scheduler
of our own: each process knows its share from the item set alone, so the shards never write the same folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, TypeVar

from ..errors import InvalidInputError

__all__ = ["Shard", "parse_shard", "shard_from_env"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def take(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index::self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise InvalidInputError(f"--shard is i/N with 0 <= i < N (shard i of N, counted from 0); got {text!r}.")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_from_env(explicit: Optional[str] = None, env: Mapping[str, str] = os.environ) -> Shard:
    if explicit:
        return parse_shard(explicit)
    rank, world = env.get("RANK"), env.get("WORLD_SIZE")
    if rank is None and world is None:
        return Shard()
    if rank is None or world is None:
        raise InvalidInputError("RANK and WORLD_SIZE must be set together (a launcher sets both); or give --shard i/N.")
    return parse_shard(f"{rank}/{world}")
