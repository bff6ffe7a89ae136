"""Train the toy video world's video diffusion model: a small pixel-space, text-conditioned AnimateDiff.

    python -m acdc_core.toy.train_video_dm --out DIR --seed 0

What it writes is the toy image DM's kind of folder (``train_dm``: a diffusers folder without a VAE,
``model_index.json``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``; safetensors) plus
``motion_adapter/``, a diffusers ``MotionAdapter`` folder. ``acdc_core.correct.video.load_animatediff(DIR,
DIR / "motion_adapter")`` loads it with its default arguments, exactly as it loads SD1.5 + an AnimateDiff motion
module, and the video SDEdit loop (``AnimateDiffCorrector.correct_video``) runs on the pixels.

- Data: windows of ``WINDOW`` (8) consecutive frames at random offsets of train-split clips
  (``video_world.split_clips("train", n)``), 32x32 RGB rendered by ``video_world.render_frame`` and scaled to
  [-1, 1], each with its prompt in a random one of ``video_world.PHRASINGS`` (the corrector is given any of them).
  Only true clips: that the model knows nothing else is what lets SDEdit pull a broken frame back. 10% of prompts
  dropped to "" for classifier-free guidance.
- Model: ``UNetMotionModel.from_unet2d(UNet2DConditionModel, MotionAdapter)`` (``ARCHITECTURE``,
  ``MOTION_ADAPTER``), trained from scratch in AnimateDiff's two stages (``fit``): the 2-D UNet and the text
  encoder on single frames, then the motion modules on windows with the image model frozen; saved split back into
  the 2-D UNet and the adapter (``save``), and checked to give the trained model's prediction exactly once
  ``load_animatediff`` has put them together again (``check_split``). Text: the toy image DM's tiny
  ``CLIPTextModel`` and word-level ``CLIPTokenizer`` (``train_dm``), trained with the 2-D UNet.
- Noise schedule (``scheduler_config``): the toy image DM's (``tiny.sd.pixel_space_scheduler_config``: zero
  terminal SNR, v-prediction, trailing spacing, clipped clean image) with AnimateDiff's ``linear`` betas, which is
  what ``load_animatediff`` samples with by default (it replaces the base model's ``beta_schedule`` with
  "linear"): the model is trained on exactly the schedule the corrector uses, and nothing special-cases it.
- Objective and optimiser: ``train_dm``'s (min-SNR weighted v-prediction, AdamW, warmup then cosine decay, EMA
  weights saved). Seeded; on one thread the run is deterministic.

After training, ``evaluate`` measures the saved folder through ``load_animatediff`` + ``correct_video`` on
held-out clips (degraded windows and windows with broken frames) and writes MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from . import video_world, world
from .train_dm import PROMPT_DROPOUT, SNR_CAP, SNR_FLOOR, TEXT_HIDDEN, TEXT_LAYERS, TEXT_TOKENS, _ids, _to_tensor
from .video_world import FRAMES, PHRASINGS, SIZE, WINDOW, Clip, FrameState, render_frame, split_clips

__all__ = ["ARCHITECTURE", "MOTION_ADAPTER", "BREAKAGES", "scheduler_config", "video_words", "fit", "save",
           "check_split", "train", "break_window", "evaluate", "main"]

# The spatial UNet: 32, 16, 8, 4 px levels, cross-attention to the prompt at 8 and 4 px and in the middle block,
# as the toy image DM has, but without its pooled-prompt ("text") addition embedding: UNetMotionModel takes only
# SDXL's "text_time" one. Every level gets one motion module per resnet (from_unet2d wants as many). The channels are
# the image DM's: a 16-channel full-size level drew noisy blobs after 1500 joint steps (the first run, not shipped).
ARCHITECTURE = dict(
    block_out_channels=(32, 32, 64, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=8, norm_num_groups=8)
IMAGE_FRACTION = 0.5  # training steps on single frames (``fit``)
# The motion modules: temporal self-attention along the frames at every position of every level. The position
# table is one window long: the model has seen no other positions, so the corrector refuses longer windows
# (``max_frames``) instead of correcting them with untrained positions.
MOTION_ADAPTER = dict(
    motion_layers_per_block=1, motion_num_attention_heads=4, motion_norm_num_groups=ARCHITECTURE["norm_num_groups"],
    motion_max_seq_length=WINDOW, use_motion_mid_block=True)


def scheduler_config() -> dict:
    """The noise schedule, as a DDIM config: ``pixel_space_scheduler_config`` with AnimateDiff's linear betas."""
    from ..tiny.sd import pixel_space_scheduler_config

    return {**pixel_space_scheduler_config(), "beta_schedule": "linear"}


def video_words() -> list[str]:
    """Every lower-case word any clip's prompt can have, in any wording, sorted: one token each."""
    base = Clip(next(iter(world.NAMES)), world.SPECIES[0], world.COLOURS[0], world.PLACES[0], world.TIMES[0], "walks", "right",
                16.0)
    clips = [base, replace(base, occluder=video_world.OCCLUDERS[0])]
    for field, values in (("name", tuple(world.NAMES)), ("species", world.SPECIES), ("colour", world.COLOURS),
                          ("place", world.PLACES), ("time", world.TIMES), ("motion", video_world.MOTIONS),
                          ("direction", ("left", "right")), ("occluder", video_world.OCCLUDERS)):
        clips += [replace(base, **{field: value}) for value in values]
    text = " ".join(video_world.prompt(clip, variant) for clip in clips for variant in range(len(PHRASINGS)))
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


def _window(clip: Clip, offset: int, states: Optional[Sequence[FrameState]] = None, length: int = WINDOW
            ) -> np.ndarray:
    """Frames ``offset .. offset + length - 1`` of ``clip`` (or of ``states``) as [length, H, W, 3] uint8."""
    states = clip.states() if states is None else states
    return np.stack([render_frame(s, SIZE) for s in states[offset:offset + length]])


def _build_models(folder: Path, words: Sequence[str]):
    """Tokenizer (written to ``folder/tokenizer``), text encoder, 2-D UNet and motion adapter, freshly initialised
    from the torch RNG."""
    from diffusers import MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..tiny.sd import write_tiny_clip_tokenizer

    tokenizer_dir = write_tiny_clip_tokenizer(folder / "tokenizer", words=words, model_max_length=TEXT_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(  # the toy image DM's text encoder (train_dm._build_models)
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=4, max_position_embeddings=TEXT_TOKENS,
        projection_dim=TEXT_HIDDEN, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(sample_size=SIZE, in_channels=3, out_channels=3, cross_attention_dim=TEXT_HIDDEN,
                                **ARCHITECTURE)
    adapter = MotionAdapter(block_out_channels=list(ARCHITECTURE["block_out_channels"]), **MOTION_ADAPTER)
    return tokenizer, text_encoder, unet, adapter


def _motion_unet(unet: torch.nn.Module, adapter: torch.nn.Module) -> torch.nn.Module:
    from diffusers import UNetMotionModel

    from ..correct.video import _no_fp32_warning

    with _no_fp32_warning():
        return UNetMotionModel.from_unet2d(unet, adapter)


def _batch(clips: Sequence[Clip], tokenizer, rng: np.random.Generator, count: int, frames: int,
           empty_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random training windows of ``frames`` consecutive frames, [count, 3, frames, H, W] in [-1, 1], and
    their prompt ids [count, TEXT_TOKENS] (a random wording each; ``PROMPT_DROPOUT`` of them "")."""
    rows = rng.integers(0, len(clips), count)
    offsets = rng.integers(0, FRAMES - frames + 1, count)
    variants = rng.integers(0, len(PHRASINGS), count)
    drop = rng.random(count) < PROMPT_DROPOUT
    windows = np.stack([_window(clips[r], int(o), length=frames) for r, o in zip(rows, offsets)])  # [N, F, H, W, 3]
    # [N, F, H, W, 3] -> [N, 3, F, H, W], UNetMotionModel's layout (batch, channels, frames, height, width).
    pixels = torch.from_numpy(windows).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    ids = _ids(tokenizer, [video_world.prompt(clips[r], int(v)) for r, v in zip(rows, variants)])
    ids[torch.from_numpy(drop)] = empty_ids  # for guidance
    return pixels, ids


def fit(out: Path, *, seed: int = 0, image_steps: int = 2000, image_batch_size: int = 16, steps: int = 800,
        batch_size: int = 2, lr: float = 1e-3, n_clips: int = 2000, image_fraction: float = IMAGE_FRACTION,
        freeze_spatial: bool = True, ema_decay: float = 0.998, log_every: int = 100) -> dict[str, Any]:
    """Train in memory (the tokenizer is written to ``out/tokenizer``) in AnimateDiff's two stages. Returns the EMA
    motion UNet and text encoder, the tokenizer, the 2-D UNet's and the adapter's configs (``save``) and a summary.

    1. ``image_steps`` steps of the 2-D UNet and the text encoder alone on ``image_batch_size`` single frames (the
       toy image DM's recipe, ``train_dm``): the spatial layers learn the frames where a step is cheap.
    2. ``steps`` steps of ``UNetMotionModel.from_unet2d(EMA UNet, adapter)`` on ``batch_size`` windows of
       ``WINDOW`` frames, one noise level per window. With ``freeze_spatial`` (AnimateDiff's recipe) only the motion
       modules learn, from the frozen image model (``image_fraction`` is then unused: a one-frame window teaches a
       motion module nothing); without it everything trains and a step is, with probability ``image_fraction``,
       ``batch_size * WINDOW`` single-frame windows instead (joint image-video training, Ho et al. 2022)."""
    from diffusers import DDPMScheduler

    from .train_dm import DiffusionTrainer

    start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    clips = split_clips("train", n_clips)
    tokenizer, text_encoder, unet, adapter = _build_models(out, video_words())
    empty_ids = _ids(tokenizer, [""])[0]
    # Training adds noise exactly as the corrector's DDIM sampler assumes: same betas, same alphas_cumprod.
    noise_schedule = DDPMScheduler.from_config(scheduler_config())

    def log(stage: str, step: int, total: int, losses: list[float]) -> None:
        if log_every and (step + 1) % log_every == 0:
            print(f"{stage} step {step + 1}/{total}  loss {np.mean(losses[-log_every:]):.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

    image_losses: list[float] = []
    if image_steps:
        trainer = DiffusionTrainer((unet, text_encoder), noise_schedule, steps=image_steps, lr=lr,
                                   ema_decay=ema_decay, generator=generator)
        for step in range(image_steps):
            clean, prompt_ids = _batch(clips, tokenizer, rng, image_batch_size, 1, empty_ids)
            image_losses.append(trainer.step(clean[:, :, 0], lambda noisy, timesteps, ids=prompt_ids: unet(
                noisy, timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample))
            log("image", step, image_steps, image_losses)
        unet, text_encoder = trainer.ema
        unet.requires_grad_(True)
        text_encoder.requires_grad_(not freeze_spatial)
    image_seconds = time.perf_counter() - start

    motion_unet = _motion_unet(unet, adapter)
    if freeze_spatial:
        motion_unet.freeze_unet2d_params()   # only the motion modules train
        image_fraction = 0.0
    losses, video_losses = [], []
    trainer = DiffusionTrainer((motion_unet, text_encoder), noise_schedule, steps=steps, lr=lr, ema_decay=ema_decay,
                               generator=generator)
    for step in range(steps):
        image_step = bool(rng.random() < image_fraction)
        count, frames = (batch_size * WINDOW, 1) if image_step else (batch_size, WINDOW)
        clean, prompt_ids = _batch(clips, tokenizer, rng, count, frames, empty_ids)  # [N, 3, F, H, W], [N, T]
        # The prompt's embeddings repeated for every frame ([B * F, T, D]), as the corrector gives them: the UNet
        # folds the frames into the batch for its spatial layers. One timestep per window: every frame of a window
        # is at the same noise level, as in the corrector.
        losses.append(trainer.step(clean, lambda noisy, timesteps, ids=prompt_ids, t=frames: motion_unet(
            noisy, timesteps, encoder_hidden_states=text_encoder(ids)[0].repeat_interleave(t, dim=0)).sample))
        if not image_step:
            video_losses.append(losses[-1])
        log("video", step, steps, losses)

    ema_unet, ema_text = trainer.ema
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    summary = {"seed": seed, "image_steps": image_steps, "image_batch_size": image_batch_size, "steps": steps,
               "batch_size": batch_size, "window": WINDOW, "lr": lr, "freeze_spatial": freeze_spatial,
               "ema_decay": ema_decay, "train_clips": len(clips),
               "train_prompts": len({video_world.prompt(c) for c in clips}), "vocab_words": len(video_words()),
               "unet_parameters": count(unet), "motion_parameters": count(adapter),
               "text_parameters": count(text_encoder),
               "image_fraction": image_fraction, "video_steps": len(video_losses),
               "final_image_loss": float(np.mean(image_losses[-100:])) if image_losses else None,
               "final_loss": float(np.mean(losses[-100:])) if losses else None,
               "final_video_loss": float(np.mean(video_losses[-50:])) if video_losses else None,
               "image_seconds": round(image_seconds, 1),
               "train_seconds": round(time.perf_counter() - start, 1),
               "train_cpu_seconds": round(time.process_time() - cpu_start, 1)}
    return {"motion_unet": ema_unet, "text_encoder": ema_text, "tokenizer": tokenizer,
            "unet_config": dict(unet.config), "adapter_config": dict(adapter.config), "summary": summary}


def save(out: Path, motion_unet: torch.nn.Module, text_encoder: torch.nn.Module, unet_config: dict,
         adapter_config: dict) -> None:
    """Write the motion UNet split into the 2-D UNet (``out/unet``) and the motion adapter (``out/motion_adapter``),
    the text encoder, the scheduler and model_index.json (the tokenizer is already there). The split is by name:
    a ``UNetMotionModel``'s weights are the 2-D UNet's under the same names plus the adapter's ``motion_modules``."""
    from diffusers import DDIMScheduler, MotionAdapter, UNet2DConditionModel

    from ..tiny.sd import pixel_space_model_index

    out = Path(out)
    state = motion_unet.state_dict()
    unet = UNet2DConditionModel.from_config(unet_config)
    adapter = MotionAdapter.from_config(adapter_config)
    unet.load_state_dict({k: v for k, v in state.items() if "motion_modules" not in k}, strict=True)
    adapter.load_state_dict({k: v for k, v in state.items() if "motion_modules" in k}, strict=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    adapter.save_pretrained(out / "motion_adapter", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    DDIMScheduler.from_config(scheduler_config()).save_pretrained(out / "scheduler")
    index = {**pixel_space_model_index(), "_note": "pixel-space text-to-video model (AnimateDiff-style); no VAE. "
             "unet/ is the spatial UNet, motion_adapter/ its MotionAdapter: loaded by "
             "acdc_core.correct.video.load_animatediff(folder, folder / 'motion_adapter')."}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def _probe(tokenizer, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed UNet input: a noisy window [1, 3, WINDOW, H, W], a timestep and the prompt ids of a held-out clip."""
    generator = torch.Generator().manual_seed(seed)
    clip = split_clips("heldout", 1)[0]
    return (torch.randn((1, 3, WINDOW, SIZE, SIZE), generator=generator), torch.tensor([499]),
            _ids(tokenizer, [video_world.prompt(clip)]))


def check_split(folder: Path, motion_unet: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer) -> float:
    """The largest difference between the trained models' prediction and that of the saved folder loaded by
    ``load_animatediff`` with its defaults, on ``_probe``'s input (0.0: the same numbers)."""
    from ..correct.video import load_animatediff

    loaded = load_animatediff(folder, Path(folder) / "motion_adapter")
    sample, t, ids = _probe(tokenizer)
    with torch.inference_mode():
        ours = motion_unet.eval()(sample, t, encoder_hidden_states=text_encoder.eval()(ids)[0].repeat(WINDOW, 1, 1))
        theirs = loaded.unet(sample, t, encoder_hidden_states=loaded.text_encoder(ids)[0].repeat(WINDOW, 1, 1))
    return float((ours.sample - theirs.sample).abs().max())


def train(out: Path, **options: Any) -> dict[str, Any]:
    """``fit``, ``save`` and ``check_split`` (raises if the saved folder does not reproduce the trained model);
    returns the summary."""
    trained = fit(out, **options)
    save(out, trained["motion_unet"], trained["text_encoder"], trained["unet_config"], trained["adapter_config"])
    difference = check_split(out, trained["motion_unet"], trained["text_encoder"], trained["tokenizer"])
    if difference != 0.0:
        raise RuntimeError(f"the saved UNet + motion adapter differ from the trained model by up to {difference}.")
    sizes = {part: sum(p.stat().st_size for p in (Path(out) / part).glob("*.safetensors"))
             for part in ("unet", "motion_adapter", "text_encoder")}
    return {**trained["summary"], "split_max_difference": difference, "weights_bytes": sizes}


# -- measuring the saved model ----------------------------------------------------------------------------

BREAKAGES: tuple[str, ...] = ("colour", "species", "teleport", "second_sun")
TELEPORT = 8.0  # canvas units a teleported animal is moved at least (where the frame has room)


def break_window(states: Sequence[FrameState], index: int, kind: str, rng: np.random.Generator
                 ) -> tuple[FrameState, ...]:
    """``states`` with frame ``index`` broken by ``kind`` (``BREAKAGES``): the animal's colour or species swapped
    for another, the animal moved ``TELEPORT`` units or more away (a teleport), or a second sun / moon in the sky."""
    state = states[index]
    if kind == "colour":
        broken = replace(state, colour=str(rng.choice([c for c in world.COLOURS if c != state.colour])))
    elif kind == "species":
        others = [s for s in world.SPECIES if s != state.species]
        fits = [s for s in others if video_world.x_range(s, state.facing)[0] <= state.cx
                <= video_world.x_range(s, state.facing)[1]]  # the other animal drawn where this one is, if it fits
        broken = replace(state, species=str(rng.choice(fits or others)))
    elif kind == "teleport":
        lo, hi = video_world.x_range(state.species, state.facing)
        places = np.arange(lo, hi, 0.5)
        distance = np.abs(places - state.cx)
        far = places[distance >= min(TELEPORT, float(distance.max()))]  # the farthest places if none is 8 away
        broken = replace(state, cx=round(float(rng.choice(far)), 2))
    elif kind == "second_sun":
        broken = replace(state, n_celestial=state.n_celestial + 1)
    else:
        raise ValueError(f"breakage must be one of {BREAKAGES}, got {kind!r}")
    return tuple(broken if i == index else s for i, s in enumerate(states))


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame ([F, 3, H, W] in [0, 1] -> [F])."""
    return (a.float() - b.float()).pow(2).mean(dim=(1, 2, 3))


def _judge(clip: Clip, offset: int, window: torch.Tensor) -> Optional[dict[str, float]]:
    """The video judge's rates on a corrected window, spliced into the clip's true frames (the judge reads a whole
    clip: frame 1 is its reference and the motion rules count frames from it); None without a working judge."""
    try:
        from .video_judge import judge_clip
    except ImportError:
        return None
    frames = video_world.render_clip(clip)  # [T, H, W, 3] uint8
    frames[offset:offset + WINDOW] = np.round(window.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    verdicts = judge_clip(frames, clip)
    rows = list(verdicts["frames"] if isinstance(verdicts, dict) else verdicts)[offset:offset + WINDOW]
    keys = ("subject_ok", "background_ok", "motion_ok", "imaging_ok", "ok")
    return {key: float(np.mean([bool(row[key]) for row in rows])) for key in keys}


def _judge_works(case: dict[str, Any]) -> bool:
    """Whether the video judge (written beside this trainer, optional here) is importable and reads a window."""
    try:
        return _judge(case["clip"], case["offset"], case["true"]) is not None
    except Exception as error:  # noqa: BLE001 - the judge is an optional extra measurement
        print(f"the video judge did not run ({type(error).__name__}: {error}); measuring without it", flush=True)
        return False


def evaluate(folder: Path, *, n_clips: int = 24, seed: int = 0, guidance_scales: Sequence[float] = (1.5, 3.0),
             steps: int = 20, strength: float = 0.5, blur: float = 0.5, noise: float = 5.0, down: int = 4,
             use_judge: bool = True) -> dict[str, Any]:
    """The saved folder, loaded by ``load_animatediff`` (defaults), SDEditing held-out windows (seeded): one window
    per held-out clip (``split_clips("heldout", n_clips)``), at offset 0, 8 or 16 (the video loop's windows), in
    the canonical prompt, at t' = ``strength`` of a ``steps``-step schedule, with each guidance scale.

    1. ``degraded``: every frame of the true window through ``world.degrade`` (roughly a 4x VQ round trip);
    2. ``broken``: one frame of the true window broken (``break_window``; the kinds in turn), the rest true.

    Reported: the mean squared error to the true frames (0..1 scale) before and after; for broken windows also on
    the broken frame and on the intact ones, and the fraction of broken frames repaired (the corrected frame is
    nearer the true frame than the broken one); the video judge's rates on the corrected windows if it runs.
    """
    from ..correct.video import load_animatediff

    t0 = time.perf_counter()
    corrector = load_animatediff(folder, Path(folder) / "motion_adapter")
    clips = split_clips("heldout", n_clips)
    rng = np.random.default_rng(seed)
    cases = []
    for i, clip in enumerate(clips):
        offset = int(rng.choice([0, WINDOW, 2 * WINDOW]))
        states = clip.states()
        kind = BREAKAGES[i % len(BREAKAGES)]
        index = int(rng.integers(1, WINDOW - 1))   # a frame with true neighbours on both sides
        broken = break_window(states[offset:offset + WINDOW], index, kind, rng)
        true = _to_tensor(list(_window(clip, offset)))
        degraded = _to_tensor([world.degrade(frame, rng, blur=blur, noise=noise, down=down)
                               for frame in _window(clip, offset)])
        cases.append({"clip": clip, "offset": offset, "true": true, "degraded": degraded, "kind": kind,
                      "index": index, "broken": _to_tensor(list(_window(clip, 0, broken)))})

    judging = use_judge and bool(cases) and _judge_works(cases[0])
    results: dict[str, Any] = {}
    for scale in guidance_scales:
        rows: dict[str, list] = {"degraded": [], "broken": []}
        for i, case in enumerate(cases):
            prompt = video_world.prompt(case["clip"])
            for name in ("degraded", "broken"):
                given = case[name]
                fixed = corrector.correct_video(given, prompt, strength=strength, steps=steps,
                                                guidance_scale=scale, seed=seed + i)
                row = {"before": _mse(given, case["true"]), "after": _mse(fixed, case["true"])}
                if name == "broken":
                    j = case["index"]
                    row["repaired"] = bool(_mse(fixed[j:j + 1], case["true"][j:j + 1])
                                           < _mse(fixed[j:j + 1], given[j:j + 1]))
                    row["kind"], row["index"] = case["kind"], j
                if judging:
                    row["judge"] = _judge(case["clip"], case["offset"], fixed)
                rows[name].append(row)
        results[f"cfg_{scale:g}"] = _rates(rows)
    summary = {"eval_clips": len(cases), "eval_seed": seed, "eval_guidance": list(guidance_scales),
               "eval_steps": steps, "eval_strength": strength,
               "eval_degrade": {"blur": blur, "noise": noise, "down": down},
               "eval_breakages": {k: sum(c["kind"] == k for c in cases) for k in BREAKAGES},
               "results": results, "eval_seconds": round(time.perf_counter() - t0, 1)}
    if judging:
        summary["judge_true"] = _rates_judge([_judge(c["clip"], c["offset"], c["true"]) for c in cases])
        summary["judge_uncorrected"] = {
            name: _rates_judge([_judge(c["clip"], c["offset"], c[name]) for c in cases])
            for name in ("degraded", "broken")}
    return summary


def _rates_judge(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def _rates(rows: dict[str, list]) -> dict[str, Any]:
    """Means over the windows: MSE before / after (all frames; broken: also the broken and the intact frames)."""
    out: dict[str, Any] = {}
    for name, windows in rows.items():
        if not windows:
            continue
        entry = {"mse_before": float(torch.cat([w["before"] for w in windows]).mean()),
                 "mse_after": float(torch.cat([w["after"] for w in windows]).mean())}
        if name == "broken":
            at = lambda w, key, keep: w[key][[(i == w["index"]) == keep for i in range(len(w[key]))]]  # noqa: E731
            for part, keep in (("broken_frame", True), ("intact_frames", False)):
                entry[f"mse_before_{part}"] = float(torch.cat([at(w, "before", keep) for w in windows]).mean())
                entry[f"mse_after_{part}"] = float(torch.cat([at(w, "after", keep) for w in windows]).mean())
            entry["repaired"] = float(np.mean([w["repaired"] for w in windows]))
            entry["repaired_by_kind"] = {k: float(np.mean([w["repaired"] for w in windows if w["kind"] == k]))
                                         for k in BREAKAGES if any(w["kind"] == k for w in windows)}
        if windows[0].get("judge"):
            entry["judge"] = _rates_judge([w["judge"] for w in windows])
        out[name] = entry
    return out


_CARD = """# Toy video diffusion model (ACDC toy video world)

A small text-to-video diffusion model in pixel space, AnimateDiff-shaped: a 2-D text-to-image UNet plus a motion
adapter, trained together from scratch on 8-frame windows of 32x32 clips of the toy video world
(`acdc_core/toy/video_world.py`) with their self-contained prompts ("Mia, a red rabbit, hops to the right past a
rock across a meadow by day."). ACDC's video loop corrects a window of ARM frames with it by the same video SDEdit
as it runs with SD1.5 + AnimateDiff. Load it as those are loaded:

    from acdc_core.correct.video import load_animatediff
    dm = load_animatediff("{folder}", "{folder}/motion_adapter")   # no vae/: SDEdit on the pixels
    fixed = dm.correct_video(window, prompt, strength=0.5, steps=20, guidance_scale={recommended:g})  # [8, 3, 32, 32]

- Model: `UNetMotionModel.from_unet2d(unet, motion_adapter)`. The 2-D UNet (`unet/`, `UNet2DConditionModel`):
  32x32x3 in and out, block channels {channels} at 32, 16, 8, 4 px, {layers_per_block} resnet per level,
  cross-attention to the prompt at 8 and 4 px and in the middle block (no pooled-prompt embedding:
  `UNetMotionModel` takes none but SDXL's); {unet_parameters:,} parameters. The motion adapter (`motion_adapter/`,
  `MotionAdapter`): one temporal transformer per resnet at every level and in the middle block,
  {motion_heads} heads, a {max_frames}-position table (windows longer than {max_frames} frames are refused by the
  corrector: no other positions were trained); {motion_parameters:,} parameters. Text: `CLIPTextModel`,
  {text_layers} layers, hidden {text_hidden}, {text_parameters:,} parameters, trained with the UNet; `CLIPTokenizer`
  with every word of every prompt wording as one token ({vocab_words} words), a {text_tokens}-token window.
  {total_parameters:,} parameters in all, {weights_mb:.1f} MB of float32 safetensors.
- Scheduler: AnimateDiff's linear betas (0.00085 .. 0.012, 1000 steps) -- what `load_animatediff` samples with
  by default, so the model is trained on exactly the corrector's schedule -- rescaled to zero terminal SNR, with
  v-prediction and trailing spacing, as the toy image DM (Lin et al. 2024). t' = 0.5 leaves sqrt(alpha_bar) =
  {signal_half:.2f} of the window. The predicted clean window is clipped to [-1, 1] (pixel space). Stored as a DDIM
  config.
- Data: windows of {window} consecutive frames at random offsets of the first {train_clips} train-split clips
  (`video_world.split_clips("train", {train_clips})`, {train_prompts} distinct canonical prompts; held-out
  prompts are never trained on), each with its prompt in a random one of the {phrasings} wordings of
  `video_world.PHRASINGS`. Only true clips. {dropout_pct:.0f}% of prompts dropped to "" for classifier-free
  guidance.
- Training: `{command}`; v-prediction MSE weighted as min-SNR (the clean-window error weighted by the SNR clamped
  to [{snr_floor}, {snr_cap}]), one noise level per window; AdamW lr {lr}, betas (0.9, 0.99), weight decay 0.01,
  warmup then cosine to 5%, gradient clipping 1.0, EMA {ema_decay} (the saved weights), seed {seed}; the toy DMs'
  one training step (`train_dm.DiffusionTrainer`). AnimateDiff's two stages: (1) the 2-D UNet and the text encoder
  on single frames, batch {image_batch_size}, {image_steps} steps ({image_seconds} s), final loss
  {final_image_loss_text}; (2) {stage_two}, batch {batch_size} windows ({batch_frames} frames), {steps} steps.
  Final loss (mean of the last 100 steps) {final_loss:.4f}.
  The saved `unet/` + `motion_adapter/`, loaded back by `load_animatediff`, give the trained model's prediction
  exactly (largest difference {split_max_difference}).
- Wall time: {train_seconds} s training ({train_cpu_seconds} s of CPU time: the cores were shared) + {eval_seconds} s
  measuring, on {threads} CPU thread(s) ({machine}), torch {torch}, diffusers {diffusers}, transformers
  {transformers}.

## Measured correction quality

Through `load_animatediff` (default arguments) and `correct_video`, on one {window}-frame window of each of the
first {eval_clips} held-out clips (`video_world.split_clips("heldout", {eval_clips})`; the window at frame 0, 8 or
16, as the video loop cuts them), canonical prompt, seed {eval_seed}. DDIM, t' = {eval_strength}, {eval_steps}-step
schedule ({kept_steps} UNet calls). Mean squared error to the true frames, pixels in [0, 1].

(a) Degraded windows: every frame through `world.degrade(blur={blur}, noise={noise}, down={down})`, roughly a 4x VQ
round trip. (b) Broken windows: one frame (2nd to 7th) broken, the rest true: the animal's colour swapped
({n_colour}), its species swapped ({n_species}), the animal teleported 8 units or more ({n_teleport}; as far as it can go where the frame has no room for 8), or a second
sun / moon ({n_second_sun}) -- a `dataclasses.replace` of the frame's `FrameState`, rendered by
`video_world.render_frame`. "Repaired": the corrected frame is nearer the true frame than the broken one.

| guidance | (a) MSE before | (a) MSE after | (b) MSE before | (b) MSE after | (b) broken frame before / after | (b) intact frames before / after | repaired | colour | species | teleport | second sun |
|---|---|---|---|---|---|---|---|---|---|---|---|
{table}
{judge_section}
Recommended guidance for SDEdit: {recommended:g} ({why}).

Numbers are also in `training_summary.json`. Retraining with the same command and seed on the same torch
version and thread count gives the same weights; float results may differ slightly across machines.
"""

_JUDGE = """
The video judge (`acdc_core/toy/video_judge.py`, which reads every frame from its pixels alone; each corrected
window spliced into its true clip, the window's frames counted): fraction of frames whose subject, background,
motion and imaging checks hold, and all four ("ok").

| windows | subject | background | motion | imaging | ok |
|---|---|---|---|---|---|
{rows}
"""


def _recommend(results: dict[str, Any]) -> tuple[float, str]:
    """The guidance with the lowest mean of (a) and (b)'s MSE after correction, and why."""
    scored = {float(key[4:]): (r["degraded"]["mse_after"] + r["broken"]["mse_after"]) / 2
              for key, r in results.items()}
    best = min(scored, key=scored.get)
    return best, "the lowest mean squared error after correction over (a) and (b): " + ", ".join(
        f"{scale:g}: {value:.5f}" for scale, value in sorted(scored.items()))


def _card(summary: dict, folder: str) -> str:
    from diffusers import DDPMScheduler

    from ..correct.schedule import steps_run

    r = summary["results"]
    f = lambda x: f"{x:.5f}"  # noqa: E731
    table = []
    for key, res in r.items():
        a, b = res["degraded"], res["broken"]
        kinds = " | ".join(f"{100 * b['repaired_by_kind'][k]:.0f}%" if k in b["repaired_by_kind"] else "-"
                           for k in BREAKAGES)
        table.append(f"| {key[4:]} | {f(a['mse_before'])} | {f(a['mse_after'])} | {f(b['mse_before'])} | "
                     f"{f(b['mse_after'])} | {f(b['mse_before_broken_frame'])} / {f(b['mse_after_broken_frame'])} | "
                     f"{f(b['mse_before_intact_frames'])} / {f(b['mse_after_intact_frames'])} | "
                     f"{100 * b['repaired']:.0f}% | {kinds} |")
    judge_section = ""
    if "judge_true" in summary:
        cols = ("subject_ok", "background_ok", "motion_ok", "imaging_ok", "ok")
        line = lambda label, rates: f"| {label} | " + " | ".join(f"{100 * rates[c]:.0f}%" for c in cols) + " |"  # noqa
        rows = [line("true", summary["judge_true"])]
        for name, label in (("degraded", "(a) degraded"), ("broken", "(b) broken")):
            rows.append(line(f"{label}, uncorrected", summary["judge_uncorrected"][name]))
            rows += [line(f"{label}, corrected, guidance {key[4:]}", res[name]["judge"]) for key, res in r.items()]
        judge_section = _JUDGE.format(rows="\n".join(rows))
    recommended, why = _recommend(r)
    alphas = DDPMScheduler.from_config(scheduler_config()).alphas_cumprod
    n_kept = steps_run(summary["eval_strength"], summary["eval_steps"])
    weights = sum(summary["weights_bytes"].values())
    return _CARD.format(
        **summary, folder=folder, table="\n".join(table), judge_section=judge_section, recommended=recommended,
        why=why, channels=tuple(ARCHITECTURE["block_out_channels"]), layers_per_block=ARCHITECTURE["layers_per_block"],
        motion_heads=MOTION_ADAPTER["motion_num_attention_heads"], max_frames=MOTION_ADAPTER["motion_max_seq_length"],
        text_layers=TEXT_LAYERS, text_hidden=TEXT_HIDDEN, text_tokens=TEXT_TOKENS, phrasings=len(PHRASINGS),
        total_parameters=summary["unet_parameters"] + summary["motion_parameters"] + summary["text_parameters"],
        weights_mb=weights / 2**20, dropout_pct=100 * PROMPT_DROPOUT, snr_floor=SNR_FLOOR, snr_cap=SNR_CAP,
        batch_frames=summary["batch_size"] * WINDOW, kept_steps=n_kept,
        final_image_loss_text="-" if summary.get("final_image_loss") is None else f"{summary['final_image_loss']:.4f}",
        stage_two=("the motion modules alone, the image model frozen" if summary.get("freeze_spatial")
                   else f"everything, {100 * summary['image_fraction']:.0f}% of steps on single frames"),
        signal_half=float(alphas[int(summary["eval_strength"] * 1000) - 1].sqrt()),
        **{f"n_{k}": summary["eval_breakages"][k] for k in BREAKAGES}, **summary["eval_degrade"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    import diffusers
    import transformers

    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train_video_dm",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-steps", type=int, default=5000, help="stage 1: steps on single frames")
    parser.add_argument("--image-batch-size", type=int, default=16, help="frames per stage-1 step")
    parser.add_argument("--steps", type=int, default=1200, help="stage 2: steps on windows")
    parser.add_argument("--batch-size", type=int, default=2, help="windows per stage-2 step")
    parser.add_argument("--train-spatial", action="store_true",
                        help="stage 2 trains the image model too (joint image-video steps), not the motion modules "
                             "alone")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips", type=int, default=2000, help="train-split clips to take windows from")
    parser.add_argument("--eval-clips", type=int, default=24, help="held-out clips to measure (0: skip)")
    parser.add_argument("--eval-steps", type=int, default=20, help="the measurement's schedule length")
    parser.add_argument("--eval-guidance", type=float, nargs="+", default=[1.5, 3.0])
    parser.add_argument("--eval-only", action="store_true", help="measure an already trained --out folder")
    parser.add_argument("--no-judge", action="store_true", help="measure without the video judge")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    summary_file = args.out / "training_summary.json"
    if args.eval_only:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
    else:
        summary = train(args.out, seed=args.seed, image_steps=args.image_steps,
                        image_batch_size=args.image_batch_size, steps=args.steps, batch_size=args.batch_size,
                        lr=args.lr, n_clips=args.clips, freeze_spatial=not args.train_spatial,
                        log_every=max(1, min(100, args.steps // 10)))
        command = " ".join(["python -m acdc_core.toy.train_video_dm"]
                           + [shlex.quote(str(a)) for a in (sys.argv[1:] if argv is None else argv)])
        summary.update(threads=args.threads, torch=torch.__version__, diffusers=diffusers.__version__,
                       transformers=transformers.__version__, command=command,
                       machine=f"{platform.machine()}, {os.cpu_count()} cores visible")
        summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.eval_clips > 0:
        summary.update(evaluate(args.out, n_clips=args.eval_clips, seed=args.seed, steps=args.eval_steps,
                                guidance_scales=args.eval_guidance, use_judge=not args.no_judge))
        for name, res in summary["results"].items():
            a, b = res["degraded"], res["broken"]
            print(f"{name}: degraded MSE {a['mse_before']:.5f} -> {a['mse_after']:.5f}; broken MSE "
                  f"{b['mse_before']:.5f} -> {b['mse_after']:.5f}, repaired {b['repaired']:.0%}", flush=True)
        summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (args.out / "MODEL_CARD.md").write_text(_card(summary, str(args.out)), encoding="utf-8")
    print(f"saved to {args.out} ({summary['train_seconds']} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
