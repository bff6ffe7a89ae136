"""Key/value-cache reuse across story contexts, for any ARM backend whose language model takes a
transformers ``Cache``. Model-agnostic: nothing here knows how a backend lays out its sequence.

A backend describes the whole conditioning sequence it needs as a *key*, a ``[rows, L]`` long tensor
(rows: the conditional row, plus the unconditional one under CFG; any ids that tell different inputs
apart). The context's ``CacheMemo`` holds the cache of the last sequence run and that sequence's key.
``CacheKeeper.take`` keeps the longest common prefix of the memo's key and the needed one, crops the
cache there and says where the prefill must start: after swapping chunk i, that is the first position
that differs (chunk i's first changed image token), so only the swapped chunk onward is run again.
``CacheKeeper.give`` hands the cache back with the key it now covers.

The memo's cache is taken out while a backend runs and given back only once its key is known to be
true, so a cancelled or failed step never leaves a cache that claims more than it holds.

``StoryCache`` is a ``DynamicCache`` of ``GrowingLayer``s: storage is preallocated and grows by 25 %,
so appending one token does not copy the whole cache as ``DynamicCache``'s ``torch.cat`` does.

A keeper made with ``static=`` a language-model config hands out transformers' ``StaticCache`` instead: fixed-size
buffers written in place at the positions given, the layout a compiled one-token step (and, on CUDA, a captured
graph) needs. It is cropped by position like any other (``StaticLayer.crop`` only moves its length back), so a swap
still recomputes from the first changed token. Its size is the story's need rounded up (``static_capacity``); a story
that outgrows it gets a larger one, prefilled from the start once.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Optional

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, StaticCache

from .base import CacheMemo

__all__ = ["GrowingLayer", "StoryCache", "CacheKeeper", "common_prefix", "static_capacity"]


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` over a preallocated buffer: ``keys``/``values`` are views of its first ``length``
    positions. Appending writes in place (the buffer grows by 25 % when full); ``crop`` shortens the view."""

    def __init__(self, reserve: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reserve = reserve
        self._kbuf: Optional[torch.Tensor] = None
        self._vbuf: Optional[torch.Tensor] = None
        self._length = 0

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = max(needed, self.reserve)
        if self._kbuf is not None:
            capacity = max(capacity, math.ceil(self._kbuf.shape[-2] * 1.25) + 64)
        b, h = key_states.shape[:2]
        kbuf = key_states.new_empty((b, h, capacity, key_states.shape[-1]))
        vbuf = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
        if self._length:
            kbuf[:, :, : self._length] = self._kbuf[:, :, : self._length]
            vbuf[:, :, : self._length] = self._vbuf[:, :, : self._length]
        self._kbuf, self._vbuf = kbuf, vbuf

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._kbuf is not None and key_states.shape[0] != self._kbuf.shape[0]:
            raise ValueError(f"cache holds {self._kbuf.shape[0]} rows, got {key_states.shape[0]}.")
        end = self._length + key_states.shape[-2]
        if self._kbuf is None or end > self._kbuf.shape[-2]:
            self._grow(key_states, value_states, end)
        self._kbuf[:, :, self._length:end] = key_states
        self._vbuf[:, :, self._length:end] = value_states
        self._length = end
        self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length

    def crop(self, tokens_to_remove: int) -> None:
        # The transformers 5.x convention: a negative number = how many tokens to drop from the end.
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove.")
        if self._kbuf is None or tokens_to_remove == 0:
            return
        self._length = max(0, self._length + tokens_to_remove)
        self.keys, self.values = self._kbuf[:, :, : self._length], self._vbuf[:, :, : self._length]

    def move_to(self, device: torch.device) -> None:
        """Move the cached positions (only those in use) to ``device``."""
        if self._kbuf is None:
            return
        self._kbuf = self._kbuf[:, :, : self._length].to(device)
        self._vbuf = self._vbuf[:, :, : self._length].to(device)
        self.keys, self.values = self._kbuf, self._vbuf
        self.device = device

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        self._length = 0
        super().reset()

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("GrowingLayer does not support beam search.")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("GrowingLayer does not support beam search.")


class StoryCache(DynamicCache):
    """A ``DynamicCache`` of ``GrowingLayer``s. ``reserve(n)`` sizes buffers allocated from now on for ``n``
    tokens, so a whole chunk (context + image) is usually one allocation per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = self._new_layer
        self._reserve = 0

    def _new_layer(self) -> GrowingLayer:
        return GrowingLayer(reserve=self._reserve)

    def reserve(self, n_tokens: int) -> None:
        self._reserve = n_tokens
        for layer in self.layers:
            layer.reserve = n_tokens


def static_capacity(needed: int, limit: Optional[int] = None) -> int:
    """Positions of a static cache for a sequence of ``needed``: twice that, in whole 1,024s (so a story of a few
    more frames still fits), never more than ``limit`` (the model's context window) unless ``needed`` is."""
    capacity = -(-2 * needed // 1024) * 1024
    return max(needed, min(capacity, limit)) if limit else capacity


class _CacheState:
    """What a backend keeps in ``CacheMemo.cache``: the cache plus whose and where it is."""

    __slots__ = ("cache", "owner", "device", "dtype", "__weakref__")

    def __init__(self, cache: Any, owner: object, device: torch.device, dtype: torch.dtype) -> None:
        self.cache, self.owner, self.device, self.dtype = cache, owner, device, dtype


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two ``[rows, L]`` keys (0 when the row counts differ)."""
    if a.shape[0] != b.shape[0]:
        return 0
    m = min(a.shape[1], b.shape[1])
    same = (a[:, :m] == b[:, :m]).all(dim=0)
    return m if bool(same.all()) else int((~same).nonzero()[0, 0])


class CacheKeeper:
    """One backend instance's side of the memo protocol: takes caches out of memos (cropped to what is
    still valid), gives them back with the key they cover, and moves the live ones when the model moves.

    A cache is reused only by the keeper that made it, on the same device and dtype and for the same
    number of rows (CFG on or off); anything else starts a fresh cache, so a stale memo costs time only.
    """

    def __init__(self, static: Any = None, limit: Optional[int] = None) -> None:
        self.owner = object()  # identifies caches this keeper made (survives .to())
        self._live: "weakref.WeakSet[_CacheState]" = weakref.WeakSet()
        self.static = static   # a language-model config: hand out StaticCaches for it (None: StoryCaches)
        self.limit = limit     # the model's context window, the most a static cache is sized for

    def new_cache(self, needed: int) -> Any:
        """An empty cache for a sequence of ``needed`` positions (a static one is sized ahead, see above)."""
        if self.static is not None:
            return StaticCache(config=self.static, max_cache_len=static_capacity(needed, self.limit))
        cache = StoryCache()
        cache.reserve(needed)
        return cache

    def _fits(self, cache: Any, needed: int) -> bool:
        if isinstance(cache, StaticCache):
            return self.static is not None and cache.layers[0].max_cache_len >= needed
        return self.static is None

    def take(self, memo: CacheMemo, key: torch.Tensor, extra: int, *, device: torch.device,
             dtype: torch.dtype, valid: Optional[Callable[[torch.Tensor, int], int]] = None) -> tuple[StoryCache, int]:
        """Take the memo's cache (leaving the memo empty), cropped to its common prefix with ``key``.

        At least the last position of ``key`` stays uncached so there are logits to sample from.
        ``extra`` is how many positions the caller will add after ``key`` (storage is reserved for them).
        ``valid(key, keep)``: for a family whose positions can see later ones (Show-o's image blocks are
        bidirectional), how many of the first ``keep`` positions stay valid when ``key`` differs from position
        ``keep`` on (never more than ``keep``); by default all of them (causal attention).
        Returns the cache and the number of positions of ``key`` it still covers (where prefill starts).
        """
        state, covered = memo.cache, memo.covered
        memo.cache, memo.covered = None, None
        needed = key.shape[1] + extra
        reusable = (isinstance(state, _CacheState) and state.owner is self.owner
                    and state.device == device and state.dtype == dtype
                    and covered is not None and covered.shape[0] == key.shape[0]   # same rows (CFG or not)
                    and self._fits(state.cache, needed))
        if not reusable:
            return self.new_cache(needed), 0
        keep = min(common_prefix(covered, key), key.shape[1] - 1)
        if valid is not None:
            keep = min(keep, valid(key, keep))
        cache = state.cache
        if isinstance(cache, StoryCache):
            cache.reserve(needed)
        if covered.shape[1] > keep:
            cache.crop(keep - covered.shape[1])
        return cache, keep

    def give(self, memo: CacheMemo, cache: StoryCache, covered: Optional[torch.Tensor], *,
             device: torch.device, dtype: torch.dtype) -> None:
        """Put ``cache`` in ``memo`` as covering exactly ``covered`` (``None``: unknown, so drop it)."""
        if covered is not None:
            state = _CacheState(cache, self.owner, device, dtype)
            self._live.add(state)
            memo.cache, memo.covered = state, covered

    def move_to(self, device: torch.device) -> None:
        """Move every live cache this keeper made to ``device`` (when the backend's weights move)."""
        for state in list(self._live):
            if isinstance(state.cache, StaticCache):   # fixed buffers: moving them would break a compiled step
                state.cache, state.device = None, None    # the next take starts afresh on the new device
                continue
            for layer in state.cache.layers:
                layer.move_to(device)
            state.device = device


class PaddedBatch:
    """The key/value cache of several sequences of different lengths run as one batch (``sample_chunks``), kept from
    one call to the next like a ``CacheMemo``'s: each row's key is left-padded to a common length, the padding
    masked out of attention and skipped by the rows' position ids, so every row computes what it would alone.

    ``columns`` ``[rows, C]`` is what the cache covers, column by column: each row's key ids, -1 where the row has
    nothing (padding). ``prepare`` keeps, for every row, the longest prefix of what it covers that its new key agrees
    with (after a swap: up to that frame's first changed code) and masks the rest of that row (-1), drops the columns
    no row keeps anything in, and lays out the rest of every row's key as one left-padded segment after them; so a row
    that starts over (Emu3's unconditional sequence, which returns to its prefix every frame) costs the others nothing.
    ``step`` adds one position to every row. A cache is reused only by the keeper that made it, for the same number
    of rows, on the same device and dtype; while a forward runs nothing is held, so a cancelled step leaves nothing
    that claims more than it holds. Unlike a context's memo it does not follow the ARM when the ARM moves (offloading):
    the next call on the other device starts the batch afresh.
    """

    def __init__(self) -> None:
        self.cache: Optional[StoryCache] = None
        self.columns: Optional[torch.Tensor] = None
        self.owner: object = None
        self.device: Optional[torch.device] = None
        self.dtype: Optional[torch.dtype] = None
        self._pending: Optional[tuple] = None

    def _reusable(self, rows: int, owner: object, device: torch.device, dtype: torch.dtype) -> bool:
        return (self.cache is not None and self.columns is not None and owner is self.owner and device == self.device
                and dtype == self.dtype and self.columns.shape[0] == rows)

    @staticmethod
    def _kept(columns: torch.Tensor, keys: list[torch.Tensor]) -> torch.Tensor:
        """``columns`` with every row cut back to the prefix its new key agrees with (the rest -1)."""
        kept = columns.clone()
        for r, (row, key) in enumerate(zip(columns, keys)):
            real = (row >= 0).nonzero().flatten()            # the columns of this row's key ids
            ids = row[real]
            m = min(len(ids), len(key) - 1)                  # the row's last position always runs (its logits)
            same = ids[:m] == key[:m]
            agree = m if bool(same.all()) else int((~same).nonzero()[0, 0])
            kept[r, real[agree:]] = -1
        return kept

    def prepare(self, keys: list[torch.Tensor], extra: int, *, owner: object, device: torch.device,
                dtype: torch.dtype) -> tuple[StoryCache, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For row keys ``keys`` (``[L_r]`` ids each): the cache, cropped; the ids still to run ``[rows, S]`` (left-padded
        with each row's first id); the attention mask over every column ``[rows, C + S]``; the position ids ``[rows, S]``."""
        cache, columns = self.cache, self.columns
        reusable = self._reusable(len(keys), owner, device, dtype)
        self.cache = self.columns = self._pending = None
        if not reusable:
            cache, columns = StoryCache(), torch.empty((len(keys), 0), dtype=torch.long)
        columns = self._kept(columns, keys)
        used = (columns >= 0).any(dim=0).nonzero()
        keep = int(used[-1]) + 1 if len(used) else 0         # columns up to the last one any row keeps
        if columns.shape[1] > keep:
            if keep == 0:
                cache = StoryCache()
            else:
                cache.crop(keep - columns.shape[1])
        columns = columns[:, :keep]
        done = (columns >= 0).sum(dim=1)                     # key ids of each row the cache still holds
        rest = [key[int(n):] for key, n in zip(keys, done)]
        width = max(len(r) for r in rest)
        cache.reserve(keep + width + extra)
        segment = torch.full((len(keys), width), -1, dtype=torch.long)
        for r, ids in enumerate(rest):
            segment[r, width - len(ids):] = ids
        columns = torch.cat([columns, segment], dim=1)
        real = columns >= 0
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)[:, keep:]
        ids = torch.where(segment >= 0, segment, torch.stack([key[:1] for key in rest]).expand_as(segment))
        self._pending = (columns, owner, device, dtype)
        return cache, ids, real.long(), positions

    def step(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One more position per row (key ids ``[rows]``): the attention mask and the position ids ``[rows, 1]``."""
        columns = self._pending[0]
        positions = (columns >= 0).sum(dim=1, keepdim=True)
        columns = torch.cat([columns, ids.to("cpu", torch.long)[:, None]], dim=1)
        self._pending = (columns,) + self._pending[1:]
        return (columns >= 0).long(), positions

    def keep(self, cache: StoryCache) -> None:
        """Hand the cache back as covering every position run so far (call only once the last forward finished)."""
        self.columns, self.owner, self.device, self.dtype = self._pending
        self.cache = cache
