"""``acdc video``: video ACDC headless (``video.py``), the ARM-only video beside it.

  acdc video --prompt "a red fox runs through snow" --frames 32 --window 16 --correct first \\
             --arm LWM_FOLDER --dm SD15 --motion-adapter ADAPTER --out OUT

writes, as the run goes, ``OUT/frames/acdc_NN.png`` (the video as ACDC leaves it: corrected windows at the DM's
size, the rest as the ARM wrote them) and ``OUT/frames/arm_NN.png`` (the ARM alone, same seeds), then
``OUT/side_by_side.webp`` (an animated WEBP, ARM only | ACDC), ``OUT/strip.png`` (every few frames of both, for a
glance) and ``OUT/run.json`` (settings, models, a record per frame and per window: tokens before and after, seeds,
seconds per stage). The two videos share their first window (the ARM writes it once: the ARM-only video continues
from the state before the first correction). Without ``--arm`` / ``--dm`` it runs the built-in models
(``builtin_models``: the toy video world's, or tiny random ones built in ``--models`` where those are missing).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

from .errors import InvalidInputError
from .progress import print_progress

BASELINE, ACDC = "arm", "acdc"


def add_video_parser(sub, add_memory_options) -> argparse.ArgumentParser:
    p = sub.add_parser("video", help="video ACDC: an ARM writes frames, a video DM corrects windows of them",
                       allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prompt", help="the video's prompt")
    what.add_argument("--prompts", help="file: one prompt per line, one per window (or a single line)")
    p.add_argument("--frames", type=int, default=32, help="frames N (default 32, the paper's)")
    p.add_argument("--window", type=int, default=16, help="window L the DM corrects at once (default 16)")
    p.add_argument("--correct", choices=("first", "all", "none"), default="first",
                   help="which windows the DM corrects: the first (the paper's), all, or none (the ARM alone)")
    p.add_argument("--arm", help="a video ARM folder (unified family: an `acdc convert lwm` folder); default: tiny")
    p.add_argument("--dm", help="SD1.5 for AnimateDiff: a diffusers folder or a single-file .safetensors")
    p.add_argument("--dm-config", help="config folder for a single-file SD checkpoint (default: shipped)")
    p.add_argument("--motion-adapter", help="AnimateDiff motion adapter: a diffusers MotionAdapter folder or an "
                                            "original motion-module .safetensors (ComfyUI's animatediff_models)")
    p.add_argument("--strength", type=float, default=0.5, help="SDEdit t' in (0, 1] (default 0.5; paper 0.4-0.6)")
    p.add_argument("--steps", type=int, default=50, help="the DM's schedule (default 50; floor(t' x steps) run)")
    p.add_argument("--cfg", type=float, default=7.5, help="the DM's classifier-free guidance (default 7.5)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--correction-size", type=int, help="side the DM corrects at (default: its native size)")
    for which, label in (("first", "frame 1"), ("later", "later frames")):
        p.add_argument(f"--{which}-cfg", type=float, help=f"the ARM's CFG for {label} (default: the ARM's own)")
        p.add_argument(f"--{which}-top-k", type=int, help=f"the ARM's top-k for {label} (default: the ARM's own)")
    p.add_argument("--temperature", type=float, help="the ARM's temperature (default: the ARM's own)")
    p.add_argument("--seed", type=int, default=0, help="frame k samples the ARM with seed + k - 1")
    p.add_argument("--dm-seed", type=int, help="window w corrects with dm-seed + w - 1 (default: --seed)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of side_by_side.webp (default 8)")
    p.add_argument("--no-baseline", action="store_true", help="skip the ARM-only video")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument("--no-offload", action="store_true", help="keep every model on the device")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model folder's own code to run")
    p.add_argument("--models", default="outputs/models", help="where tiny random built-ins are built if the toy video models are missing")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    add_memory_options(p, default="off")
    return p


def _prompts(args) -> list[str]:
    if args.prompts:
        from .cli_common import read_prompts

        return read_prompts(Path(args.prompts))
    prompt = (args.prompt or "a red fox runs through the snow").strip()
    if not prompt:
        raise InvalidInputError("--prompt is empty; give the video's prompt.")
    return [prompt]


def settings_from(args):
    from .video import VideoSettings

    if args.correction_size is not None and args.correction_size < 1:
        raise InvalidInputError(f"--correction-size must be a positive number of pixels, got {args.correction_size}.")
    if not args.fps > 0:
        raise InvalidInputError(f"--fps must be > 0, got {args.fps}.")
    size = (args.correction_size, args.correction_size) if args.correction_size else None
    return VideoSettings(frames=args.frames, window=args.window, correct=args.correct, strength=args.strength,
                         steps=args.steps, guidance_scale=args.cfg, negative_prompt=args.negative_prompt,
                         correction_size=size, seed=args.seed, dm_seed=args.dm_seed).validate()


def tiny_models(folder: Path) -> tuple[Path, Path, Path]:
    """The tiny built-ins (random weights): an LWM-layout video ARM and AnimateDiff (SD1.5-shaped + adapter)."""
    from .tiny.animatediff import build_tiny_animatediff
    from .tiny.unified import build_tiny_unified

    arm, dm = folder / "tiny_video_arm", folder / "tiny_animatediff"
    if not (arm / "acdc_arm.json").is_file():
        build_tiny_unified(arm, layout="lwm")
    if not (dm / "motion_adapter" / "config.json").is_file():
        build_tiny_animatediff(dm)
    return arm, dm, dm / "motion_adapter"


def builtin_models(folder: Path) -> tuple[Path, Path, Path]:
    """The built-in video models (arm, dm, motion adapter): the toy video world's trained video ARM and video DM
    shipped in ``acdc_core/toy/models``, or, in a copy of the pack without them, the tiny random ones built in
    ``folder``. The one place that decides what the built-in video models are."""
    from .toy import defaults

    if defaults.video_available():
        return defaults.VIDEO_ARM_DIR, defaults.VIDEO_DM_DIR, defaults.VIDEO_ADAPTER_DIR
    return tiny_models(folder)


def run_video_command(args) -> dict:
    from .arm import check_arm_folder, load_arm
    from .cli_common import check_device, check_local_memory, endpoint_backend, memory_settings
    from .correct.video import check_animatediff, load_animatediff
    from .devices import Offloader, pick_dtype
    from .memory import MemoryModule, load_local_llm
    from .report import RunFolder
    from .video import check_prompts, new_video, run_video, validate_video

    # Everything cheap is checked before any model loads, and nothing is written before the checks pass.
    prompts = _prompts(args)
    settings = settings_from(args)
    check_prompts(prompts, settings)
    device = check_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    mem_settings = memory_settings(args)
    endpoint = endpoint_backend(args)
    builtin = args.arm is None and args.dm is None and args.motion_adapter is None
    if not builtin and args.arm is None:
        raise InvalidInputError("--arm is missing: give a video ARM folder (e.g. one `acdc convert lwm` wrote), or "
                                "leave out --arm, --dm and --motion-adapter for the built-in toy video models.")
    if not builtin and settings.correct != "none" and (args.dm is None or args.motion_adapter is None):
        raise InvalidInputError("correcting windows needs --dm (SD1.5) and --motion-adapter (AnimateDiff); or use "
                                "--correct none for the ARM alone.")
    if not builtin:
        check_arm_folder(args.arm, trust_remote_code=args.trust_remote_code)
        if settings.correct != "none":
            check_animatediff(args.dm, args.motion_adapter)
    check_local_memory(args)
    identity = {"command": "video", "prompts": prompts, "settings": asdict(settings),
                "models": {"arm": args.arm, "dm": args.dm, "motion_adapter": args.motion_adapter,
                           "builtin": builtin}, "memory": args.memory, "baseline": not args.no_baseline}
    folder = RunFolder(args.out, identity)
    folder.check(overwrite=args.overwrite)
    if endpoint is not None:
        endpoint.check()
    if builtin:
        from .toy.defaults import video_available

        print("no --arm / --dm given: running the toy video world's built-in models (32 px clips; its prompts are in "
              "the README's toy video world)" if video_available() else "no --arm / --dm given: running tiny "
              "random-weight models (the plumbing only; their frames are noise)", file=sys.stderr)
        args.arm, args.dm, args.motion_adapter = (str(p) for p in builtin_models(Path(args.models)))

    placement = Offloader(device=device, offload=not args.no_offload)
    load_device = "cpu" if placement.offload else device
    started = time.perf_counter()
    arm = load_arm(args.arm, device=load_device, dtype=dtype, trust_remote_code=args.trust_remote_code)
    settings = settings.resolve_sampling(arm, cfg=(args.first_cfg, args.later_cfg),
                                         top_k=(args.first_top_k, args.later_top_k), temperature=args.temperature)
    corrector = None
    if settings.correct != "none":
        corrector = load_animatediff(args.dm, args.motion_adapter, device=load_device, dtype=dtype,
                                     config_dir=args.dm_config)
    backend = endpoint
    if args.memory != "off" and endpoint is None:
        backend = load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
    memory = MemoryModule(backend, mem_settings)
    validate_video(new_video(prompts, settings), arm, corrector, memory)
    loaded = time.perf_counter() - started

    if folder._replacing:
        folder.clear()
        (folder.out / "side_by_side.webp").unlink(missing_ok=True)
    record = {"format": 1, "identity": folder.identity, "settings": json.loads(json.dumps(asdict(settings))),
              "complete": False, "meta": {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                                          "load_seconds": round(loaded, 3)}}
    writer = _Writer(folder, record)
    progress = print_progress()
    shared: dict = {}

    def keep_first_window(state) -> None:       # the state before the first correction: the baseline goes on from it
        if state.open_window == 0 and not state.windows:
            shared["state"] = state

    print(f"ACDC video: {settings.frames} frames, windows of {settings.window}, correct {settings.correct} ...",
          file=sys.stderr)
    acdc = run_video(prompts, arm, corrector, memory, settings, placement=placement, progress=progress,
                     on_frame=keep_first_window, on_window=lambda s: writer.window(ACDC, s))
    baseline = None
    if not args.no_baseline:
        if settings.correct == "none":
            baseline = acdc
        else:
            print("ARM-only video (continuing from the shared first window) ...", file=sys.stderr)
            start = replace(shared["state"], settings=replace(settings, correct="none"))
            baseline = run_video(prompts, arm, None, None, start.settings, start=start, placement=placement,
                                 progress=progress, on_window=lambda s: writer.window(BASELINE, s))
        if baseline is acdc:
            for k in range(len(acdc.windows)):
                writer.window(BASELINE, replace(acdc, windows=acdc.windows[:k + 1]))
    writer.finish(acdc, baseline, fps=args.fps, seconds=time.perf_counter() - started)
    print(f"wrote {folder.out / 'side_by_side.webp'}, strip.png and run.json", file=sys.stderr)
    for r in acdc.windows:
        if r.corrected:
            print(f"  window {r.index + 1} (frames {r.start + 1}-{r.stop}): tokens kept {r.tokens_kept:.0%}  "
                  f"DM prompt: {r.memory_prompt!r}", file=sys.stderr)
    return writer.record


class _Writer:
    """Writes each closed window's frames and the run record as the run goes (atomically)."""

    def __init__(self, folder, record: dict) -> None:
        self.folder, self.record = folder, record
        self._save()

    def window(self, which: str, state) -> None:
        from .images import to_pil
        from .report import frame_files

        r = state.windows[-1]
        frames = r.corrected_frames if (which == ACDC and r.corrected) else r.arm_frames
        for k, image in zip(range(r.start, r.stop), frames):
            path = frame_files(self.folder.out, which, k)
            to_pil(image).save(path)
        self.record[which] = state.summary()
        self._save()

    def finish(self, acdc, baseline, *, fps: float, seconds: float) -> None:
        from .report import save_animation, side_by_side, strip_image

        columns, marked = [("ACDC", acdc.output_frames())], [acdc.corrected_flags()]
        if baseline is not None:
            columns.insert(0, ("ARM only", baseline.output_frames()))
            marked.insert(0, baseline.corrected_flags())
        save_animation(self.folder.out / "side_by_side.webp", side_by_side(columns, marked=marked), fps=fps)
        step = max(1, len(columns[0][1]) // 8)
        picks = list(range(0, len(columns[0][1]), step))[:8]
        strip_image([(label, [frames[k] for k in picks]) for label, frames in columns],
                    [f"frame {k + 1}" for k in picks]).save(self.folder.out / "strip.png")
        self.record["cost"] = cost_summary(acdc, baseline)
        self.record["complete"] = True
        self.record["meta"]["total_seconds"] = round(seconds, 3)
        self._save()

    def _save(self) -> None:
        from .report import RUN_FILE, _atomic

        text = json.dumps(self.record, indent=1)
        _atomic(self.folder.out / RUN_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def cost_summary(acdc, baseline: Optional[object]) -> dict:
    """Seconds per stage: the ARM per frame, and per window decode / memory / correct / encode (ACDC's overhead)."""
    def stages(state) -> dict:
        arm = [f.seconds for f in state.frames]
        out = {"arm_per_frame": round(sum(arm) / len(arm), 4) if arm else 0.0}
        for stage in ("decode", "memory", "correct", "encode"):
            values = [r.seconds[stage] for r in state.windows if stage in r.seconds]
            out[f"{stage}_total"] = round(sum(values), 4)
        out["total"] = round(sum(arm) + sum(out[f"{s}_total"] for s in ("decode", "memory", "correct", "encode")), 4)
        return out

    summary = {"acdc": stages(acdc)}
    if baseline is not None:
        summary["arm_only"] = stages(baseline)
        base = summary["arm_only"]["total"]
        summary["acdc_overhead"] = round(summary["acdc"]["total"] / base, 3) if base else None
    return summary
