"""Train the toy world's diffusion model: a small pixel-space, text-conditioned DM, the pack's built-in DM.

    python -m acdc_core.toy.train_dm --out acdc_core/toy/models/dm --seed 0

What it writes is an ordinary diffusers-format folder without a VAE (``model_index.json``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``; safetensors), loaded by ``acdc_core.correct.load_corrector``
like any Stable Diffusion folder: the corrector sees no ``vae`` and runs its SDEdit loop on the pixels.

- Data: the frames of train-split world stories (``world.split_stories("train", n)``), 32x32 RGB rendered by
  ``world.render`` and scaled to [-1, 1], each with one of its complete wordings (``world.descriptions``: the
  memory module's ``world.full_prompt`` and the story intros' three), drawn afresh every step, so the DM reads
  what a prompt says, not its style. Only valid frames (one sun or moon, two ears, four legs): that the DM
  knows nothing else is what lets SDEdit pull a broken frame back to the valid world.
- Model: ``UNet2DConditionModel`` at 32x32, 3 channels in and out (``ARCHITECTURE``). Text: a tiny
  ``CLIPTextModel`` trained jointly, behind a ``CLIPTokenizer`` whose vocabulary holds every world word as one
  token (``tiny.sd.write_tiny_clip_tokenizer``).
- Objective: DDPM training with ``tiny.sd.pixel_space_scheduler_config()`` (SD's betas, v-prediction; the
  corrector samples it with DDIM, trailing spacing). 10% of prompts are dropped to ""
  so classifier-free guidance works with the corrector's unconditional input (the encoded empty prompt).
- Optimiser: AdamW, warmup then cosine decay; the saved weights are an exponential moving average.
  Seeded; on one thread the run is deterministic.

After training, ``evaluate`` measures the saved folder through ``load_corrector`` with the judge
(``toy.judge``) on held-out frames and writes MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import world
from .judge import ATTRIBUTES, judge_frame
from .world import Scene, full_prompt, split_stories

__all__ = ["ARCHITECTURE", "world_words", "build_dataset", "train", "evaluate", "main"]

SIZE = 32
TEXT_TOKENS = 32  # the text window: a full prompt is about 20 CLIP tokens
PROMPT_DROPOUT = 0.1
SNR_FLOOR, SNR_CAP = 0.05, 5.0  # loss weighting: see ``train``

# The UNet: 32, 16, 8, 4 px levels; cross-attention to the prompt at 8 and 4 px and in the middle block, and
# the prompt pooled into the time embedding ("text" addition embedding) so every resnet sees it. Attention at
# 16 px and above would cost about as much as the rest of the network on a CPU; 32 channels at full size (not
# 16) is what removes the last grain of noise from flat colours.
ARCHITECTURE = dict(
    block_out_channels=(32, 32, 64, 64), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=8, norm_num_groups=16, addition_embed_type="text", addition_embed_type_num_heads=4)
TEXT_HIDDEN, TEXT_LAYERS = 64, 2


def world_words(stories: Sequence[world.Story]) -> list[str]:
    """Every lower-case word of the stories' sentences and of every wording of their frames, sorted: one token
    each."""
    text = " ".join(" ".join(s.prompts + tuple(d for scene in s.scenes for d in world.descriptions(scene)))
                    for s in stories).lower()
    return sorted(set(re.findall(r"[a-z]+", text)))


def build_dataset(stories: Sequence[world.Story], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [M, 3, 32, 32] in [-1, 1] and prompt ids [M, K, TEXT_TOKENS], one row per frame, one of the K
    wordings of ``world.descriptions`` each."""
    scenes = [scene for story in stories for scene in story.scenes]
    frames = np.stack([world.render(scene, SIZE) for scene in scenes])  # [M, H, W, 3] uint8
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # -> [M, 3, H, W] in [-1, 1]
    wordings = [world.descriptions(scene) for scene in scenes]
    ids = _ids(tokenizer, [w for words in wordings for w in words])
    return images, ids.view(len(scenes), len(wordings[0]), -1)


def _ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids exactly as the corrector makes them: padded to the window, truncated."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def _build_models(folder: Path, words: Sequence[str]):
    """Tokenizer (written to ``folder/tokenizer``), text encoder and UNet, freshly initialised from the torch RNG."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..tiny.sd import write_tiny_clip_tokenizer

    tokenizer_dir = write_tiny_clip_tokenizer(folder / "tokenizer", words=words, model_max_length=TEXT_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    vocab_size = len(tokenizer)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=4, max_position_embeddings=TEXT_TOKENS,
        projection_dim=TEXT_HIDDEN, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(sample_size=SIZE, in_channels=3, out_channels=3,
                                cross_attention_dim=TEXT_HIDDEN, **ARCHITECTURE)
    return tokenizer, text_encoder, unet


class DiffusionTrainer:
    """The toy DMs' training step, written once (``train`` here, ``train_video_dm.fit``): v-prediction MSE weighted
    as min-SNR, AdamW with warmup then cosine decay to 5%, gradient clipping, and an EMA of ``models`` (the weights
    saved). ``models`` are trained where their parameters require grad."""

    def __init__(self, models: Sequence[torch.nn.Module], noise_schedule, *, steps: int, lr: float, ema_decay: float,
                 generator: torch.Generator):
        self.models, self.noise_schedule, self.generator = tuple(models), noise_schedule, generator
        self.alphas_cumprod, self.ema_decay, self.done = noise_schedule.alphas_cumprod, ema_decay, 0
        self.parameters = [p for model in self.models for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
        warmup = max(1, min(200, steps // 10))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
            0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))
        self.ema = [copy.deepcopy(model).eval().requires_grad_(False) for model in self.models]
        for model in self.models:
            model.train()

    def step(self, clean: torch.Tensor, predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
        """One step on the clean batch ``clean`` ([N, ...], one noise level per row); ``predict(noisy, timesteps)``
        is the model's v prediction. Returns the loss."""
        schedule = self.noise_schedule
        noise = torch.randn(clean.shape, generator=self.generator)
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (clean.shape[0],), generator=self.generator)
        noisy = schedule.add_noise(clean, noise, timesteps)
        target = schedule.get_velocity(clean, noise, timesteps)  # v = sqrt(a) * noise - sqrt(1 - a) * clean
        predicted = predict(noisy, timesteps)
        # Min-SNR weighting (Hang et al. 2023): the v error is sqrt(SNR + 1) times the error of the predicted
        # clean image; weigh that error by SNR clamped to [SNR_FLOOR, SNR_CAP], so that neither nearly clean
        # inputs (huge SNR) dominate the gradient nor pure noise (SNR 0: the prompt alone) goes unlearned.
        snr = self.alphas_cumprod[timesteps] / (1 - self.alphas_cumprod[timesteps])
        weight = snr.clamp(SNR_FLOOR, SNR_CAP) / (snr + 1)
        loss = (weight * (predicted - target).pow(2).flatten(1).mean(dim=1)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.schedule.step()
        # EMA with a warm-up (the average starts short and lengthens to 1 / (1 - ema_decay) steps).
        decay = min(self.ema_decay, (1 + self.done) / (10 + self.done))
        with torch.no_grad():
            for averaged, model in zip(self.ema, self.models):
                for a, p in zip(averaged.parameters(), model.parameters()):
                    a.lerp_(p, 1 - decay)
        self.done += 1
        return loss.item()


def train(out: Path, *, seed: int = 0, steps: int = 2400, batch_size: int = 16, lr: float = 1e-3,
          n_stories: int = 2000, ema_decay: float = 0.999, log_every: int = 200) -> dict:
    """Train and save the diffusers folder; returns a summary (steps, loss, wall time, sizes)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from ..tiny.sd import pixel_space_model_index, pixel_space_scheduler_config

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    stories = split_stories("train", n_stories)
    tokenizer, text_encoder, unet = _build_models(out, world_words(stories))
    images, ids = build_dataset(stories, tokenizer)
    empty_ids = _ids(tokenizer, [""])[0]
    # Training adds noise exactly as the corrector's DDIM sampler assumes: same betas, same alphas_cumprod.
    noise_schedule = DDPMScheduler.from_config(pixel_space_scheduler_config())

    trainer = DiffusionTrainer((unet, text_encoder), noise_schedule, steps=steps, lr=lr, ema_decay=ema_decay,
                               generator=generator)
    losses = []
    for step in range(steps):
        rows = torch.from_numpy(rng.integers(0, len(images), batch_size))
        wording = torch.from_numpy(rng.integers(0, ids.shape[1], batch_size))
        prompt_ids = ids[rows, wording].clone()
        prompt_ids[torch.from_numpy(rng.random(batch_size) < PROMPT_DROPOUT)] = empty_ids  # for guidance
        losses.append(trainer.step(images[rows], lambda noisy, timesteps, ids=prompt_ids: unet(
            noisy, timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}  loss {np.mean(losses[-log_every:]):.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

    ema = trainer.ema
    ema_unet, ema_text = ema
    ema_unet.save_pretrained(out / "unet", safe_serialization=True)
    ema_text.save_pretrained(out / "text_encoder", safe_serialization=True)
    DDIMScheduler.from_config(pixel_space_scheduler_config()).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(pixel_space_model_index(), indent=2) + "\n")
    return {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay,
            "train_stories": len(stories), "train_frames": len(images),
            "distinct_train_images": len({f.numpy().tobytes() for f in images}),
            "vocab_words": len(world_words(stories)),
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "text_parameters": sum(p.numel() for p in text_encoder.parameters()),
            "final_loss": float(np.mean(losses[-200:])) if losses else None,
            "train_seconds": round(time.perf_counter() - start, 1)}


# -- measuring the saved model ----------------------------------------------------------------------------

_POSE_WORDS = {"standing": "stands", "jumping": "jumps", "lying": "lies down"}


def pronoun_prompt(scene: Scene) -> str:
    """What a story says about a later frame without memory: only the pronoun and the pose ("She jumps.")."""
    return f"{world.pronoun(scene.name)} {_POSE_WORDS[scene.pose]}."


def _to_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255  # [N, H, W, 3] -> [N, 3, H, W]


def _scores(images: torch.Tensor, scenes: Sequence[Scene]) -> dict[str, float]:
    """Judge rates: physical validity, prompt match (all six attributes) and each attribute alone."""
    results = [judge_frame(image, scene) for image, scene in zip(images, scenes)]
    rates = {"physical_valid": float(np.mean([r["physical_valid"] for r in results])),
             "matches_scene": float(np.mean([r["matches_prompt"] for r in results]))}
    rates.update({a: float(np.mean([a not in r["mismatched"] for r in results])) for a in ATTRIBUTES})
    return rates


def evaluate(folder: Path, *, n_frames: int = 200, seed: int = 0, guidance_scale: Optional[float] = None,
             steps: int = 20, strength: float = 0.5, blur: float = 0.5, noise: float = 5.0, down: int = 4,
             batch_size: int = 50) -> dict:
    """The saved folder, loaded by ``load_corrector``, judged on ``n_frames`` held-out frames (seeded):

    1. ``sampling``: generation from pure noise (strength 1.0) with the full prompt;
    2. ``corrupted``: the frames broken by ``world.corrupt`` (ears, legs or suns/moons) and degraded like a VQ
       round trip (``world.degrade``), as given (``uncorrected``) and after SDEdit at ``strength`` with the full
       prompt (``full_prompt``);
    3. ``intro_prompt``: the same SDEdit with the scene told as a story's first sentence (``world.intro_prompt``,
       its three wordings in turn): complete like the full prompt, in another style;
    4. ``pronoun_prompt``: the same SDEdit with only "She jumps." (what the DM gets without memory).

    ``guidance_scale`` defaults to the toy settings' (``defaults.TOY_SETTINGS``). Physical validity and scene
    match (species, colour, place, time, position, pose all as in the true scene) are read by the judge from the
    pixels alone.
    """
    from ..correct import load_corrector
    from .defaults import TOY_SETTINGS

    guidance_scale = TOY_SETTINGS.guidance_scale if guidance_scale is None else float(guidance_scale)
    t0 = time.perf_counter()
    corrector = load_corrector(folder)
    per_story = 6
    stories = split_stories("heldout", math.ceil(n_frames / per_story))
    scenes = [scene for story in stories for scene in story.scenes][:n_frames]
    rng = np.random.default_rng(seed)
    broken = [world.corrupt(scene, rng) for scene in scenes]
    damaged = _to_tensor([world.degrade(world.render(b, SIZE), rng, blur=blur, noise=noise, down=down)
                          for b in broken])

    def run(images: torch.Tensor, prompts: list[str], strength_: float) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch_size):
            out.append(corrector.correct(images[i:i + batch_size], prompts[i:i + batch_size], strength=strength_,
                                         steps=steps, guidance_scale=guidance_scale, seed=seed + i))
        return torch.cat(out)

    full = [full_prompt(scene) for scene in scenes]
    grey = torch.full((len(scenes), 3, SIZE, SIZE), 0.5)  # strength 1.0 keeps nothing of it
    results = {
        "sampling": _scores(run(grey, full, 1.0), scenes),
        "uncorrected": _scores(damaged, scenes),
        "full_prompt": _scores(run(damaged, full, strength), scenes),
        "intro_prompt": _scores(run(damaged, [world.intro_prompt(s, i) for i, s in enumerate(scenes)], strength),
                                scenes),
        "pronoun_prompt": _scores(run(damaged, [pronoun_prompt(s) for s in scenes], strength), scenes),
    }
    return {"eval_frames": len(scenes), "eval_seed": seed, "eval_guidance": guidance_scale, "eval_steps": steps,
            "eval_strength": strength, "eval_degrade": {"blur": blur, "noise": noise, "down": down},
            "eval_corruptions": {k: sum(getattr(b, "n_" + k) != v for b in broken)
                                 for k, v in (("ears", 2), ("legs", 4), ("celestial", 1))},
            "results": results, "eval_seconds": round(time.perf_counter() - t0, 1)}


_CARD = """# Toy diffusion model (ACDC toy world)

A small text-to-image diffusion model in pixel space (as DeepFloyd IF is), trained on single 32x32 frames of
the toy world (`acdc_core/toy/world.py`) with complete descriptions of them ("Mia, a red rabbit, jumps
on the left of a meadow at night."). It is the pack's built-in DM: ACDC's corrector noises an ARM frame to
t' and denoises it back with this model. Load it like any diffusers folder:

    from acdc_core.correct import load_corrector
    dm = load_corrector("acdc_core/toy/models/dm")      # no vae/: the corrector works on the pixels
    fixed = dm.correct(frames, prompts, strength=0.5, steps=20, guidance_scale=1.5)  # frames [N, 3, 32, 32]

- Model: `UNet2DConditionModel`, 32x32x3 in and out, block channels {channels} at 32, 16, 8, 4 px,
  {layers_per_block} resnet per level, cross-attention to the prompt at 8 and 4 px and in the middle block, the
  pooled prompt added to the time embedding; {unet_parameters:,} parameters. Text: `CLIPTextModel`,
  {text_layers} layers, hidden {text_hidden}, {text_parameters:,} parameters, trained jointly; `CLIPTokenizer`
  with every world word as one token ({vocab_words} words), a {text_tokens}-token window. float32 safetensors.
- Scheduler: SD1.5's betas (scaled linear 0.00085 .. 0.012, 1000 steps) rescaled to zero terminal SNR, with
  v-prediction and trailing spacing (Lin et al. 2024: otherwise the last step keeps 7% of the frame, and a
  model sampled from pure noise reads the noise's low frequencies as sky and ground). t' = 0.5 leaves
  sqrt(alpha_bar) = {signal_half:.2f} of the frame (SD1.5: 0.53). The predicted clean image is clipped to
  [-1, 1] (pixel space). Stored as a DDIM config, what the corrector samples with.
- Data: {train_frames} frames of {train_stories} train-split stories (`world.split_stories("train", {train_stories})`;
  {distinct_train_images} distinct images, since the name only changes the prompt), rendered by `world.render`,
  each with one of its four complete wordings drawn afresh every step (`world.descriptions`: `world.full_prompt`,
  what the memory writes, and the story intros' three, "Meet Mia, a red rabbit. She jumps ..."). Only valid
  frames. {dropout_pct:.0f}% of prompts dropped to "" for classifier-free guidance.
- Training: `{command}`; v-prediction MSE weighted as min-SNR (the clean-image
  error weighted by the SNR clamped to [{snr_floor}, {snr_cap}]); AdamW lr {lr}, betas (0.9, 0.99), weight
  decay 0.01, warmup then cosine to 5%, batch {batch_size}, {steps} steps, gradient clipping 1.0, EMA
  {ema_decay} (the saved weights), seed {seed}.
  Final loss (mean of the last 200 steps) {final_loss:.4f}.
- Wall time: {train_seconds} s training + {eval_seconds} s measuring, on {threads} CPU thread(s) ({machine}),
  torch {torch}, diffusers {diffusers}, transformers {transformers}.

## Measured correction quality

Through `load_corrector` and the judge (`acdc_core/toy/judge.py`, which reads a frame from its pixels alone),
on the first {eval_frames} frames of held-out stories (`world.split_stories("heldout", ...)`), seed {eval_seed}.
DDIM, {eval_steps}-step schedule, classifier-free guidance {eval_guidance} (the toy defaults,
`acdc_core/toy/defaults.py`). "Broken" frames: `world.corrupt` (wrong ears {n_ears}, legs {n_legs}, suns/moons
{n_celestial} of them), then `world.degrade(blur={blur}, noise={noise}, down={down})`, roughly a 4x VQ round trip.
"Scene kept": the judge reads species, colour, place, time, position and pose all as in the true scene.

| frames | physically valid | scene kept | species | colour | position | pose |
|---|---|---|---|---|---|---|
{table}

1. Sampling from pure noise (strength 1.0) with the full prompt: the model alone draws valid frames of the
   prompted scene at the rates in the first row.
2. SDEdit at t' = {eval_strength} of broken frames with the full prompt (what the memory module writes) repairs
   physical validity from {uncorrected_valid:.1f}% to {full_valid:.1f}% and keeps the scene in {full_scene:.1f}%.
3. The same with the scene told as a story's first sentence (`world.intro_prompt`, as complete, another style):
   {intro_valid:.1f}% valid, scene kept in {intro_scene:.1f}%. The DM reads what a prompt says, not its wording, so
   the story benchmark's "without memory" ablation measures missing information.
4. The same with only the story's pronoun sentence ("She jumps."): {pronoun_valid:.1f}% valid, scene kept in
   {pronoun_scene:.1f}%: without memory the DM does not know who "she" is, and species and colour drift.

Numbers are also in `training_summary.json`. Retraining with the same command and seed on the same torch
version and thread count gives the same weights; float results may differ slightly across machines.
"""

_ROWS = (("sampling", "1. sampled from noise, full prompt"), ("uncorrected", "broken frames, uncorrected"),
         ("full_prompt", "2. SDEdit t'=0.5, full prompt"), ("intro_prompt", "3. SDEdit t'=0.5, intro sentence"),
         ("pronoun_prompt", "4. SDEdit t'=0.5, pronoun prompt"))


def _card(summary: dict) -> str:
    from diffusers import DDPMScheduler

    from ..tiny.sd import pixel_space_scheduler_config

    r = summary["results"]
    table = "\n".join(
        f"| {label} | " + " | ".join(f"{100 * r[key][col]:.1f}%" for col in
                                     ("physical_valid", "matches_scene", "species", "colour", "position", "pose"))
        + " |" for key, label in _ROWS)
    alphas = DDPMScheduler.from_config(pixel_space_scheduler_config()).alphas_cumprod
    pct = {f"{key}_{col}": 100 * r[name][metric] for key, name in
           (("uncorrected", "uncorrected"), ("full", "full_prompt"), ("intro", "intro_prompt"),
            ("pronoun", "pronoun_prompt"))
           for col, metric in (("valid", "physical_valid"), ("scene", "matches_scene"))}
    return _CARD.format(
        **summary, **pct, table=table, channels=tuple(ARCHITECTURE["block_out_channels"]),
        layers_per_block=ARCHITECTURE["layers_per_block"], text_layers=TEXT_LAYERS, text_hidden=TEXT_HIDDEN,
        text_tokens=TEXT_TOKENS, dropout_pct=100 * PROMPT_DROPOUT, snr_floor=SNR_FLOOR, snr_cap=SNR_CAP,
        signal_half=float(alphas[int(summary["eval_strength"] * 1000) - 1].sqrt()),
        n_ears=summary["eval_corruptions"]["ears"], n_legs=summary["eval_corruptions"]["legs"],
        n_celestial=summary["eval_corruptions"]["celestial"], **summary["eval_degrade"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    import diffusers
    import transformers

    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train_dm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stories", type=int, default=2000, help="train-split stories to take frames from")
    parser.add_argument("--eval-frames", type=int, default=200, help="held-out frames to measure (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    summary = train(args.out, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    n_stories=args.stories, log_every=max(1, min(200, args.steps // 10)))
    command = f"python -m acdc_core.toy.train_dm --out {args.out} --seed {args.seed} --steps {args.steps}"
    summary.update(threads=args.threads, torch=torch.__version__, diffusers=diffusers.__version__,
                   transformers=transformers.__version__, command=command,
                   machine=f"{platform.machine()}, {os.cpu_count()} cores visible")
    if args.eval_frames > 0:
        summary.update(evaluate(args.out, n_frames=args.eval_frames, seed=args.seed))
        for name, rates in summary["results"].items():
            print(f"{name:15s} valid {rates['physical_valid']:.1%}  scene {rates['matches_scene']:.1%}")
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.eval_frames > 0:
        (args.out / "MODEL_CARD.md").write_text(_card(summary), encoding="utf-8")
    print(f"saved to {args.out} ({summary['train_seconds']} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
