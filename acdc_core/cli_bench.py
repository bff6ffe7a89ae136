"""``acdc bench``: the paper's variants over a story set, sharded, resumable, merged into its tables.

  acdc bench run --out OUT --toy heldout --count 100                 # built-in toy models, toy stories
  acdc bench run --out OUT --items stories.jsonl --arm ARM --dm SD15 --endpoint URL
  torchrun --nproc-per-node 2 -m acdc_core.cli bench run --out OUT ...   # or: --shard i/N, one job per host
  acdc bench merge --out OUT [--metrics toy clip --clip CLIP_FOLDER]
  acdc bench reference --out OUT [--sdxl SDXL --lightning-unet UNET_FILE]   # FID's reference frames
  acdc bench external-setup --evaluator imagereward --env ENV                # an evaluator's own environment
  acdc bench external --out OUT --evaluator imagereward --python ENV/bin/python --weights W --med-config C --tokenizer T
  acdc bench merge --out OUT --fid clip --fid-model CLIP_FOLDER              # ... and the FID tables
  acdc bench external --out OUT --evaluator vbench --python ENV/bin/python --dino-weights W --dino-repo DINO ...
  acdc bench merge --out OUT --vbench                                         # ... and the official VBench's
  acdc bench stories --out stories.jsonl --count 1000 --endpoint URL     # the paper's story set (App. C)

``run`` writes one folder per variant and item under OUT/runs (``acdc_core.bench.store``) and skips every item that
is already complete, so the same command continues a run that was stopped or killed, and redoes an item whose files
were damaged. Each process takes shard RANK of WORLD_SIZE (a launcher sets them) or ``--shard i/N``; under torchrun
the processes wait for each other and rank 0 merges. ``merge`` reads only the folders and writes OUT/merged.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import timedelta

from .errors import InvalidInputError

__all__ = ["add_bench_parser", "run_bench_command"]

SETTING_FLAGS = {"strength": "strength", "steps": "steps", "cfg": "guidance_scale", "scheduler": "scheduler"}


def add_bench_parser(sub, add_memory_options) -> argparse.ArgumentParser:
    from .bench.external import EVALUATORS, external_files

    p = sub.add_parser("bench", help="the paper's variants over a story set: sharded, resumable, merged into tables",
                       allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="bench_step", required=True)
    run = steps.add_parser("run", help="run this process's share of the items", allow_abbrev=False)
    run.add_argument("--out", required=True, help="the benchmark's folder (re-use it to continue a run)")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--items", help="item set: JSONL, one story per line (id, prompts, seed)")
    what.add_argument("--toy", choices=("heldout", "test"), help="the toy world's held-out (development) or test stories")
    what.add_argument("--toy-video", choices=("heldout",), help="the toy video world's held-out clips (video variants)")
    run.add_argument("--count", type=int, default=100, help="with --toy: how many stories (default 100)")
    run.add_argument("--start", type=int, default=0, help="with --toy: the first story's index in the split")
    run.add_argument("--seed-offset", type=int, default=0, help="with --toy: story k runs with seed 1000 + offset + k")
    run.add_argument("--variants", nargs="+", default=None,
                     help="which variants (default all: 'ARM only', 'DM alone', 'ACDC #2', 'ACDC w/o memory', 'ACDC'; "
                          "videos: 'ARM only', 'ACDC (first window)', 'ACDC (every window)', and \"ACDC (first "
                          "window) t'=0.4\" etc.)")
    run.add_argument("--shard", help="i/N: run shard i of N (default: RANK/WORLD_SIZE from the launcher, else all)")
    run.add_argument("--no-merge", action="store_true", help="do not merge at the end (under torchrun: when every rank is done)")
    run.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1: results then do not "
                                                            "depend on how many processes share the machine)")
    run.add_argument("--arm", help="ARM folder (default: the built-in toy ARM)")
    run.add_argument("--dm", help="DM: a diffusers folder or single-file checkpoint (default: the built-in toy DM)")
    run.add_argument("--dm-config", help="config folder for a single-file checkpoint")
    run.add_argument("--motion-adapter", help="videos: AnimateDiff's motion adapter (with --dm SD1.5 and --arm LWM)")
    run.add_argument("--window", type=int, help="videos: the window L (default: 8 toy, 16 otherwise)")
    add_memory_options(run)
    run.add_argument("--trust-remote-code", action="store_true", help="allow a model folder's own code to run")
    run.add_argument("--strength", type=float, help="SDEdit t' (default 0.5)")
    run.add_argument("--steps", type=int, help="the DM's schedule length (default: 20 toy, 50 otherwise)")
    run.add_argument("--cfg", type=float, help="the DM's CFG (default: 1.5 toy, 7.5 otherwise)")
    run.add_argument("--scheduler", help="the DM's sampler (default ddim)")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (under torchrun, cuda means cuda:LOCAL_RANK)")
    stories = steps.add_parser("stories", help="write a story set (JSONL) with an LLM, as the paper's App. C, or the "
                                               "toy world's", allow_abbrev=False)
    stories.add_argument("--out", required=True, help="the JSONL file to write (re-run to continue it)")
    stories.add_argument("--count", type=int, default=1000, help="stories (default 1000, the paper's)")
    stories.add_argument("--seed", type=int, default=0)
    stories.add_argument("--max-requests", type=int, help="LLM requests at most (default 3 x count)")
    source = stories.add_mutually_exclusive_group(required=True)
    source.add_argument("--endpoint", help="OpenAI-compatible base URL (e.g. the paper's gpt-4o-mini)")
    source.add_argument("--llm", help="a local instruct LLM folder")
    source.add_argument("--toy", choices=("heldout", "test"), help="the toy world's stories instead (no LLM)")
    stories.add_argument("--llm-model", default="gpt-4o-mini", help="model name at the endpoint")
    stories.add_argument("--api-key-env", default="ACDC_LLM_API_KEY", help="environment variable holding the key")
    stories.add_argument("--allow-http-key", action="store_true")
    stories.add_argument("--endpoint-timeout", type=float, default=60)
    stories.add_argument("--trust-remote-code", action="store_true")
    merge = steps.add_parser("merge", help="score the finished items and write the tables", allow_abbrev=False)
    merge.add_argument("--out", required=True, help="the benchmark's folder")
    merge.add_argument("--metrics", nargs="+", default=None, help="toy, toy-video, clip, vbench-style, imagereward (default: the toy judge for toy items, "
                            "else clip)")
    merge.add_argument("--clip", help="CLIP model folder (transformers format) for the clip metric")
    for flag, what in (("--dino", "DINO ViT-B/16 folder: vbench-style subject consistency"),
                       ("--clip-b32", "CLIP ViT-B/32 folder: vbench-style background consistency"),
                       ("--clip-l14", "CLIP ViT-L/14 folder: vbench-style aesthetic (with --aesthetic-head)"),
                       ("--aesthetic-head", "LAION's aesthetic linear head (safetensors)"),
                       ("--raft", "torchvision RAFT-large weights (safetensors): vbench-style dynamic degree")):
        merge.add_argument(flag, help=what)
    merge.add_argument("--fid", choices=("clip", "dino", "inception"), help="add FID tables (the Frechet distance to "
                       "OUT/reference) in these features: clip (FD_CLIP), dino (FD_DINOv2 / DINO ViT), or inception "
                       "(FID's own, from `acdc bench external --evaluator inception`)")
    merge.add_argument("--fid-model", help="the FID backbone's transformers folder (CLIP, or DINOv2 / DINO ViT)")
    merge.add_argument("--fid-resamples", type=int, default=100, help="bootstrap resamples of FID's interval")
    merge.add_argument("--vbench", action="store_true", help="add the official VBench's tables (per video, from "
                       "`acdc bench external --evaluator vbench`)")
    merge.add_argument("--device", default="cpu")
    setup = steps.add_parser("external-setup", help="make an external evaluator's own environment (installs its "
                             "pinned packages there, nowhere else)", allow_abbrev=False)
    setup.add_argument("--evaluator", required=True, choices=tuple(EVALUATORS))
    setup.add_argument("--env", required=True, help="a new folder for the virtual environment")
    setup.add_argument("--torch", nargs="+", default=None, help="the torch and torchvision requirements (default: "
                       "torch==2.14.1 torchvision==0.29.1, a matching pair; on a GPU host, your CUDA build's)")
    ext = steps.add_parser("external", help="score a benchmark's frames with an external evaluator in its own "
                           "environment", allow_abbrev=False)
    ext.add_argument("--out", required=True, help="the benchmark's folder")
    ext.add_argument("--evaluator", required=True, choices=tuple(EVALUATORS))
    ext.add_argument("--python", required=True, help="the evaluator environment's Python (ENV/bin/python)")
    for field, what in external_files():
        ext.add_argument("--" + field.replace("_", "-"), dest=field, help=what)
    ext.add_argument("--device", default="cpu")
    ref = steps.add_parser("reference", help="the frames FID is measured against: toy truth or SDXL-Lightning's "
                           "pseudo ground truth, sharded and resumable", allow_abbrev=False)
    ref.add_argument("--out", required=True, help="the benchmark's folder (its items.jsonl names the prompts)")
    ref.add_argument("--sdxl", help="SDXL base: a diffusers folder or a single-file checkpoint (none: toy truth)")
    ref.add_argument("--lightning-unet", help="SDXL-Lightning's UNet, e.g. sdxl_lightning_8step_unet.safetensors")
    ref.add_argument("--steps", type=int, default=6, help="sampling steps (default 6, the paper's)")
    ref.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    ref.add_argument("--shard", help="this process's share i/N (default: RANK / WORLD_SIZE, else all)")
    ref.add_argument("--device", default="cpu")
    ref.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    return p


def _models(args):
    """(arm, corrector, memory backend, settings, memory settings, identity of the models)."""
    from .state import StorySettings

    builtin = not args.arm and not args.dm
    if builtin:
        from .toy import defaults

        if not defaults.available():
            raise InvalidInputError("the built-in toy models are missing from this install; give --arm and --dm.")
        if args.memory != "per-frame" or args.llm or args.endpoint:
            raise InvalidInputError("the built-in toy models bring their own memory LLM; give --arm and --dm to choose "
                                    "another memory.")
        arm, corrector, backend = defaults.load_toy_models(args.device)
        settings, mem = defaults.TOY_SETTINGS, defaults.TOY_MEMORY_SETTINGS
        models = {"builtin": "toy world (acdc_core/toy/models)"}
    else:
        if not (args.arm and args.dm):
            raise InvalidInputError("give both --arm and --dm (or neither, for the built-in toy models).")
        from .arm import load_arm
        from .cli_common import check_local_memory, endpoint_backend, memory_settings
        from .correct import load_corrector
        from .memory import load_local_llm

        args.seed, args.system_prompt = 0, getattr(args, "system_prompt", None)
        mem = memory_settings(args)
        check_local_memory(args)
        backend = endpoint_backend(args)
        if backend is not None:
            backend.check()
        elif args.memory != "off":
            backend = load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
        corrector = load_corrector(args.dm, device=args.device, config_dir=args.dm_config)
        arm = load_arm(args.arm, device=args.device, trust_remote_code=args.trust_remote_code)
        settings = StorySettings()
        from .memory import scrub_url

        models = {"arm": str(args.arm), "dm": str(args.dm), "llm": args.llm, "memory": args.memory,
                  "endpoint": scrub_url(args.endpoint) if args.endpoint else None,   # never a key in the URL
                  "llm_model": args.llm_model if args.endpoint else None}
    changes = {field: getattr(args, flag) for flag, field in SETTING_FLAGS.items() if getattr(args, flag) is not None}
    settings = replace(settings, **changes).validate()
    return arm, corrector, backend, settings, mem, models


def _video_settings(args, items, base):
    """The video settings (``base`` with the command's changes), each item's length and prompts checked against
    them before any model loads."""
    from .video import check_prompts

    changes = {field: getattr(args, flag) for flag, field in SETTING_FLAGS.items() if getattr(args, flag) is not None}
    if args.window is not None:
        changes["window"] = args.window
    settings = replace(base, **changes)
    for item in items:
        try:
            check_prompts(item.prompts, replace(settings, frames=item.frames))
        except InvalidInputError as error:
            raise InvalidInputError(f"item {item.id}: {error}") from None
    return settings


def _video_models(args, items):
    """(arm, video corrector, memory backend, video settings, memory settings, identity of the models)."""
    from .memory import MemorySettings
    from .video import VideoSettings

    builtin = not args.arm and not args.dm and not args.motion_adapter
    if builtin:
        from .toy import defaults

        if not defaults.video_available():
            raise InvalidInputError("the built-in toy video models are missing from this install; give --arm, --dm "
                                    "and --motion-adapter.")
        if args.llm or args.endpoint:
            raise InvalidInputError("the toy video clips' prompts are self-contained: the built-in video models run "
                                    "without memory; give --arm, --dm and --motion-adapter to choose one.")
        settings = _video_settings(args, items, defaults.TOY_VIDEO_SETTINGS)
        arm, corrector = defaults.load_toy_video_models(args.device)
        return arm, corrector, None, settings, MemorySettings(mode="off"), {
            "builtin": "toy video world (acdc_core/toy/models)"}
    if not (args.arm and args.dm and args.motion_adapter):
        raise InvalidInputError("a video benchmark needs --arm (e.g. LWM), --dm (SD1.5) and --motion-adapter "
                                "(AnimateDiff), or none of them for the built-in toy video models.")
    from .arm import load_arm
    from .cli_common import check_local_memory, endpoint_backend, memory_settings
    from .correct.video import check_animatediff, load_animatediff
    from .memory import load_local_llm, scrub_url

    settings = _video_settings(args, items, VideoSettings(frames=max(i.frames for i in items), window=16))
    args.seed, args.system_prompt = 0, getattr(args, "system_prompt", None)
    mem = memory_settings(args)
    check_local_memory(args)
    check_animatediff(args.dm, args.motion_adapter)
    backend = endpoint_backend(args)
    if backend is not None:
        backend.check()
    elif args.memory != "off":
        backend = load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
    corrector = load_animatediff(args.dm, args.motion_adapter, device=args.device)
    arm = load_arm(args.arm, device=args.device, trust_remote_code=args.trust_remote_code)
    models = {"arm": str(args.arm), "dm": str(args.dm), "motion_adapter": str(args.motion_adapter),
              "llm": args.llm, "memory": args.memory, "endpoint": scrub_url(args.endpoint) if args.endpoint else None,
              "llm_model": args.llm_model if args.endpoint else None}
    return arm, corrector, backend, settings, mem, models


def _device(requested: str) -> str:
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{local}" if requested == "cuda" and local is not None else requested


def run_bench_command(args) -> None:
    from .bench import VARIANTS, read_items, run_bench, shard_from_env, variant_named
    from .bench.variants import VIDEO_VARIANTS, video_variant_named
    from .toy.evaluate import toy_items

    if args.bench_step == "merge":
        _merge(args)
        return
    if args.bench_step == "stories":
        _stories(args)
        return
    if args.bench_step == "reference":
        _reference(args)
        return
    if args.bench_step in ("external", "external-setup"):
        from .bench import external

        if args.bench_step == "external-setup":
            evaluator = external.evaluator_named(args.evaluator)
            python = external.setup_environment(evaluator, args.env, torch_spec=args.torch or external.DEFAULT_TORCH)
            print(f"acdc bench external-setup: {evaluator.name} is ready; run it with --python {python}",
                  file=sys.stderr)
        else:
            scores = external.run_external(args.out, args.evaluator, args.python,
                                           {f: getattr(args, f) for f, _ in external.external_files()}, device=args.device)
            print(f"acdc bench external: wrote {scores}; merge with `acdc bench merge --out {args.out} "
                  f"{external.evaluator_named(args.evaluator).merge_flag}`", file=sys.stderr)
        return
    import torch

    if args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}.")
    torch.set_num_threads(args.threads)
    shard = shard_from_env(args.shard)
    if args.toy_video:
        from .toy.evaluate_video import toy_video_items

        items = toy_video_items(args.toy_video, args.count, args.start, args.seed_offset)
    else:
        items = toy_items(args.toy, args.count, args.start, args.seed_offset) if args.toy else read_items(args.items)
    video = all(item.video for item in items)
    if not video and any(item.video for item in items):
        raise InvalidInputError("the item set mixes videos (items with frames) and stories; run them as two "
                                "benchmarks.")
    if video:
        variants = ([video_variant_named(v) for v in args.variants] if args.variants else list(VIDEO_VARIANTS))
    else:
        variants = [variant_named(v) for v in args.variants] if args.variants else list(VARIANTS)
        if args.motion_adapter or args.window is not None:
            raise InvalidInputError("--motion-adapter and --window are for video items (items with frames).")
    if len({v.name for v in variants}) != len(variants):
        raise InvalidInputError("--variants names a variant twice.")
    args.device = _device(args.device)
    arm, corrector, backend, settings, mem, models = (_video_models(args, items) if video else _models(args))
    print(f"acdc bench: shard {shard}: {len(shard.take(items))} of {len(items)} items x {len(variants)} variants "
          f"into {args.out}", file=sys.stderr)
    counts = run_bench(args.out, items, variants, arm, corrector, backend, settings, mem, models=models, shard=shard)
    print(f"acdc bench: shard {shard}: ran {counts['ran']}, already complete {counts['skipped']}, redone "
          f"{counts['redone']}", file=sys.stderr)
    if shard.count > 1 and "MASTER_ADDR" in os.environ and not args.no_merge:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=timedelta(days=7))    # the other ranks may run for days
        try:
            dist.barrier()
            if dist.get_rank() == 0:
                args.metrics, args.clip = None, None
                _merge(args)
        finally:
            dist.destroy_process_group()
    elif shard.count == 1 and not args.no_merge:
        args.metrics, args.clip = None, None
        _merge(args)
    else:
        print(f"acdc bench: when every shard is done: acdc bench merge --out {args.out}", file=sys.stderr)


def _merge(args) -> None:
    from .bench import merge
    from .bench.merge import collect
    from .metrics import load_metric

    _, items, _ = collect(args.out, verify=False)    # the item set only: merge() checks every folder once
    toy = "toy-video" if all(i.world == "video" for i in items) else "toy"
    names = args.metrics or ([toy] if all(i.toy for i in items) else ["clip"])
    models = {k: getattr(args, k, None) for k in ("dino", "clip_b32", "clip_l14", "aesthetic_head", "raft")}
    metrics = [load_metric(n, clip=args.clip, device=getattr(args, "device", "cpu"), out=args.out, **models)
               for n in names]
    fid = None
    if getattr(args, "fid", None) == "inception":
        from .bench.external import ExternalFeatures

        fid = ExternalFeatures.from_bench(args.out, "inception")
    elif getattr(args, "fid", None):
        from .metrics.features import load_backbone

        if not args.fid_model:
            raise InvalidInputError(f"--fid {args.fid} needs --fid-model FOLDER (a transformers "
                                    f"{'CLIP' if args.fid == 'clip' else 'DINOv2 or DINO ViT'} folder).")
        fid = load_backbone(args.fid, args.fid_model, device=getattr(args, "device", "cpu"))
    videos = None
    if getattr(args, "vbench", False):
        from .bench.external import ExternalVideoScores

        videos = ExternalVideoScores.from_bench(args.out, "vbench")
    done = merge(args.out, metrics, fid=fid, fid_resamples=getattr(args, "fid_resamples", 100), videos=videos)
    print(f"acdc bench: merged {len(items)} items into {done['target']}", file=sys.stderr)
    print((done["target"] / "per_frame_shown.md").read_text(encoding="utf-8"))


def _reference(args) -> None:
    import torch

    from .bench import shard_from_env
    from .bench.merge import collect
    from .bench.reference import SdxlLightning, write_reference

    _, items, _ = collect(args.out, verify=False)
    if args.sdxl is None and args.lightning_unet is None:
        if not all(item.toy and item.world == "story" for item in items):
            raise InvalidInputError("these items are not toy-world stories: give --sdxl (SDXL base) and "
                                    "--lightning-unet (SDXL-Lightning's UNet file) to make pseudo ground truth.")
        from .toy.evaluate import toy_reference

        make, identity = toy_reference, {"source": "toy renderer"}
    elif not (args.sdxl and args.lightning_unet):
        raise InvalidInputError("pseudo ground truth needs both --sdxl and --lightning-unet.")
    else:
        make = SdxlLightning.load(args.sdxl, args.lightning_unet, steps=args.steps, size=args.size,
                                  device=_device(args.device), dtype=getattr(torch, args.dtype))
        identity = make.identity()
    shard = shard_from_env(args.shard)
    counts = write_reference(args.out, items, make, identity, shard=shard)
    print(f"acdc bench reference: shard {shard}: made {counts['made']}, already complete {counts['skipped']}",
          file=sys.stderr)


def _stories(args) -> None:
    from .bench import write_items
    from .toy.evaluate import toy_items
    from .bench.storyset import generate_stories

    if args.toy:
        items = write_items(args.out, toy_items(args.toy, args.count))
        print(f"acdc bench: wrote {args.count} toy {args.toy} stories to {items}", file=sys.stderr)
        return
    if args.endpoint:
        from .cli_common import endpoint_backend

        args.memory = "per-frame"
        backend = endpoint_backend(args)
        backend.check()
    else:
        from .memory import check_local_llm_folder, load_local_llm

        check_local_llm_folder(args.llm, trust_remote_code=args.trust_remote_code)
        backend = load_local_llm(args.llm, device="cpu", trust_remote_code=args.trust_remote_code)
    items = generate_stories(backend, args.out, args.count, seed=args.seed, max_requests=args.max_requests)
    print(f"acdc bench: wrote {len(items)} stories to {args.out}", file=sys.stderr)
