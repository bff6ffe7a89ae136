"""ARM benchmark (Janus): our decoding loop, in each decoding mode, vs transformers' own; and the cache after an ACDC
swap.

(a) One image, CFG 5, from a text prompt: ``JanusARM.sample_chunk`` with the dynamic cache (the default), the static
    cache, and the static cache with the one-token step compiled (``set_decoding``), vs
    ``JanusForConditionalGeneration.generate(generation_mode="image")`` (its own static-cache loop), same settings,
    same number of codes. Each mode's tokens are compared with ``generate``'s for the same seed (sampled and greedy).
    The compiled mode's first call (the compile) is timed apart. On the model-bound config, on a tiny one where
    per-token Python overhead dominates, and with ``--real`` on Janus-Pro-1B's language model (24 layers x 2048).
(b) A 6-frame story; frame k is swapped (corrected tokens), then the next frame's conditioning is computed with the
    context's cropped cache (only frame k onward is prefilled) vs from scratch (the whole story prefilled), for the
    prefill alone and for sampling the whole next frame. Both give the same logits (max difference reported) and the
    same next frame (compared).

Times: min and median of several timed runs after a warm-up, the cases interleaved; the load average is recorded
with the table. Random-weight Janus built locally (no download). Run: ``python benchmarks/bench_arm.py [--real]``
(about 4 minutes on 2 CPU cores; ``--real`` adds about 15 and needs 7 GB of disk and 14 GiB of memory).
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
from acdc_core.arm import ARMContext, SamplingSettings, load_arm  # noqa: E402
from acdc_core.tiny.janus import build_tiny_janus  # noqa: E402

MODEL_BOUND = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                   num_key_value_heads=12, codebook_size=16384, vq_channel_multiplier=(1, 1, 2, 2, 4))
TINY_LM = dict(codebook_size=16384, vq_channel_multiplier=(1, 1, 2, 2, 4))
# Janus-Pro-1B's language model and generation head (deepseek-community/Janus-Pro-1B config.json); its VQ.
JANUS_PRO_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                    num_key_value_heads=16, text_vocab_size=102400, codebook_size=16384, vq_embed_dim=8,
                    vq_base_channels=128, vq_latent_channels=256, vq_channel_multiplier=(1, 1, 2, 2, 4))
IMAGE_SIZE = 128          # 16x downsampling -> 8x8 = 64 codes per image
FRAMES = 6
MODES = ("dynamic", "static", "compiled")
SETTINGS = SamplingSettings(guidance_scale=5.0, temperature=1.0)
GREEDY = SamplingSettings(guidance_scale=5.0, temperature=0.0)
PROMPTS = ["A golden retriever named Benny runs through a sunlit meadow.", "He jumps over a log.",
           "He rolls in the grass.", "A rabbit watches him from under a tree.", "He chases the rabbit.",
           "He sleeps under the tree at night.", "The sun rises and he wakes up."]


def forget(memo) -> None:
    memo.cache, memo.covered = None, None


def bench_generate(folder: Path, label: str, repeats: int, device: str = "cpu", dtype=None) -> list[dict]:
    from transformers import JanusProcessor

    arms = {mode: load_arm(folder, decoding=mode, device=device, dtype=dtype) for mode in MODES}
    model = arms["dynamic"].model
    processor = JanusProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "text", "text": PROMPTS[0]}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       generation_mode="image", return_tensors="pt").to(device)
    model.generation_config.generation_kwargs = {"boi_token_id": arms["dynamic"]._ids["boi"]}

    def theirs(settings=SETTINGS):
        greedy = settings.temperature == 0
        torch.manual_seed(0)
        return model.generate(**inputs, generation_mode="image", do_sample=not greedy, guidance_scale=5.0,
                              temperature=None if greedy else settings.temperature, top_k=0, top_p=1.0).cpu()

    def ours(mode, settings=SETTINGS):
        context = ARMContext()      # a fresh memo: every run decodes the whole image from the prompt
        return arms[mode].sample_chunk(context, PROMPTS[0], settings=settings, generator=torch.Generator().manual_seed(0))

    started = time.perf_counter()
    first = ours("compiled")                                   # compiles the one-token step
    compile_s = time.perf_counter() - started
    print(f"{label}: compiled in {compile_s:.1f}s", flush=True)
    reference = {"sampled": theirs(), "greedy": theirs(GREEDY)}
    same = {mode: all(torch.equal(ours(mode, s), reference[name]) for name, s in (("sampled", SETTINGS),
                                                                                  ("greedy", GREEDY)))
            for mode in MODES}
    print(f"{label}: same tokens {same}", flush=True)
    same["compiled"] = same["compiled"] and torch.equal(first, reference["sampled"])
    nothing = lambda: None  # noqa: E731
    times = interleaved({"generate": (nothing, theirs), **{m: (nothing, lambda m=m: ours(m)) for m in MODES}},
                        repeats=repeats)
    n = arms["dynamic"].tokens_per_image
    g_min, g_med = spread(times["generate"])
    rows = []
    for mode in MODES:
        o_min, o_med = spread(times[mode])
        rows.append({"case": f"(a) one image, CFG 5, {label}: ours {mode}", "baseline": "transformers generate(image)",
                     "ours_min_s": o_min, "ours_median_s": o_med, "baseline_min_s": g_min,
                     "baseline_median_s": g_med, "speedup_min": g_min / o_min, "speedup_median": g_med / o_med,
                     "ours_tok_s": n / o_med, "baseline_tok_s": n / g_med,
                     "compile_s": compile_s if mode == "compiled" else float("nan"),
                     "same_tokens": same[mode], "runs": len(times[mode])})
    return rows


def bench_swap(folder: Path, repeats: int, device: str = "cpu", dtype=None) -> list[dict]:
    arm = load_arm(folder, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    ctx = ARMContext()
    for i in range(FRAMES):   # random codes stand in for sampled frames: the cost does not depend on them
        ctx = ctx.append(PROMPTS[i], torch.randint(0, arm.codebook_size, (1, arm.tokens_per_image), generator=gen))
    nxt = PROMPTS[FRAMES]
    rows = []
    for frame in (5, 6):      # 1-based: swap the 5th or the 6th (last) frame, then go on with frame 7
        index = frame - 1
        swapped = ctx.swap(index, (ctx.chunks[index].tokens + 1) % arm.codebook_size)
        key = arm.sequence_key(swapped, nxt, cfg=True)
        shared = int((key == arm.sequence_key(ctx, nxt, cfg=True)).all(0).int().argmin())
        share = (key.shape[1] - shared) / key.shape[1]

        def prefill(c):
            return arm.next_token_logits(c, nxt, guidance_scale=5.0)

        def next_frame(c):
            return arm.sample_chunk(c, nxt, settings=SETTINGS, generator=torch.Generator().manual_seed(1))

        for what, run in (("prefill only", prefill), ("next frame (prefill + 64 codes)", next_frame)):
            fresh = ARMContext(chunks=swapped.chunks)
            outputs = {}

            def timed(name, c, run=run, outputs=outputs):
                outputs[name] = run(c)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()    # the logits stay on the device: wait for them

            times = interleaved({
                # untimed setup: the memo covers the unswapped story; then swapped (sharing that memo)
                # crops the cache and prefills from the swapped frame on
                "cropped": (lambda: arm.next_token_logits(ctx, nxt), lambda c=swapped: timed("cropped", c)),
                # a context with a fresh (empty) memo prefills the whole story
                "full": (lambda c=fresh: forget(c.memo), lambda c=fresh: timed("full", c)),
            }, repeats=repeats)
            a, b = outputs["cropped"], outputs["full"]
            same = bool(torch.equal(a, b)) if what != "prefill only" else bool(torch.allclose(a, b, atol=1e-4))
            diff = float((a.float() - b.float()).abs().max()) if what == "prefill only" else float("nan")
            c_min, c_med = spread(times["cropped"])
            f_min, f_med = spread(times["full"])
            rows.append({"case": f"(b) swap frame {frame}/{FRAMES}, {what}", "baseline": "prefill whole story",
                         "ours_min_s": c_min, "ours_median_s": c_med, "baseline_min_s": f_min,
                         "baseline_median_s": f_med, "speedup_min": f_min / c_min, "speedup_median": f_med / c_med,
                         "context_tokens": key.shape[1], "recomputed_share": share, "same_tokens": same,
                         "max_logit_diff": diff, "runs": len(times["cropped"])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="also time Janus-Pro-1B's language model (a)")
    parser.add_argument("--repeats", type=int, default=5)
    placement_arguments(parser, "arm")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    place = {"device": args.device, "dtype": getattr(torch, args.dtype)}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = build_tiny_janus(Path(tmp) / "janus", seed=0, image_size=IMAGE_SIZE, **MODEL_BOUND)
        print(f"built in {time.perf_counter() - start:.1f}s")
        rows = bench_generate(folder, "model-bound", args.repeats, **place)
        small = build_tiny_janus(Path(tmp) / "small", seed=0, image_size=IMAGE_SIZE, **TINY_LM)
        rows += bench_generate(small, "tiny LM (per-token Python overhead)", args.repeats, **place)
        rows += bench_swap(folder, args.repeats, **place)
        if args.real:
            real = build_tiny_janus(Path(tmp) / "real", seed=0, image_size=IMAGE_SIZE, **JANUS_PRO_1B)
            rows += bench_generate(real, "Janus-Pro-1B LM", max(2, args.repeats // 2), **place)
        for row in rows:
            print(row)
    notes = (f"Random-weight Janus: model-bound = Llama {MODEL_BOUND['num_hidden_layers']} layers x "
             f"{MODEL_BOUND['hidden_size']} (57M LM params); tiny LM = 2 layers x 32 (Python overhead per token "
             "dominates); Janus-Pro-1B LM (--real) = 24 layers x 2048, vocabulary 102,400. Codebook 16,384, "
             f"{IMAGE_SIZE} px -> 64 codes per image, {args.dtype} on {args.device}, CFG rows batched (2 rows per "
             "forward). "
             "ours dynamic / static / compiled: the decoding modes (acdc_core/arm/decoding.py set_decoding); "
             "compile_s: the compiled mode's first call, which compiles its one-token step (once per process). "
             "speedup = baseline / ours (> 1: ours faster), from the min and from the median of the timed runs "
             "(cases interleaved, after a warm-up). same_tokens: (a) each mode's codes equal generate's for the "
             "same seed, sampled and greedy; (b) the cropped-cache continuation equals the whole-prefill one (next "
             "frame: identical codes; prefill: logits within 1e-4, max_logit_diff). recomputed_share: the share of "
             "the context from the swapped frame's first code on, what a cropped cache prefills. "
             f"Load average (1/5/15 min) before: {load_before}, after: {load_average()}.")
    print(write_results(args.name, rows, notes))


if __name__ == "__main__":
    main()
