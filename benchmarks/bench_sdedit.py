"""Our SDEdit loop vs diffusers' StableDiffusionImg2ImgPipeline, same model and settings.

A locally built SD1.5-shaped model (random weights) big enough that the UNet, not Python, dominates:
UNet block_out_channels (128, 256, 256), 256x256 images (32x32 latents), CFG 7.5. Both run the same DDIM
schedule (trailing spacing) and the same steps: strength 0.5 of a 20-step schedule = 10 UNet calls, each on
the [uncond; cond] batch. Timings are best-of-3 after one warm-up, the two methods interleaved so that load
from other processes hits both alike. Outputs are compared too (they should be identical).

    python benchmarks/bench_sdedit.py [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_results  # noqa: E402
from acdc_core.correct import load_corrector  # noqa: E402
from acdc_core.tiny.sd import build_tiny_sd  # noqa: E402

STRENGTH, STEPS, GUIDANCE, SIZE, BATCH, REPEATS = 0.5, 20, 7.5, 256, 1, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd(Path(tmp) / "sd", block_out_channels=(128, 256, 256), sample_size=SIZE // 8)
        corrector = load_corrector(folder)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=corrector.vae, text_encoder=corrector.text_encoders[0], tokenizer=corrector.tokenizers[0],
        unet=corrector.unet,
        scheduler=DDIMScheduler.from_config(corrector.scheduler_config, timestep_spacing="trailing"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    prompt = "a golden retriever jumps over a log in a sunlit meadow"
    unet_calls = []
    hook = corrector.unet.register_forward_pre_hook(lambda module, inputs: unet_calls.append(1))

    def ours() -> torch.Tensor:
        return corrector.correct(images, prompt, strength=STRENGTH, steps=STEPS, guidance_scale=GUIDANCE, seed=0)

    def theirs() -> torch.Tensor:
        with torch.inference_mode():  # the pipeline's __call__ runs under no_grad only
            return pipe(prompt, image=images, strength=STRENGTH, num_inference_steps=STEPS,
                        guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(0), eta=0.0,
                        output_type="pt").images

    unet_calls.clear()
    difference = (ours() - theirs()).abs().max().item()  # also the warm-up
    steps_run = len(unet_calls) // 2
    hook.remove()

    best = {"ours": float("inf"), "pipeline": float("inf")}
    for _ in range(REPEATS):
        for name, fn in (("ours", ours), ("pipeline", theirs)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)

    rows = [{"method": name, "steps_run": steps_run, "size": f"{BATCH}x{SIZE}x{SIZE}", "best_s": seconds,
             "s_per_step": seconds / steps_run, "ratio_vs_pipeline": seconds / best["pipeline"]}
            for name, seconds in (("acdc SDEdit loop", best["ours"]),
                                  ("diffusers StableDiffusionImg2ImgPipeline", best["pipeline"]))]
    notes = (f"SD1.5-shaped random model, UNet (128, 256, 256), DDIM trailing, strength {STRENGTH} of {STEPS} "
             f"steps, CFG {GUIDANCE}, torch threads {args.threads}; best of {REPEATS} interleaved runs. "
             f"Max |ours - pipeline| = {difference:.3g}. ratio < 1 means our loop is faster.")
    path = write_results("sdedit", rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
