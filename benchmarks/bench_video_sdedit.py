"""Our AnimateDiff window SDEdit vs diffusers' AnimateDiffVideoToVideoPipeline, same model and settings.

By default a locally built SD1.5-shaped AnimateDiff (random weights) big enough that the UNet, not Python, dominates:
UNet and motion adapter channels (64, 128, 128), a window of 8 frames at 128x128 (16x16 latents), strength 0.5 of a
20-step schedule (10 guided UNet calls on [2, 4, 8, 16, 16]). Both run the same DDIM schedule (trailing spacing), CFG
7.5 and the same VAE chunk size; timings are best of 5 after one warm-up, the two methods interleaved so that load
from other processes hits both alike. Outputs are compared too (identical up to the un-scaling rounding, ~1e-6).

``--real``: SD1.5 at its published config (random weights, ``acdc_core/correct/configs/sd15``) + a motion adapter at
AnimateDiff v2's (``configs/animatediff_v1_5_2``), a 16-frame 512x512 window, strength 0.5 of 4 steps (2 guided UNet
calls): the seconds per step and the peak memory of correcting one such window. Each measurement runs in its own
process: peak RSS is /proc/self/status VmHWM, reset after loading (``clear_refs``) so the load's own peak (UNet2D,
adapter and motion UNet together for a moment) is reported apart; on a GPU torch.cuda.max_memory_allocated.
``--estimate`` (with ``--real``, for a slow CPU): one guided UNet step on the whole window and one VAE encode + decode
of one chunk, measured the same way, and the totals extrapolated.

    python benchmarks/bench_video_sdedit.py [--threads N]
    python benchmarks/bench_video_sdedit.py --real [--estimate] [--pipeline] [--device cuda --dtype float16 \\
        --name video_sdedit_gpu_fp16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import against_pipeline, placement_arguments, write_results  # noqa: E402
from acdc_core.correct.schedule import steps_run  # noqa: E402
from acdc_core.correct.video import V1_5_2_CONFIG, load_animatediff  # noqa: E402
from acdc_core.tiny.animatediff import build_tiny_animatediff  # noqa: E402

STRENGTH, GUIDANCE, REPEATS = 0.5, 7.5, 5
PROMPT = "a golden retriever jumps over a log in a sunlit meadow"


def pipeline_for(corrector):
    from diffusers import AnimateDiffVideoToVideoPipeline, DDIMScheduler

    pipe = AnimateDiffVideoToVideoPipeline(
        vae=corrector.vae, text_encoder=corrector.text_encoder, tokenizer=corrector.tokenizer, unet=corrector.unet,
        motion_adapter=None,
        scheduler=DDIMScheduler.from_config(corrector.scheduler_config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def methods(corrector, frames: torch.Tensor, steps: int):
    """(ours, theirs): one window correction each, same settings."""
    pipe = pipeline_for(corrector)
    height, width = frames.shape[-2:]

    def ours() -> torch.Tensor:
        return corrector.correct_video(frames, PROMPT, strength=STRENGTH, steps=steps, guidance_scale=GUIDANCE, seed=0)

    def theirs() -> torch.Tensor:
        with torch.inference_mode():  # the pipeline's __call__ runs under no_grad only
            return pipe(prompt=PROMPT, video=frames[None], strength=STRENGTH, num_inference_steps=steps,
                        guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(0), eta=0.0, height=height,
                        width=width, decode_chunk_size=corrector.decode_chunk_size, output_type="pt").frames[0]

    return ours, theirs


# -- the default: ratio against the pipeline -------------------------------------------------------------------

def small(args) -> None:
    frames_count, size, steps = 8, 128, 20
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_animatediff(Path(tmp) / "animatediff", block_out_channels=(64, 128, 128),
                                        sample_size=size // 8)
        corrector = load_animatediff(folder, folder / "motion_adapter", device=args.device,
                                     dtype=getattr(torch, args.dtype))
    frames = torch.rand(frames_count, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours, theirs = methods(corrector, frames, steps)
    difference, steps_run, best = against_pipeline(ours, theirs, corrector.unet, args.device, REPEATS)
    rows = [{"method": name, "steps_run": steps_run, "window": f"{frames_count}x{size}x{size}", "best_s": seconds,
             "s_per_step": seconds / steps_run, "ratio_vs_pipeline": seconds / best["pipeline"]}
            for name, seconds in (("acdc window SDEdit (AnimateDiffCorrector)", best["ours"]),
                                  ("diffusers AnimateDiffVideoToVideoPipeline", best["pipeline"]))]
    notes = (f"SD1.5-shaped random AnimateDiff, UNet + motion adapter (64, 128, 128), {args.dtype} on {args.device}, "
             f"DDIM trailing, strength {STRENGTH} of {steps} steps, CFG {GUIDANCE}, VAE chunk "
             f"{corrector.decode_chunk_size}, torch threads {args.threads}; best of {REPEATS} interleaved runs. "
             f"Max |ours - pipeline| = {difference:.3g} (the pipeline un-scales latents as (1/0.18215)*x, we as "
             f"x/0.18215; the denoised latents are identical). ratio < 1 means our loop is faster.")
    path = write_results(args.name, rows, notes)
    print(path.read_text())


# -- --real: seconds per step and peak memory of a 16-frame 512 px window ----------------------------------------

def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 where there is none, e.g. not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def write_real_models(folder: Path) -> Path:
    """SD1.5 (random weights, published configs) with a motion adapter at v1-5-2's config, unless already there."""
    from diffusers import MotionAdapter

    from benchmarks.bench_acdc_frame import write_sd15

    write_sd15(folder)
    if not (folder / "motion_adapter" / "diffusion_pytorch_model.safetensors").is_file():
        torch.manual_seed(1)
        MotionAdapter.from_config(json.loads(V1_5_2_CONFIG.read_text())).save_pretrained(folder / "motion_adapter")
    return folder


def measure(args) -> dict:
    """One measurement in this process (``--measure ours|pipeline``): load, then correct (or estimate) one window."""
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    folder = Path(args.models)
    corrector = load_animatediff(folder, folder / "motion_adapter", device=args.device,
                                 dtype=getattr(torch, args.dtype))
    load_s, load_peak = time.perf_counter() - start, _status("VmHWM")
    frames = torch.rand(args.frames, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    reset = _reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_times: list[float] = []
    began: list[float] = []

    def before(module, inputs) -> None:   # hooks must return None (a value would replace the inputs / output)
        sync()
        began.append(time.perf_counter())

    def after(module, inputs, output) -> None:
        sync()
        step_times.append(time.perf_counter() - began[-1])

    corrector.unet.register_forward_pre_hook(before)
    corrector.unet.register_forward_hook(after)
    result = {"method": args.measure, "load_s": load_s, "load_peak_rss_gb": load_peak / 2**30,
              "weights_rss_gb": _status("VmRSS") / 2**30}
    if args.estimate:
        result.update(estimate(corrector, frames, sync))
        result["window_s_estimated"] = (result.pop("chunks") * (result["encode_chunk_s"] + result["decode_chunk_s"])
                                        + steps_run(STRENGTH, args.steps) * step_times[-1])
        result["steps_run"] = f"1 measured ({steps_run(STRENGTH, args.steps)} at these settings)"
    else:
        ours, theirs = methods(corrector, frames, args.steps)
        start = time.perf_counter()
        (ours if args.measure == "ours" else theirs)()
        sync()
        result["window_s"] = time.perf_counter() - start
        result["steps_run"] = len(step_times)
    result["s_per_step"] = sum(step_times) / max(1, len(step_times))
    result["peak_rss_gb" if reset else "peak_rss_gb_incl_load"] = _status("VmHWM") / 2**30
    if cuda:
        result["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def estimate(corrector, frames: torch.Tensor, sync) -> dict:
    """One guided UNet step on the whole window and one VAE chunk through encode and decode; totals extrapolated."""
    sd = corrector._sd
    chunk = min(corrector.decode_chunk_size, len(frames))
    with torch.inference_mode():
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        latents = sd._encode(frames[:chunk].to(corrector.device) * 2 - 1, generator)
        sync()
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        sd._decode(latents)
        sync()
        decode_s = time.perf_counter() - start
        embeds, _ = sd._conditioning([PROMPT], "", True, tuple(frames.shape[-2:]))
        video = torch.randn(2, latents.shape[1], len(frames), *latents.shape[-2:], dtype=latents.dtype,
                            device=latents.device)
        corrector.unet(video, torch.tensor(499, device=latents.device),
                       encoder_hidden_states=embeds.repeat_interleave(len(frames), dim=0), return_dict=False)
    return {"vae_chunk": chunk, "encode_chunk_s": encode_s, "decode_chunk_s": decode_s,
            "chunks": -(-len(frames) // chunk)}


def real(args) -> None:
    steps = steps_run(STRENGTH, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        models = write_real_models(Path(args.models) if args.models else Path(tmp) / "animatediff_sd15")
        rows = []
        for method in ["ours"] + (["pipeline"] if args.pipeline else []):
            command = [sys.executable, __file__, "--measure", method, "--models", str(models), "--device", args.device,
                       "--dtype", args.dtype, "--threads", str(args.threads), "--steps", str(args.steps),
                       "--frames", str(args.frames), "--size", str(args.size)] + (["--estimate"] if args.estimate else [])
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            rows.append({"window": f"{args.frames}x{args.size}x{args.size}",
                         **json.loads(done.stdout.strip().splitlines()[-1])})
    mode = ("ESTIMATE: one guided UNet step on the whole window and one VAE chunk measured, totals extrapolated"
            if args.estimate else f"strength {STRENGTH} of {args.steps} steps ({steps} guided UNet calls)")
    notes = (f"SD1.5 (random weights, published config) + AnimateDiff v2 motion adapter config (453.2M parameters), "
             f"{args.dtype} on {args.device}, torch threads {args.threads}, CFG {GUIDANCE}, DDIM trailing; {mode}. "
             "Each method in its own process; peak_rss_gb = VmHWM after a reset that follows loading (what "
             "correcting the window adds to the weights), load_peak_rss_gb = VmHWM while loading.")
    path = write_results(args.name, rows, notes)
    print(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--real", action="store_true", help="SD1.5 + AnimateDiff v2 at their real configs")
    parser.add_argument("--estimate", action="store_true", help="with --real: one step and one VAE chunk only")
    parser.add_argument("--pipeline", action="store_true", help="with --real: measure the diffusers pipeline too")
    parser.add_argument("--steps", type=int, default=4, help="with --real: the schedule (strength 0.5 runs half)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--models", default="", help="with --real: a folder to write/keep the random models in")
    parser.add_argument("--measure", choices=("ours", "pipeline"), help=argparse.SUPPRESS)
    placement_arguments(parser, "video_sdedit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args)))
    elif args.real:
        if args.name == "video_sdedit":
            args.name = "video_sdedit_real" + ("_estimate" if args.estimate else "")
        real(args)
    else:
        small(args)


if __name__ == "__main__":
    main()
