"""What continuing a video after a window swap costs, against a full prefill of the same sequence (issue: video ACDC).

A video of N frames is in the ARM's context (LWM's layout: 257 positions a frame); window [s, N) is corrected and
swapped back. The next frame's first forward then reruns only from the window's first changed code (the cache is
keyed by the ids): ``swap`` times that forward with the cache the frames before left behind, ``prefill`` the same
forward from an empty cache (the whole sequence). The ratio swap / prefill is reported beside the window's share of
the positions (attention is quadratic, so the later half of a sequence costs a little more than half).

  python benchmarks/bench_video_swap.py                    # LWM's layout at a small width on the CPU
  python benchmarks/bench_video_swap.py --device cuda --hidden 4096 --layers 8    # LWM-7B's width, 8 layers

Random weights; the tokens are real (the ARM's own sampling is not timed, only the forward that follows a swap).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import interleaved, machine, placement_arguments, spread, write_results  # noqa: E402


def measure(arm, video, prompt: str, start: int, repeats: int) -> dict:
    """The first forward after swapping frames ``start..`` of ``video``: with the cache the frames before left behind
    (``swap``), and from an empty cache (``prefill``)."""
    from acdc_core.arm import ARMContext

    frames = torch.cat([c.tokens for c in video.chunks])
    other = (frames[start:] + 1) % arm.codebook_size
    swapped = video.swap_frames(start, other)
    holder: dict = {}

    def warm_cache():       # the frames before the swap in the cache (what the loop leaves behind)
        holder["ctx"] = ARMContext(chunks=video.chunks)
        arm.next_token_logits(holder["ctx"], prompt, guidance_scale=1.0, continues=True)
        holder["swapped"] = holder["ctx"].swap_frames(start, other)

    def fresh():
        holder["swapped"] = ARMContext(chunks=swapped.chunks)

    def forward():
        arm.next_token_logits(holder["swapped"], prompt, guidance_scale=1.0, continues=True)

    total = arm.sequence_key(video, prompt, cfg=False, continues=True).shape[-1]
    key = arm.sequence_key(swapped, prompt, cfg=False, continues=True)[0]
    split = int((key != arm.sequence_key(video, prompt, cfg=False, continues=True)[0]).nonzero()[0])
    ids = key[None].to(arm.device)

    def lm_prefix():        # the library alone: transformers' LM on the same ids, cache of the prefix
        from transformers import DynamicCache

        holder["cache"] = DynamicCache(config=arm.lm.config)
        with torch.no_grad():
            arm.lm(input_ids=ids[:, :split], cache=holder["cache"], use_cache=True, logits_to_keep=1)

    def lm_tail():
        with torch.no_grad():
            arm.lm(input_ids=ids[:, split:], cache=holder["cache"], use_cache=True, logits_to_keep=1)

    def lm_full():
        with torch.no_grad():
            arm.lm(input_ids=ids, use_cache=True, logits_to_keep=1)

    times = interleaved({"swap": (warm_cache, forward), "prefill": (fresh, forward), "lm_tail": (lm_prefix, lm_tail),
                         "lm_full": (lambda: None, lm_full)}, repeats=repeats)
    median = {name: spread(values)[1] for name, values in times.items()}
    return {"frames": len(video.chunks), "window": f"{start + 1}-{len(video.chunks)}", "positions": total,
            "rerun_positions": total - split, "share": round((total - split) / total, 3),
            "swap_s (median)": round(median["swap"], 4), "prefill_s (median)": round(median["prefill"], 4),
            "swap/prefill": round(median["swap"] / median["prefill"], 3),
            "transformers tail/full": round(median["lm_tail"] / median["lm_full"], 3)}


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32, help="frames in context (default 32, the paper's N)")
    parser.add_argument("--windows", default="17,25", help="first frame (1-based) of each window to swap (default: the "
                                                           "paper's second window of 16, and the last 8 frames)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    placement_arguments(parser, "video_swap")
    args = parser.parse_args(argv)
    from acdc_core.arm import ARMContext, load_arm
    from acdc_core.tiny.unified import build_tiny_unified

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        heads = max(1, args.hidden // 64)
        build_tiny_unified(Path(folder) / "arm", layout="lwm", image_size=64, hidden_size=args.hidden,
                           intermediate_size=args.hidden * 2, num_hidden_layers=args.layers,
                           num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=(args.frames + 2) * 257 + 64, codebook_size=8192)
        arm = load_arm(Path(folder) / "arm", device=args.device, dtype=getattr(torch, args.dtype))
        prompt = "a blue cat jumps on a beach"
        g = torch.Generator().manual_seed(0)
        frames = torch.randint(0, arm.codebook_size, (args.frames, arm.tokens_per_image), generator=g)
        video = ARMContext().append(prompt, frames[:1])
        for k in range(1, args.frames):
            video = video.append(prompt, frames[k:k + 1], continues=True)
        rows = []
        for first in (int(v) for v in args.windows.split(",")):
            rows.append(measure(arm, video, prompt, first - 1, args.repeats))
            print(rows[-1])
    notes = (f"LWM's layout (257 positions a frame), Llama hidden {args.hidden}, {args.layers} layers, random weights, "
             f"{args.device} {args.dtype}; median of {args.repeats} interleaved runs; machine {machine()}. swap: the "
             "first forward after swapping the window, with the cache of the frames before it; prefill: the same "
             "forward from an empty cache. share: the positions rerun over all positions. transformers tail/full: the library "
             "baseline in the same run, transformers' LlamaForCausalLM called directly on the same ids (the tail after "
             "a cached prefix against the whole sequence): what any cache reuse can get from SDPA here.")
    return write_results(args.name, rows, notes)


if __name__ == "__main__":
    print(main())
