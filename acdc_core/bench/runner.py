"""Run a benchmark's share of items: every variant on every item of this shard, one finished folder each, skipping
what is already complete (so a re-run after a kill continues where it stopped and redoes only what was not
finished, or was damaged since)."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from .. import cost
from ..memory import MemorySettings
from ..state import StorySettings
from .items import BenchItem, items_digest, write_items
from .shard import Shard
from .store import ITEMS_FILE, check_bench, check_item, clear_partials, item_dir, write_item
from .variants import Variant, context_images, run_variant, slug

__all__ = ["bench_identity", "run_bench"]


def bench_identity(items: Sequence[BenchItem], variants: Sequence[Variant], models: dict, settings: StorySettings,
                   memory_settings: MemorySettings) -> dict:
    """What makes two runs the same benchmark (shards and re-runs must agree on it)."""
    return {"format": 1, "items": items_digest(items), "item_count": len(items),
            "variants": [asdict(v) for v in variants], "models": models, "settings": asdict(settings),
            "memory_settings": asdict(memory_settings)}


def run_bench(out, items: Sequence[BenchItem], variants: Sequence[Variant], arm, corrector, memory_backend,
              settings: StorySettings, memory_settings: MemorySettings, *, models: dict, shard: Shard = Shard(),
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Run shard ``shard`` of the benchmark into ``out``. Returns {"ran": n, "skipped": n, "redone": n}."""
    out = Path(out)
    check_bench(out, bench_identity(items, variants, models, settings, memory_settings))
    if not (out / ITEMS_FILE).is_file():
        write_items(out / f".{ITEMS_FILE}.{shard.index}.tmp", items).replace(out / ITEMS_FILE)
    mine = shard.take(items)
    clear_partials(out, [slug(v.name) for v in variants], [item.id for item in mine])
    counts = {"ran": 0, "skipped": 0, "redone": 0}
    started = time.perf_counter()
    for n, item in enumerate(mine, start=1):
        for variant in variants:
            folder = item_dir(out, slug(variant.name), item.id)
            why = check_item(folder)
            if why is None:
                counts["skipped"] += 1
                continue
            if why != "missing":
                log(f"  {variant.name} / {item.id}: {why}; running it again")
                counts["redone"] += 1
            with cost.meter() as meter:
                t0 = time.perf_counter()
                state = run_variant(item.prompts, variant, arm, corrector, memory_backend,
                                    replace(settings, seed=item.seed), memory_settings)
                seconds = time.perf_counter() - t0
            run = {"item": item.id, "variant": variant.name, "prompts": list(item.prompts), "seed": item.seed,
                   "frames": [{k: v for k, v in r.summary().items() if k not in ("tokens_before", "tokens_after")}
                              for r in state.records],
                   "cost": meter.summary(), "memory_kind": cost.memory_kind(), "seconds": round(seconds, 4)}
            write_item(folder, run, [r.corrected_image for r in state.records],
                       context_images(state, arm) if variant.arm else None)
            counts["ran"] += 1
        log(f"shard {shard}: {n}/{len(mine)} items ({time.perf_counter() - started:.0f} s)")
    return counts
