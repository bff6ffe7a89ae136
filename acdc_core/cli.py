"""Headless entry points.

  acdc story --prompts story.txt --arm ARM_DIR --dm DM_PATH [--memory per-frame --llm LLM_DIR] --out OUT
  acdc demo --out OUT      # a held-out toy story on the shipped toy-world models: ARM only vs ACDC, judged
  acdc demo --video --out OUT   # a held-out toy clip: ARM only vs video ACDC side by side, judged
  acdc video --prompt "..." --frames 32 --window 16 --correct first --arm ARM --dm SD15 --motion-adapter MA --out OUT
  acdc convert lwm SRC DST --allow-pickle-vqgan    # LWM's JAX checkpoint -> a video ARM folder (convert/lwm.py)
  acdc bench run --out OUT --toy heldout --count 100   # the paper's variants over a story set (cli_bench.py)

Each writes OUT/frames/*.png, OUT/strip.png (ARM vs corrected side by side) and OUT/run.json; video also
OUT/side_by_side.webp (cli_video.py).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from .arm.base import SamplingSettings
from .correct import SCHEDULERS
from .devices import Offloader, pick_device, pick_dtype
from .errors import ACDCError, InvalidInputError, MissingModelFilesError
from .images import load_mask
from .progress import print_progress
from .memory.endpoint import scrub_url
from .state import StorySettings, describe_correct_frames, new_story, parse_correct_frames
from .cli_common import (add_memory_options, check_device, check_local_memory, endpoint_backend,  # noqa: F401
                         memory_settings, read_prompts, read_text_file)

logger = logging.getLogger("acdc_core.cli")

DEMO_PROMPTS = [
    "Benny, a golden retriever, plays in a sunny meadow with a red ball.",
    "He jumps over a fallen log.",
    "He chases a butterfly near the river.",
    "He rests in the shade of an oak tree.",
    "He watches the sun set behind the hills.",
    "He falls asleep under the stars.",
]


def parse_masks(specs: Sequence[str], option: str = "--mask") -> dict[int, torch.Tensor]:
    """--mask (or --token-mask) FRAME:PATH (1-based frame; white = repaint, or a PNG's transparent pixels as ComfyUI
    paints)."""
    masks = {}
    for spec in specs:
        frame, _, path = spec.partition(":")
        if not frame.isdigit() or int(frame) < 1 or not path:
            raise InvalidInputError(f"{option} takes FRAME:PATH (e.g. 3:moon_mask.png), got {spec!r}.")
        if not Path(path).is_file():
            raise InvalidInputError(f"mask file {path} does not exist.")
        masks[int(frame) - 1] = load_mask(path)
    return masks


def check_masks(masks: dict[int, torch.Tensor], prompts: Sequence[str], settings: StorySettings) -> None:
    """Masks against the story, before any model loads (their sizes are checked once the models are known)."""
    for index in sorted(masks):
        if index >= len(prompts):
            raise InvalidInputError(f"--mask names frame {index + 1} but the story has {len(prompts)} frames.")
        if not settings.corrects(index):
            raise InvalidInputError(
                f"--mask names frame {index + 1}, which --correct-frames {describe_correct_frames(settings.correct_frames)} "
                "leaves uncorrected; a fix needs a corrected frame.")


def check_models(args, settings: StorySettings) -> None:
    """The model paths, without loading anything: folders and files exist, are of a kind the engine loads, and
    hold safetensors weights that are whole (headers only)."""
    from .arm import check_arm_folder
    from .arm.registry import check_decoding
    from .correct import check_corrector_path

    check_decoding(check_arm_folder(args.arm, trust_remote_code=args.trust_remote_code)[1], args.arm_decoding)
    if settings.correct_frames != 0:
        check_corrector_path(args.dm)
    check_local_memory(args)


def settings_from(args) -> StorySettings:
    if args.correction_size is not None and args.correction_size < 1:
        raise InvalidInputError(f"--correction-size must be a positive number of pixels, got {args.correction_size}.")
    size = (args.correction_size, args.correction_size) if args.correction_size else None
    return StorySettings(
        sampling=SamplingSettings(guidance_scale=args.arm_cfg, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, maskgit_steps=args.maskgit_steps),
        strength=args.strength, steps=args.steps, guidance_scale=args.cfg, negative_prompt=args.negative_prompt,
        scheduler=args.scheduler, correct_frames=parse_correct_frames(args.correct_frames),
        fix_strength=args.fix_strength, correction_size=size, seed=args.seed, dm_seed=args.dm_seed,
        fix_seed=args.fix_seed,
    ).validate()


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_identity(args, prompts, settings: StorySettings, dtype: torch.dtype) -> dict:
    """What makes two runs the same run (``--resume`` continues only the same one): the prompts, the settings,
    the models, the memory, the masks (by content) and the dtype. Not the device, the offloading or --out."""
    return {
        "command": args.command, "prompts": list(prompts), "settings": asdict(settings), "dtype": str(dtype).replace("torch.", ""),
        "models": {"arm": str(args.arm), "dm": str(args.dm), "dm_config": args.dm_config, "llm": args.llm,
                   "endpoint": scrub_url(args.endpoint) if args.endpoint else None,
                   "llm_model": args.llm_model if args.endpoint else None},
        "memory": args.memory,
        "system_prompt": _sha256(args.system_prompt) if args.system_prompt else None,
        "masks": {spec.partition(":")[0]: _sha256(spec.partition(":")[2]) for spec in (args.mask or [])},
        **({"token_masks": {spec.partition(":")[0]: _sha256(spec.partition(":")[2]) for spec in args.token_mask}}
           if args.token_mask else {}),
        "baseline": bool(args.baseline),
    }


def run(args) -> dict:
    from .arm import load_arm
    from .correct import load_corrector
    from .memory import MemoryModule, load_local_llm
    from .report import RunFolder
    from .story import run_story, validate_inputs

    # Everything cheap is checked before any model loads, and nothing is written before the checks pass.
    prompts = read_prompts(Path(args.prompts)) if args.prompts else DEMO_PROMPTS
    settings = settings_from(args)
    settings.check_seeds(len(prompts))
    masks = parse_masks(args.mask or [])
    check_masks(masks, prompts, settings)
    token_masks = parse_masks(args.token_mask or [], "--token-mask")
    for index in sorted(token_masks):
        if index >= len(prompts):
            raise InvalidInputError(f"--token-mask names frame {index + 1} but the story has {len(prompts)} frames.")
    device = check_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    mem_settings = memory_settings(args)
    endpoint = endpoint_backend(args)
    check_models(args, settings)
    folder = RunFolder(args.out, run_identity(args, prompts, settings, dtype))
    earlier = folder.check(resume=args.resume, overwrite=args.overwrite)
    if earlier is not None and earlier.get("complete"):
        print(f"{folder.out} already holds this run, complete ({len(earlier['frames'])} frames); nothing to do.",
              file=sys.stderr)
        return earlier
    if endpoint is not None:
        endpoint.check()   # an unreachable endpoint fails here, before any model is loaded

    placement = Offloader(device=device, offload=not args.no_offload)
    load_device = "cpu" if placement.offload else device
    started = time.perf_counter()
    corrector = None
    if settings.correct_frames != 0:
        corrector = load_corrector(args.dm, device=load_device, dtype=dtype, config_dir=args.dm_config)
    backend = endpoint
    if args.memory != "off" and endpoint is None:
        backend = load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
    memory = MemoryModule(backend, mem_settings)
    arm = load_arm(args.arm, device=load_device, dtype=dtype, trust_remote_code=args.trust_remote_code,
                   decoding=args.arm_decoding)
    loaded = time.perf_counter() - started
    validate_inputs(new_story(prompts), arm, corrector, memory, settings, masks,  # needs the models; before any frame
                    token_masks)

    meta = {"arm": str(args.arm), "dm": str(args.dm), "memory": args.memory, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "load_seconds": round(loaded, 3)}
    folder.start(settings, meta, earlier)
    state = folder.restore(prompts)
    progress = print_progress()
    baseline = None
    if args.baseline:
        base_settings = replace(settings, correct_frames=0)
        baseline = folder.restore(prompts, "baseline", "base")
        if not baseline.done:
            print("ARM-only baseline story ...", file=sys.stderr)
            baseline = _frames(lambda: run_story(
                prompts, arm, None, None, base_settings, start=baseline, placement=placement, progress=progress,
                on_frame=lambda s: folder.save(state, baseline=s)), folder, "baseline")
    print("ACDC story ...", file=sys.stderr)
    if state.records:
        print(f"resuming after frame {len(state.records)} of {len(prompts)}", file=sys.stderr)
    state = _frames(lambda: run_story(
        prompts, arm, corrector, memory, settings, fix_masks=masks, token_masks=token_masks, start=state,
        placement=placement, progress=progress, on_frame=lambda s: folder.save(s, baseline=baseline)), folder, "frames")
    record = folder.save(state, baseline=baseline, complete=True,
                         meta={"total_seconds": round(time.perf_counter() - started, 3)})
    print(f"wrote {folder.out / 'strip.png'} and run.json ({len(state.records)} frames)", file=sys.stderr)
    for r in state.records:
        print(f"  frame {r.index + 1}: tokens kept {r.tokens_kept:.0%}  DM prompt: {r.memory_prompt!r}",
              file=sys.stderr)
    return record


class Stopped(ACDCError):
    """A story stopped part-way; its finished frames are on disk and ``--resume`` continues it."""

    def __init__(self, message: str, *, interrupted: bool) -> None:
        super().__init__(message)
        self.interrupted = interrupted


def _frames(run_part, folder, key: str):
    """Run one story (``run_part()``), turning a failure part-way into a message that says which frame stopped,
    what is saved and how to continue."""
    try:
        return run_part()
    except (Exception, KeyboardInterrupt) as error:   # whatever stops it, what is finished stays and is named
        done = len(folder.record.get(key, []))
        total = len(folder.identity["prompts"])
        what = "the ARM-only baseline, " if key == "baseline" else ""
        interrupted = isinstance(error, KeyboardInterrupt)
        if interrupted:
            why = "interrupted"
        else:
            logger.debug("the story stopped", exc_info=True)
            why = f"stopped: {error}" if isinstance(error, ACDCError) else f"stopped: {type(error).__name__}: {error}"
        saved = (f"frame 1 is saved in {folder.out}" if done == 1 else f"frames 1-{done} are saved in {folder.out}"
                 if done else f"no frame was finished ({folder.out})")
        raise Stopped(f"{what}frame {done + 1} of {total} {why}\n{saved}; run the same command with --resume to "
                      "continue from there.", interrupted=interrupted) from None


def demo(args) -> dict:
    """The toy world's trained models (shipped with the pack) on a held-out story, or your --prompts:
    ARM only / ACDC without memory / ACDC side by side, judged frame by frame."""
    from .toy import defaults, split_stories
    from .toy.demo import run_demo, story_from_prompts

    if args.video:
        return video_demo(args)
    prompts = read_prompts(Path(args.prompts)) if args.prompts else None
    settings = settings_from(args)
    mem_settings = memory_settings(args)
    check_device(args.device)
    folder = check_demo_folder(Path(args.out))
    if not defaults.available():
        return tiny_demo(args)
    if prompts is not None:
        story = story_from_prompts(prompts)
    else:
        story = split_stories("heldout", check_story_index(args.story) + 1)[args.story]
        prompts = list(story.prompts)
    arm, corrector, llm = defaults.load_toy_models(device=str(pick_device(args.device)))
    folder.clear()      # the earlier demo's pictures go now, so none is left beside the new ones
    result = run_demo(Path(args.out), prompts, arm, corrector, llm, settings, mem_settings, story=story,
                      progress=print_progress())
    print(f"wrote {Path(args.out) / 'strip.png'}, judge.md and run.json\n\n{result['table']}")
    for prompt, memory_prompt in zip(prompts, result["states"]["ACDC"].memory_prompts):
        print(f"  {prompt!r} -> memory: {memory_prompt!r}")
    return result


def check_story_index(k: int) -> int:
    if k < 0:
        raise InvalidInputError(f"--story picks the K-th held-out story or clip, counted from 0; got {k}.")
    return k


def video_demo(args) -> dict:
    """The toy video world's trained models (shipped with the pack) on held-out clip ``--story``: ARM only and ACDC
    (first window corrected) side by side in one animation, judged frame by frame."""
    from .toy import defaults
    from .toy.demo_video import run_video_demo
    from .toy.video_world import split_clips

    if args.prompts:
        raise InvalidInputError("--video runs a held-out clip of the toy video world; --prompts is for the story "
                                "demo. For your own video prompt run `acdc video --prompt ...`.")
    k = check_story_index(args.story)
    check_device(args.device)
    if not defaults.video_available():
        raise MissingModelFilesError(f"the toy video models are missing from {defaults.MODELS}; reinstall the pack, "
                                     "or train them: python -m acdc_core.toy.train --world video --out "
                                     f"{defaults.MODELS}.")
    folder = check_demo_folder(Path(args.out))
    settings = replace(defaults.TOY_VIDEO_SETTINGS, strength=args.strength, steps=args.steps, guidance_scale=args.cfg)
    settings.validate()
    clip = split_clips("heldout", k + 1)[k]
    arm, corrector = defaults.load_toy_video_models(device=str(pick_device(args.device)))
    folder.clear()
    for name in ("side_by_side.webp", "judge.md"):
        (Path(args.out) / name).unlink(missing_ok=True)
    print(f"clip {k}: {clip.prompt}", file=sys.stderr)
    result = run_video_demo(Path(args.out), clip, arm, corrector, settings, seed=1000 + k + args.seed,
                            progress=print_progress())
    print(f"wrote {Path(args.out) / 'side_by_side.webp'}, strip.png, judge.md and run.json\n\n{clip.prompt}\n\n"
          f"{result['table']}")
    return result


def check_demo_folder(out: Path):
    """The demo replaces its own earlier output in ``out`` (and only that): a folder holding an ``acdc story`` run
    is refused, so a demo never overwrites a story."""
    from .report import RunFolder

    folder = RunFolder(out, {})
    earlier = folder.read()
    if earlier is not None and "variants" not in earlier and earlier.get("identity", {}).get("command") != "demo":
        raise InvalidInputError(f"{folder.out} holds an `acdc story` run; the demo replaces only its own output. "
                                "Give the demo another --out.")
    folder.check(overwrite=True)
    return folder


def tiny_demo(args) -> dict:
    """Without the trained toy models: tiny random-weight models built locally (proves the plumbing only)."""
    from .tiny import build_default_models

    print("the trained toy models are missing; running tiny random-weight models instead", file=sys.stderr)
    models = build_default_models(Path(args.models))
    args.arm, args.dm, args.llm = str(models["arm"]), str(models["dm"]), str(models["llm"])
    args.dm_config, args.endpoint = None, None
    return run(args)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options both commands use."""
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prompts", help="story file: one prompt per line, or a .json file holding a list of strings")
    p.add_argument("--system-prompt", help="file with your own memory system prompt (for the chosen mode)")
    p.add_argument("--strength", type=float, default=0.5, help="SDEdit t' in (0, 1] (default 0.5)")
    p.add_argument("--steps", type=int, default=50,
                   help="length of the schedule (default 50); the floor(t' x steps) steps at or below t' run")
    p.add_argument("--cfg", type=float, default=7.5, help="DM classifier-free guidance (default 7.5)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS),
                   help="the DM's sampler (default ddim, the paper's; eta 0)")
    p.add_argument("--correction-size", type=int, help="side the DM corrects at (default: its native size)")
    p.add_argument("--arm-cfg", type=float, default=5.0, help="ARM classifier-free guidance")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--arm-decoding", default="dynamic", choices=("dynamic", "static", "compiled"),
                   help="the ARM's key/value cache: dynamic (default), static, or static with the one-token step "
                        "compiled (torch.compile; CUDA graphs on a GPU): README, speed")
    p.add_argument("--maskgit-steps", type=int, default=18,
                   help="MaskGIT steps of an ARM that fills a frame in parallel (Show-o; default 18, as upstream)")
    p.add_argument("--seed", type=int, default=0, help="base seed; frame k samples the ARM with seed + k - 1")
    p.add_argument("--dm-seed", type=int, help="base seed of the DM's correction (default: --seed)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def add_story_options(p: argparse.ArgumentParser) -> None:
    """Options of ``acdc story`` only (the demo fixes them: it compares its own variants)."""
    p.add_argument("--arm", required=True, help="ARM folder: Janus / Janus-Pro (transformers format) or a "
                                                "unified-vocabulary ARM (acdc_arm.json, lm/, vq/)")
    p.add_argument("--dm", help="diffusion model: a diffusers folder (SD1.x/2.x, SDXL, pixel space) or a "
                                "single-file SD1.5/SDXL .safetensors checkpoint")
    p.add_argument("--dm-config", help="config folder for a single-file checkpoint (default: shipped)")
    add_memory_options(p)
    p.add_argument("--correct-frames", default="all",
                   help="how many frames the DM corrects, from frame 1: 'all' (ACDC, the default), k (ACDC #k: the "
                        "first k only) or 'none' / 0 (the ARM alone)")
    p.add_argument("--fix-strength", type=float, default=0.8, help="t' of the masked physical fix")
    p.add_argument("--mask", action="append", metavar="FRAME:PATH", help="physical-fix mask for a frame")
    p.add_argument("--token-mask", action="append", metavar="FRAME:PATH",
                   help="token-level inpainting (Show-o): the ARM fills this region of the frame again, at the ARM's "
                        "frame size, before correction")
    p.add_argument("--fix-seed", type=int, help="base seed of the physical fix (default: the frame's DM seed)")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument("--no-offload", action="store_true", help="keep every model on the device")
    p.add_argument("--baseline", action="store_true", help="also run an ARM-only story for comparison")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model folder's own code to run")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out from its last finished frame (same results)")
    again.add_argument("--overwrite", action="store_true", help="replace the run already in --out")


# ``acdc demo`` falls back to ``run`` on tiny random models when the trained toy models are missing: these are
# the story-only options it then runs with (it always replaces its own earlier output).
DEMO_STORY_DEFAULTS = {"arm": None, "dm": None, "dm_config": None, "memory": "per-frame", "llm": None,
                       "endpoint": None, "llm_model": None, "api_key_env": "ACDC_LLM_API_KEY", "allow_http_key": False,
                       "endpoint_timeout": 60.0, "strict_memory": False, "correct_frames": "all", "fix_strength": 0.8, "mask": None,
                       "token_mask": None, "arm_decoding": "dynamic", "fix_seed": None, "dtype": "auto", "no_offload": False, "trust_remote_code": False,
                       "resume": False, "overwrite": True}


def toy_defaults() -> dict:
    """The demo's option defaults: the settings the toy models are run with."""
    from .toy.defaults import TOY_SETTINGS as t

    return {"strength": t.strength, "steps": t.steps, "cfg": t.guidance_scale, "arm_cfg": t.sampling.guidance_scale,
            "temperature": t.sampling.temperature, "top_k": t.sampling.top_k, "top_p": t.sampling.top_p,
            "baseline": True, **DEMO_STORY_DEFAULTS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acdc", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    story = sub.add_parser("story", help="run ACDC on your own models", allow_abbrev=False)
    add_common_options(story)
    add_story_options(story)
    dem = sub.add_parser("demo", help="a toy story on the built-in models: ARM only vs ACDC, judged", allow_abbrev=False)
    add_common_options(dem)
    dem.add_argument("--story", type=int, default=0, help="which held-out toy story (or clip, with --video), "
                                                          "counted from 0 (default 0)")
    dem.add_argument("--video", action="store_true", help="the toy video world instead: one held-out clip, ARM only "
                                                          "and ACDC (first window corrected) side by side")
    dem.add_argument("--models", default="outputs/models", help="where tiny fallback models are built")
    dem.set_defaults(**toy_defaults())
    from .cli_bench import add_bench_parser
    from .cli_video import add_video_parser
    from .convert.lwm import build_parser as lwm_parser

    add_video_parser(sub, add_memory_options)
    add_bench_parser(sub, add_memory_options)
    convert = sub.add_parser("convert", help="convert a published checkpoint into a folder the engine loads",
                             allow_abbrev=False)
    kinds = convert.add_subparsers(dest="kind", required=True)
    lwm_parser(kinds.add_parser("lwm", allow_abbrev=False, help="LWM's JAX checkpoint (params, vqgan, "
                                                                "tokenizer.model) -> a unified-vocabulary ARM folder"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("story", "demo"):
        try:
            arm_only = parse_correct_frames(args.correct_frames) == 0
        except InvalidInputError as error:
            parser.error(str(error))
        if args.command == "story" and not arm_only and not args.dm:
            parser.error("--dm is required unless --correct-frames none")
    try:
        if args.command == "video":
            from .cli_video import run_video_command

            run_video_command(args)
        elif args.command == "bench":
            from .cli_bench import run_bench_command

            run_bench_command(args)
        elif args.command == "convert":
            from .convert.lwm import run as convert_lwm

            return convert_lwm(args)
        else:
            demo(args) if args.command == "demo" else run(args)
    except Stopped as error:
        print(f"acdc: {error}", file=sys.stderr)
        return 130 if error.interrupted else 1
    except ACDCError as error:
        print(f"acdc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = ("run the same command again to continue" if args.command == "bench" else "continue with --resume")
        print(f"acdc: interrupted; what was finished so far is in --out ({again}).", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
