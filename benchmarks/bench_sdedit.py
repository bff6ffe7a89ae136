"""Our SDEdit loop vs diffusers' StableDiffusionImg2ImgPipeline, same model and settings.

By default a locally built SD1.5-shaped model (random weights) big enough that the UNet, not Python, dominates:
UNet block_out_channels (128, 256, 256), 256x256 images (32x32 latents), strength 0.5 of a 20-step schedule.
``--real``: SD1.5 itself (random weights at its published config, 512x512, strength 0.5 of 50 steps, the paper's
setting; meant for a GPU, ``--device cuda --dtype float16``). Both run the same DDIM schedule (trailing spacing) and
the same steps, CFG 7.5, each UNet call on the [uncond; cond] batch. Timings are best-of-3 after one warm-up, the two
methods interleaved so that load from other processes hits both alike. Outputs are compared too (they should be
identical, up to half-precision rounding).

    python benchmarks/bench_sdedit.py [--threads N] [--real --device cuda --dtype float16 --name sdedit_gpu_fp16]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import against_pipeline, placement_arguments, write_results  # noqa: E402
from acdc_core.correct import load_corrector  # noqa: E402
from acdc_core.tiny.sd import build_tiny_sd  # noqa: E402

STRENGTH, GUIDANCE, BATCH, REPEATS = 0.5, 7.5, 1, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--real", action="store_true", help="SD1.5 at its real config, 512 px, 50 steps")
    placement_arguments(parser, "sdedit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, steps = (512, 50) if args.real else (256, 20)
    dtype = getattr(torch, args.dtype)

    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    with tempfile.TemporaryDirectory() as tmp:
        if args.real:
            from benchmarks.bench_acdc_frame import write_sd15
            folder = write_sd15(Path(tmp) / "sd15")
        else:
            folder = build_tiny_sd(Path(tmp) / "sd", block_out_channels=(128, 256, 256), sample_size=size // 8)
        corrector = load_corrector(folder, device=args.device, dtype=dtype)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=corrector.vae, text_encoder=corrector.text_encoders[0], tokenizer=corrector.tokenizers[0],
        unet=corrector.unet,
        scheduler=DDIMScheduler.from_config(corrector.scheduler_config, timestep_spacing="trailing"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    images = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = "a golden retriever jumps over a log in a sunlit meadow"
    def ours() -> torch.Tensor:
        return corrector.correct(images, prompt, strength=STRENGTH, steps=steps, guidance_scale=GUIDANCE, seed=0)

    def theirs() -> torch.Tensor:
        with torch.inference_mode():  # the pipeline's __call__ runs under no_grad only
            return pipe(prompt, image=images, strength=STRENGTH, num_inference_steps=steps,
                        guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(0), eta=0.0,
                        output_type="pt").images

    difference, steps_run, best = against_pipeline(ours, theirs, corrector.unet, args.device, REPEATS)

    rows = [{"method": name, "steps_run": steps_run, "size": f"{BATCH}x{size}x{size}", "best_s": seconds,
             "s_per_step": seconds / steps_run, "ratio_vs_pipeline": seconds / best["pipeline"]}
            for name, seconds in (("acdc SDEdit loop", best["ours"]),
                                  ("diffusers StableDiffusionImg2ImgPipeline", best["pipeline"]))]
    model = "SD1.5 (random weights, published config)" if args.real else "SD1.5-shaped random model, UNet (128, 256, 256)"
    notes = (f"{model}, {args.dtype} on {args.device}, DDIM trailing, strength {STRENGTH} of {steps} "
             f"steps, CFG {GUIDANCE}, torch threads {args.threads}; best of {REPEATS} interleaved runs. "
             f"Max |ours - pipeline| = {difference:.3g}. ratio < 1 means our loop is faster.")
    path = write_results(args.name, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
