"""The toy DM's classifier-free guidance: which CFG the toy workflows and the toy benchmark use, and why.

ACDC on stories of one split at each CFG (the toy settings otherwise), judged per frame, and the share of pixels
the correction newly clips: a colour channel at 0 or 255 in the corrected frame where the ARM's frame had none
within one pixel. Guidance overshoot in the toy DM's pixel space shows as exactly such pixels (black, white and
green fringe around the animals, dark smudges in the sky). The CFG is chosen on the *training* split; the
held-out split is the benchmark's (bench_toy_acdc.py). Writes results/toy_dm_cfg_<split>.{md,json}.

    .venv/bin/python benchmarks/bench_toy_dm_cfg.py [--split train] [--stories 20] [--cfg 1,1.25,1.5,2,3]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acdc_core.toy import defaults, split_stories  # noqa: E402
from acdc_core.toy.evaluate import GRADED, METRICS, VARIANTS, evaluate  # noqa: E402
from benchmarks._common import write_results  # noqa: E402


def newly_clipped(arm_image: torch.Tensor, corrected: torch.Tensor) -> float:
    """Share of pixels with a channel at 0 or 255 in ``corrected`` and none within one pixel in ``arm_image``
    (both [3, H, W] in [0, 1])."""
    def clipped(image):
        levels = (image.float().clamp(0, 1) * 255).round()
        return ((levels <= 0) | (levels >= 255)).any(0).float()   # [H, W]
    near_arm = F.max_pool2d(clipped(arm_image)[None, None], 3, 1, 1)[0, 0] > 0
    return float((clipped(corrected).bool() & ~near_arm).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--stories", type=int, default=20)
    parser.add_argument("--cfg", default="1,1.25,1.5,2,3")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stories = split_stories(args.split, args.stories)
    arm, corrector, llm = defaults.load_toy_models()
    acdc = [v for v in VARIANTS if v.name == "ACDC"]
    rows, started = [], time.perf_counter()
    for cfg in (float(c) for c in args.cfg.split(",")):
        shares: list[float] = []

        def record(k, name, state, shares=shares):
            shares.extend(newly_clipped(r.arm_image, r.corrected_image) for r in state.records)

        result = evaluate(stories, arm, corrector, llm, replace(defaults.TOY_SETTINGS, guidance_scale=cfg),
                          memory_settings=defaults.TOY_MEMORY_SETTINGS, variants=acdc, on_story=record)["ACDC"]
        row = {"cfg": cfg, **{m: round(float(result["scores"][..., i].mean()), 4) for i, m in enumerate(METRICS)},
               GRADED: round(float(np.mean(result[GRADED])), 4),
               "newly_clipped_px": round(float(np.mean(shares)), 5),
               "frames_over_1pct": round(float(np.mean(np.array(shares) > 0.01)), 4)}
        rows.append(row)
        print(row, flush=True)
    notes = (f"ACDC on {len(stories)} {args.split} stories x 6 frames (seeds 1000+k), the toy settings but the DM's "
             f"CFG: judge means over all frames, newly_clipped_px = share of pixels clipped by the correction "
             f"(mean over frames), frames_over_1pct = share of frames where that exceeds 1%. The shipped toy CFG "
             f"is {defaults.TOY_SETTINGS.guidance_scale}. Wall time {time.perf_counter() - started:.0f} s.")
    write_results(f"toy_dm_cfg_{args.split}", rows, notes)


if __name__ == "__main__":
    main()
