"""Batching benchmark: B stories decoded in one batch (``story.run_stories``, the ARM's ``sample_chunks``) vs the same
B stories one after another (``story.run_story``), ARM only, on random-weight Janus.

Each story has its own seed and prompts of its own length (the batch pads them); two frames per story, so the second
frame reuses the batch's key/value cache. CFG 5 (two rows per story). Reported: seconds for all B stories, the
throughput ratio (one at a time / batched: > 1, the batch is faster), codes per second, and whether every story's codes
are the ones it gets alone (``same_tokens``, compared for real). Times: min and median of the timed runs after a
warm-up, the two ways interleaved; the load average is recorded with the table.

Run: ``python benchmarks/bench_batch.py [--real] [--device cuda --dtype bfloat16]`` (about 6 minutes on 2 CPU cores;
``--real`` adds Janus-Pro-1B's language model at B = 4, about 10 more).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import interleaved, load_average, placement_arguments, spread, write_results  # noqa: E402
from benchmarks.bench_arm import IMAGE_SIZE, JANUS_PRO_1B, MODEL_BOUND, PROMPTS  # noqa: E402
from acdc_core.arm import SamplingSettings, load_arm  # noqa: E402
from acdc_core.state import StorySettings  # noqa: E402
from acdc_core.story import run_stories, run_story  # noqa: E402
from acdc_core.tiny.janus import build_tiny_janus  # noqa: E402

FRAMES = 2
SAMPLING = SamplingSettings(guidance_scale=5.0, temperature=1.0)


def stories(count: int) -> list[list[str]]:
    """``count`` two-frame stories whose prompts differ in length (rotations of the benchmark's prompts)."""
    return [[PROMPTS[(k + i) % len(PROMPTS)] for i in range(FRAMES)] for k in range(count)]


def bench(folder: Path, label: str, sizes: tuple[int, ...], repeats: int, device: str, dtype) -> list[dict]:
    arm = load_arm(folder, device=device, dtype=dtype)
    rows = []
    for count in sizes:
        story_set = stories(count)
        settings = [StorySettings(sampling=SAMPLING, correct_frames=0, seed=100 + k) for k in range(count)]
        out: dict[str, list] = {}

        def one_at_a_time(out=out, story_set=story_set, settings=settings):
            out["alone"] = [run_story(p, arm, None, None, s) for p, s in zip(story_set, settings)]

        def batched(out=out, story_set=story_set, settings=settings):
            out["batch"] = run_stories(story_set, arm, None, None, settings)

        times = interleaved({"alone": (lambda: None, one_at_a_time), "batch": (lambda: None, batched)},
                            repeats=repeats)
        same = all(torch.equal(a.tokens_before, b.tokens_before)
                   for x, y in zip(out["alone"], out["batch"]) for a, b in zip(x.records, y.records))
        a_min, a_med = spread(times["alone"])
        b_min, b_med = spread(times["batch"])
        codes = count * FRAMES * arm.tokens_per_image
        rows.append({"case": f"{label}: {count} stories x {FRAMES} frames", "baseline": "run_story one at a time",
                     "batched_min_s": b_min, "batched_median_s": b_med, "alone_min_s": a_min,
                     "alone_median_s": a_med, "throughput_min": a_min / b_min, "throughput_median": a_med / b_med,
                     "batched_codes_s": codes / b_med, "alone_codes_s": codes / a_med, "same_tokens": same,
                     "runs": len(times["batch"])})
        print(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="also Janus-Pro-1B's language model, 4 stories")
    parser.add_argument("--sizes", default="1,2,4,8", help="story counts per batch (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3)
    placement_arguments(parser, "batch")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    sizes = tuple(int(s) for s in args.sizes.split(","))
    place = {"device": args.device, "dtype": getattr(torch, args.dtype)}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = build_tiny_janus(Path(tmp) / "janus", seed=0, image_size=IMAGE_SIZE, **MODEL_BOUND)
        print(f"built in {time.perf_counter() - start:.1f}s")
        rows = bench(folder, "model-bound (57M LM)", sizes, args.repeats, **place)
        if args.real:
            real = build_tiny_janus(Path(tmp) / "real", seed=0, image_size=IMAGE_SIZE, **JANUS_PRO_1B)
            rows += bench(real, "Janus-Pro-1B LM", (4,), max(1, args.repeats - 1), **place)
    notes = (f"Random-weight Janus (model-bound: Llama {MODEL_BOUND['num_hidden_layers']} layers x "
             f"{MODEL_BOUND['hidden_size']}; Janus-Pro-1B LM with --real: 24 layers x 2048), {IMAGE_SIZE} px -> 64 codes "
             f"per image, CFG 5, ARM only, {FRAMES} frames per story, {args.dtype} on {args.device}. batched: "
             "story.run_stories (every story's rows in one forward, padding masked, the batch's cache reused for frame "
             "2); alone: story.run_story per story. throughput = alone / batched (> 1: batching faster), from the min "
             "and from the median (two ways interleaved, after a warm-up). same_tokens: every story's codes in the "
             f"batch equal its codes alone. Load average (1/5/15 min) before: {load_before}, after: {load_average()}.")
    print(write_results(args.name, rows, notes))


if __name__ == "__main__":
    main()
