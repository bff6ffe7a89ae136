"""Headless entry points.

  acdc story --prompts story.txt --arm ARM_DIR --dm DM_PATH [--memory per-frame --llm LLM_DIR] --out OUT
  acdc demo --out OUT      # a held-out toy story on the shipped toy-world models: ARM only vs ACDC, judged

Both write OUT/frames/*.png, OUT/strip.png (ARM vs corrected side by side) and OUT/run.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from .arm.base import SamplingSettings
from .correct import SCHEDULERS
from .devices import Offloader, pick_device, pick_dtype
from .errors import ACDCError, InvalidInputError
from .images import load_mask
from .progress import print_progress
from .state import StorySettings, new_story, parse_correct_frames, story_lines

DEMO_PROMPTS = [
    "Benny, a golden retriever, plays in a sunny meadow with a red ball.",
    "He jumps over a fallen log.",
    "He chases a butterfly near the river.",
    "He rests in the shade of an oak tree.",
    "He watches the sun set behind the hills.",
    "He falls asleep under the stars.",
]


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with # are skipped), or a JSON list."""
    if not path.is_file():
        raise InvalidInputError(f"prompts file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            prompts = json.loads(text)
        except ValueError as error:
            raise InvalidInputError(f"prompts file {path} starts with '[' but is not a JSON list: {error}") from None
    else:
        prompts = story_lines(text)
    return list(new_story(prompts).prompts)


def parse_masks(specs: Sequence[str]) -> dict[int, torch.Tensor]:
    """--mask FRAME:PATH (1-based frame; white = repaint, or a PNG's transparent pixels as ComfyUI paints)."""
    masks = {}
    for spec in specs:
        frame, _, path = spec.partition(":")
        if not frame.isdigit() or int(frame) < 1 or not path:
            raise InvalidInputError(f"--mask takes FRAME:PATH (e.g. 3:moon_mask.png), got {spec!r}.")
        if not Path(path).is_file():
            raise InvalidInputError(f"mask file {path} does not exist.")
        masks[int(frame) - 1] = load_mask(path)
    return masks


def memory_settings(args):
    from .memory import MemorySettings

    settings = MemorySettings(mode=args.memory, seed=args.seed)
    if args.system_prompt:
        text = Path(args.system_prompt).read_text(encoding="utf-8")
        field = "whole_story_system_prompt" if args.memory == "whole-story" else "system_prompt"
        settings = replace(settings, **{field: text})
    return settings.validate()


def memory_backend(args):
    """The memory LLM: None for --memory off, else a local model or an endpoint (checked to be reachable)."""
    from .memory import OpenAICompatibleLLM, load_local_llm

    if args.memory == "off":
        return None
    if args.endpoint:
        backend = OpenAICompatibleLLM(args.endpoint, args.llm_model, api_key_env=args.api_key_env)
        backend.check()   # an unreachable endpoint fails here, before any model is loaded
        return backend
    if args.llm:
        return load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
    raise InvalidInputError(
        f"--memory {args.memory} needs a language model: --llm FOLDER (local) or --endpoint URL "
        "(OpenAI-compatible); or use --memory off.")


def settings_from(args) -> StorySettings:
    size = (args.correction_size, args.correction_size) if args.correction_size else None
    return StorySettings(
        sampling=SamplingSettings(guidance_scale=args.arm_cfg, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p),
        strength=args.strength, steps=args.steps, guidance_scale=args.cfg, negative_prompt=args.negative_prompt,
        scheduler=args.scheduler, correct_frames=parse_correct_frames(args.correct_frames),
        fix_strength=args.fix_strength, correction_size=size, seed=args.seed, dm_seed=args.dm_seed,
        fix_seed=args.fix_seed,
    ).validate()


def run(args) -> dict:
    from .arm import load_arm
    from .correct import load_corrector
    from .memory import MemoryModule
    from .report import write_run
    from .story import run_story

    # Everything cheap is checked before any model loads.
    prompts = read_prompts(Path(args.prompts)) if args.prompts else DEMO_PROMPTS
    settings = settings_from(args)
    masks = parse_masks(args.mask or [])
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    placement = Offloader(device=device, offload=not args.no_offload)
    load_device = "cpu" if placement.offload else device

    started = time.perf_counter()
    mem_settings = memory_settings(args)
    backend = memory_backend(args)
    arm = load_arm(args.arm, device=load_device, dtype=dtype, trust_remote_code=args.trust_remote_code)
    corrector = None
    if settings.correct_frames != 0:
        corrector = load_corrector(args.dm, device=load_device, dtype=dtype, config_dir=args.dm_config)
    memory = MemoryModule(backend, mem_settings)
    loaded = time.perf_counter() - started

    progress = print_progress()
    extra_rows = []
    if args.baseline:
        print("ARM-only baseline story ...", file=sys.stderr)
        base = run_story(prompts, arm, None, None, replace(settings, correct_frames=0), placement=placement,
                         progress=progress)
        extra_rows.append(("ARM only (no correction)", [r.arm_image for r in base.records]))
    print("ACDC story ...", file=sys.stderr)
    state = run_story(prompts, arm, corrector, memory, settings, fix_masks=masks, placement=placement,
                      progress=progress)
    meta = {"arm": str(args.arm), "dm": str(args.dm), "memory": args.memory, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "load_seconds": round(loaded, 3),
            "total_seconds": round(time.perf_counter() - started, 3)}
    record = write_run(state, Path(args.out), settings, extra_rows=extra_rows, meta=meta)
    print(f"wrote {Path(args.out) / 'strip.png'} and run.json ({len(state.records)} frames)", file=sys.stderr)
    for r in state.records:
        print(f"  frame {r.index + 1}: tokens kept {r.tokens_kept:.0%}  DM prompt: {r.memory_prompt!r}",
              file=sys.stderr)
    return record


def demo(args) -> dict:
    """The toy world's trained models (shipped with the pack) on a held-out story, or your --prompts:
    ARM only / ACDC without memory / ACDC side by side, judged frame by frame."""
    from .toy import defaults, split_stories
    from .toy.demo import run_demo, story_from_prompts

    if not defaults.available():
        return tiny_demo(args)
    if args.prompts:
        prompts = read_prompts(Path(args.prompts))
        story = story_from_prompts(prompts)
    else:
        story = split_stories("heldout", 1, start=args.story)[0]
        prompts = list(story.prompts)
    settings = settings_from(args)
    mem_settings = memory_settings(args)
    arm, corrector, llm = defaults.load_toy_models(device=str(pick_device(args.device)))
    result = run_demo(Path(args.out), prompts, arm, corrector, llm, settings, mem_settings, story=story,
                      progress=print_progress())
    print(f"wrote {Path(args.out) / 'strip.png'}, judge.md and run.json\n\n{result['table']}")
    for prompt, memory_prompt in zip(prompts, result["states"]["ACDC"].memory_prompts):
        print(f"  {prompt!r} -> memory: {memory_prompt!r}")
    return result


def tiny_demo(args) -> dict:
    """Without the trained toy models: tiny random-weight models built locally (proves the plumbing only)."""
    from .tiny import build_default_models

    print("the trained toy models are missing; running tiny random-weight models instead", file=sys.stderr)
    models = build_default_models(Path(args.models))
    args.arm, args.dm, args.llm = str(models["arm"]), str(models["dm"]), str(models["llm"])
    args.dm_config, args.endpoint = None, None
    return run(args)


def add_story_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prompts", help="story file: one prompt per line (or a JSON list)")
    p.add_argument("--memory", choices=["off", "per-frame", "whole-story"], default="per-frame")
    p.add_argument("--system-prompt", help="file with your own memory system prompt (for the chosen mode)")
    p.add_argument("--strength", type=float, default=0.5, help="SDEdit t' in (0, 1] (default 0.5)")
    p.add_argument("--steps", type=int, default=50,
                   help="length of the schedule (default 50); the floor(t' x steps) steps at or below t' run")
    p.add_argument("--cfg", type=float, default=7.5, help="DM classifier-free guidance (default 7.5)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--correct-frames", default="all",
                   help="how many frames the DM corrects, from frame 1: 'all' (ACDC, the default), k (ACDC #k: the "
                        "first k only) or 'none' / 0 (the ARM alone)")
    p.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS),
                   help="the DM's sampler (default ddim, the paper's; eta 0)")
    p.add_argument("--fix-strength", type=float, default=0.8, help="t' of the masked physical fix")
    p.add_argument("--mask", action="append", metavar="FRAME:PATH", help="physical-fix mask for a frame")
    p.add_argument("--correction-size", type=int, help="side the DM corrects at (default: its native size)")
    p.add_argument("--arm-cfg", type=float, default=5.0, help="ARM classifier-free guidance")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="base seed; frame k samples the ARM with seed + k - 1")
    p.add_argument("--dm-seed", type=int, help="base seed of the DM's correction (default: --seed)")
    p.add_argument("--fix-seed", type=int, help="base seed of the physical fix (default: the frame's DM seed)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument("--no-offload", action="store_true", help="keep every model on the device")
    p.add_argument("--baseline", action="store_true", help="also run an ARM-only story for comparison")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model folder's own code to run")


def toy_defaults() -> dict:
    """The demo's option defaults: the settings the toy models are run with."""
    from .toy.defaults import TOY_SETTINGS as t

    return {"strength": t.strength, "steps": t.steps, "cfg": t.guidance_scale, "arm_cfg": t.sampling.guidance_scale,
            "temperature": t.sampling.temperature, "top_k": t.sampling.top_k, "top_p": t.sampling.top_p,
            "baseline": True}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    story = sub.add_parser("story", help="run ACDC on your own models")
    add_story_options(story)
    story.add_argument("--arm", required=True, help="ARM folder: Janus / Janus-Pro (transformers format) or a "
                                                    "unified-vocabulary ARM (acdc_arm.json, lm/, vq/)")
    story.add_argument("--dm", help="diffusion model: a diffusers folder (SD1.x/2.x, SDXL, pixel space) or a "
                                    "single-file SD1.5/SDXL .safetensors checkpoint")
    story.add_argument("--dm-config", help="config folder for a single-file checkpoint (default: shipped)")
    story.add_argument("--llm", help="local instruct LLM folder for the memory module")
    story.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
    story.add_argument("--llm-model", default="gpt-4o-mini", help="model name at the endpoint")
    story.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    dem = sub.add_parser("demo", help="a toy story on the built-in models: ARM only vs ACDC, judged")
    add_story_options(dem)
    dem.add_argument("--story", type=int, default=0, help="which held-out toy story (default 0)")
    dem.add_argument("--models", default="outputs/models", help="where tiny fallback models are built")
    dem.set_defaults(**toy_defaults())
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        arm_only = parse_correct_frames(args.correct_frames) == 0
    except InvalidInputError as error:
        parser.error(str(error))
    if args.command == "story" and not arm_only and not args.dm:
        parser.error("--dm is required unless --correct-frames none")
    try:
        demo(args) if args.command == "demo" else run(args)
    except ACDCError as error:
        print(f"acdc: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
