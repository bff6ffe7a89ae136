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
from ..errors import InvalidInputError
from ..memory import MemorySettings
from ..state import StorySettings
from ..video import VideoSettings, run_video
from .items import BenchItem, items_digest, write_items
from .shard import Shard
from .store import ITEMS_FILE, check_bench, check_item, clear_partials, item_dir, write_item
from .variants import Variant, VideoVariant, context_frames, context_images, run_variant, slug

__all__ = ["bench_identity", "run_bench"]


def bench_identity(items: Sequence[BenchItem], variants: Sequence, models: dict, settings,
                   memory_settings: MemorySettings) -> dict:
    """What makes two runs the same benchmark (shards and re-runs must agree on it). A video benchmark (settings:
    ``VideoSettings``) says so ("kind": "video"); a story benchmark's identity is what it was before videos."""
    video = isinstance(settings, VideoSettings)
    return {"format": 1, **({"kind": "video"} if video else {}), "items": items_digest(items),
            "item_count": len(items), "variants": [asdict(v) for v in variants], "models": models,
            "settings": asdict(settings), "memory_settings": asdict(memory_settings)}


def _run_one(item: BenchItem, variant, arm, corrector, memory_backend, settings, memory_settings) -> tuple:
    """(run record without cost, shown frames, context frames) of one item under one variant."""
    if isinstance(variant, VideoVariant):
        from ..memory import MemoryModule

        video = replace(settings, frames=item.frames, seed=item.seed, dm_seed=None, correct=variant.correct,
                        strength=variant.strength if variant.strength is not None else settings.strength)
        mode = memory_settings.mode if memory_backend is not None else "off"
        memory = MemoryModule(memory_backend, replace(memory_settings, mode=mode))
        state = run_video(item.prompts, arm, corrector if variant.correct != "none" else None, memory, video)
        summary = state.summary()
        for w in summary["windows"]:
            del w["tokens_before"], w["tokens_after"]
        return summary, state.output_frames(), context_frames(state, arm)
    state = run_variant(item.prompts, variant, arm, corrector, memory_backend, replace(settings, seed=item.seed),
                        memory_settings)
    frames = [{k: v for k, v in r.summary().items() if k not in ("tokens_before", "tokens_after")}
              for r in state.records]
    return {"frames": frames}, [r.corrected_image for r in state.records], (
        context_images(state, arm) if variant.arm else None)


def run_bench(out, items: Sequence[BenchItem], variants: Sequence[Variant | VideoVariant], arm, corrector,
              memory_backend, settings: StorySettings | VideoSettings, memory_settings: MemorySettings, *,
              models: dict, shard: Shard = Shard(),
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Run shard ``shard`` of the benchmark into ``out``: stories (``StorySettings``, ``Variant``s) or videos
    (``VideoSettings``, ``VideoVariant``s; every item a video item). Returns {"ran": n, "skipped": n, "redone": n}."""
    out = Path(out)
    video = isinstance(settings, VideoSettings)
    if any(item.video != video for item in items) or any(isinstance(v, VideoVariant) != video for v in variants):
        raise InvalidInputError("a benchmark is all stories or all videos: video items (with frames) run the video "
                                "variants with video settings, stories the story variants.")
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
                record, shown, context = _run_one(item, variant, arm, corrector, memory_backend, settings,
                                                  memory_settings)
                seconds = time.perf_counter() - t0
            run = {"item": item.id, "variant": variant.name, "prompts": list(item.prompts), "seed": item.seed,
                   **record, "cost": meter.summary(), "memory_kind": cost.memory_kind(), "seconds": round(seconds, 4)}
            write_item(folder, run, shown, context)
            counts["ran"] += 1
        log(f"shard {shard}: {n}/{len(mine)} items ({time.perf_counter() - started:.0f} s)")
    return counts
