"""Train the toy world's ARM: a VQ tokenizer (diffusers ``VQModel``) and a small Llama over text words plus
VQ codes, trained on whole stories ``text_1 image_1 ... text_6 image_6``. The result is a unified-vocabulary
ARM folder (``acdc_core/arm/unified.py``) and the pack's built-in default ARM.

    python -m acdc_core.toy.train_arm --out acdc_core/toy/models/arm --seed 0

1. VQ: 32 px frames -> 8x8 codes (4x downsampling), codebook of 256. Trained on rendered frames: a third
   from train-split stories, a third random valid scenes, a third physically broken scenes
   (``world.corrupt``: wrong ears, legs, suns/moons) so the codebook can also represent the ARM's mistakes.
   MSE + L1 reconstruction plus the VQModel quantizer's own loss (straight-through, commitment); codes
   unused for 100 steps are restarted at the worst-quantised encoder outputs during the first 80 % of
   training. A *locality* term keeps a code about its own 4x4 cell: the encoder's GroupNorm normalises
   over the whole image, so without it a flat patch of sky took one of ~10-30 codes depending on the
   rest of the frame (the animal's colour, where it stands), noise the language model had to predict
   before it had drawn the animal; samples then came out as blobs. Pasting half the cells of another frame
   over a frame must leave every cell's latent unchanged (``mix_cells``).
   Measured afterwards with the judge on VQ round trips of unseen frames.
2. LM: a Llama over [word tokens | codes], on train-split stories tokenised with the VQ above
   ``BOS text_1 BOI codes_1 EOI ... text_6 BOI codes_6 EOI EOS``. The loss is on image codes only,
   softmax over the codebook slice of the vocabulary: the text is always given at sampling time and the
   backend only ever samples codes from that slice, so the capacity of a small model goes to the images.
   For 10 % of stories every text token is replaced by PAD (the backend's unconditional CFG row), so
   classifier-free guidance has an unconditional distribution to push against.
3. Evaluation (``--eval-stories``, default 50): held-out stories generated ARM-only through the real
   backend (``load_arm``) and the engine loop (``run_story`` with ``correct_frames=0``) at the manifest's
   default sampling, judged per frame index by ``toy.judge``. For reference, the same with an *oracle
   context* (each frame sampled after the ground-truth codes of the earlier frames, what a perfect
   corrector would leave in the context) and the VQ round trip of the true frames (the ceiling).

Seeded and deterministic on one thread (``--threads 1``, the default): the data order, the corruptions
and the initialisation all come from ``--seed``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .world import Scene, Story, split_stories

__all__ = ["train_vq", "train_lm", "evaluate", "main"]

IMAGE_SIZE = 32
TEXT_SLOT = 20   # the longest world prompt is 18 word tokens; every frame's text is left-padded to 20
# Plain ancestral sampling from the model (no CFG, temperature 1, no truncation): the neutral choice, made
# before any result was seen, and what acdc_core/toy/defaults.py runs the toy world with.
DEFAULT_SAMPLING = {"guidance_scale": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
VQ_SIZES = {"codebook_size": 256, "vq_embed_dim": 16, "latent_channels": 16, "vq_channels": (16, 32, 32),
            "norm_num_groups": 8}


def _log(message: str) -> None:
    print(message, flush=True)


def _to_pixels(frames: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float in [-1, 1] (what the VQ works in)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _cosine(step: int, steps: int, warmup: int) -> float:
    """Warmup, then cosine from 1 down to 0.1."""
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, steps)))))


# --------------------------------------------------------------------------------------------------
# 1. The VQ tokenizer
# --------------------------------------------------------------------------------------------------
def vq_frames(rng: np.random.Generator, stories: Sequence[Story], n: int) -> tuple[np.ndarray, list[Scene]]:
    """``n`` training frames: a third story frames, a third random valid scenes, a third broken scenes."""
    scenes = []
    for k in range(n):
        kind = k % 3
        if kind == 0:
            story = stories[int(rng.integers(len(stories)))]
            scenes.append(story.scenes[int(rng.integers(len(story.scenes)))])
        elif kind == 1:
            scenes.append(world.sample_scene(rng))
        else:
            scenes.append(world.corrupt(world.sample_scene(rng), rng))
    return np.stack([world.render(s, IMAGE_SIZE) for s in scenes]), scenes


def mix_cells(frames: np.ndarray, rng: np.random.Generator, block: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Each frame with a random half of its ``block`` x ``block`` cells (one VQ code each) taken from the
    next frame of the batch (cut and paste on the code grid), and the masks ``[N, h/block, w/block]`` of
    the pasted cells."""
    n, h, w, _ = frames.shape
    pasted = rng.random((n, h // block, w // block)) < 0.5
    pixels = np.repeat(np.repeat(pasted, block, axis=1), block, axis=2)[..., None]
    return np.where(pixels, np.roll(frames, -1, axis=0), frames), pasted


def train_vq(stories: Sequence[Story], *, seed: int, steps: int, batch_size: int = 16, lr: float = 2e-3,
             locality: float = 0.25, log_every: int = 100,
             sample_frames: Optional[Callable[[np.random.Generator, int], np.ndarray]] = None):
    """Train the VQModel; returns it (eval mode) and a summary. Each step's frames come from
    ``sample_frames(rng, batch_size)`` ([N, 32, 32, 3] uint8; default: ``vq_frames`` over ``stories``)."""
    from ..tiny.unified import vq_model

    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vq = vq_model(image_size=IMAGE_SIZE, **VQ_SIZES)
    K, D = VQ_SIZES["codebook_size"], VQ_SIZES["vq_embed_dim"]
    optimizer = torch.optim.Adam(vq.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, steps, max(1, min(50, steps // 10))))
    usage = torch.zeros(K)
    losses, local_losses, restarted = [], [], 0
    vq.train()
    for step in range(steps):
        frames = sample_frames(rng, batch_size) if sample_frames else vq_frames(rng, stories, batch_size)[0]
        x = _to_pixels(frames)
        latent = vq.quant_conv(vq.encoder(x))
        quant, vq_loss, (_, _, codes) = vq.quantize(latent)
        recon = vq.decoder(vq.post_quant_conv(quant))
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x) + vq_loss
        if locality:
            # A cell's latent must depend on that cell only: pasting half the cells of another frame over
            # a frame changes the rest of the image (and GroupNorm's whole-image statistics) but must not
            # change the latents of the cells that stayed, nor of the pasted ones.
            mixed, pasted = mix_cells(frames, rng)
            mixed_latent = vq.quant_conv(vq.encoder(_to_pixels(mixed)))
            target = torch.where(torch.from_numpy(pasted)[:, None], latent.roll(-1, dims=0), latent)
            # relative to the latents' spread, so shrinking every latent cannot satisfy it
            local_loss = F.mse_loss(mixed_latent, target) / target.detach().var().clamp_min(1e-6)
            loss = loss + locality * local_loss
            local_losses.append(local_loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        usage += torch.bincount(codes.detach(), minlength=K).float()
        if (step + 1) % 100 == 0:
            dead = (usage == 0).nonzero()[:, 0]
            if len(dead) and step < 0.8 * steps:
                # Restart unused codes at the worst-quantised encoder outputs of this batch (rare patches:
                # edges, ears, legs). Restarting at random outputs would mostly split common flat patches
                # (sky, ground) into near-duplicate codes, which makes the codes unpredictable for the LM.
                pool = latent.detach().permute(0, 2, 3, 1).reshape(-1, D)
                error = torch.cdist(pool, vq.quantize.embedding.weight.detach()).min(dim=1).values
                pick = error.topk(min(len(dead), len(pool))).indices
                with torch.no_grad():
                    vq.quantize.embedding.weight[dead[:len(pick)]] = pool[pick]
                restarted += len(pick)
            usage.zero_()
        if log_every and (step + 1) % log_every == 0:
            _log(f"vq step {step + 1}/{steps}  loss {np.mean(losses[-log_every:]):.4f}  "
                 f"{time.perf_counter() - start:.0f} s")
    vq.eval()
    return vq, {"vq_steps": steps, "vq_batch_size": batch_size, "vq_lr": lr, "vq_locality_weight": locality,
                "vq_final_loss": float(np.mean(losses[-50:])) if losses else None,
                "vq_final_locality": float(np.mean(local_losses[-50:])) if local_losses else None,
                "vq_codes_restarted": restarted,
                "vq_parameters": sum(p.numel() for p in vq.parameters()),
                "vq_seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def vq_encode(vq, frames: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> codes [N, 64] by the VQModel's own quantizer (what the backend's encode does)."""
    out = []
    for i in range(0, len(frames), batch_size):
        latent = vq.quant_conv(vq.encoder(_to_pixels(frames[i:i + batch_size])))
        out.append(vq.quantize(latent)[2][2].reshape(latent.shape[0], -1))
    return torch.cat(out) if out else torch.zeros(0, 64, dtype=torch.long)


@torch.no_grad()
def vq_decode(vq, codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, T] -> images [N, 3, H, W] in [0, 1] (what the backend's decode does)."""
    n, grid = codes.shape[0], int(math.isqrt(codes.shape[1]))
    quant = vq.quantize.get_codebook_entry(codes.reshape(-1), (n, grid, grid, vq.quantize.vq_embed_dim))
    return ((vq.decoder(vq.post_quant_conv(quant)) + 1) / 2).clamp(0, 1)


def vq_quality(vq, *, seed: int, n: int = 300) -> dict:
    """The judge on VQ round trips of unseen random frames (half broken): how often it reads every
    attribute right, and how often its physical-validity verdict is right, on valid and broken frames."""
    from .judge import ATTRIBUTES, judge_frame

    rng = np.random.default_rng(seed + 10_000)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    scenes = [world.corrupt(s, rng) if k % 2 else s for k, s in enumerate(scenes)]
    images = vq_decode(vq, vq_encode(vq, np.stack([world.render(s, IMAGE_SIZE) for s in scenes])))
    attrs, valid_ok, broken_ok = [], [], []
    for image, scene in zip(images, scenes):
        r = judge_frame(image, scene)
        attrs.append(all(r[a] == getattr(scene, a) for a in ATTRIBUTES))
        (valid_ok if scene.physically_valid else broken_ok).append(r["physical_valid"] == scene.physically_valid)
    return {"vq_roundtrip_frames": n, "vq_roundtrip_attributes": float(np.mean(attrs)),
            "vq_roundtrip_valid_judged_valid": float(np.mean(valid_ok)),
            "vq_roundtrip_broken_judged_broken": float(np.mean(broken_ok))}


# --------------------------------------------------------------------------------------------------
# 2. The language model
# --------------------------------------------------------------------------------------------------
class StoryTokens:
    """Turns stories into LM ids ``BOS text_1 BOI codes_1 EOI ... EOS`` with the backend's own layout code
    (``unified.prompt_ids`` + ``unified.interleave``), so training and sampling see the same sequences."""

    def __init__(self, tokenizer, manifest, codes_of: Callable[[Scene], torch.Tensor]):
        self.tokenizer, self.manifest, self.codes_of = tokenizer, manifest, codes_of
        self.ids, self.offset = manifest.special_tokens, manifest.image_token_offset

    def __call__(self, story: Story) -> torch.Tensor:
        from ..arm.unified import interleave, prompt_ids

        texts = [prompt_ids(self.tokenizer, self.manifest, p) for p in story.prompts]
        story_ids = interleave(self.manifest, texts, [self.codes_of(s)[None] for s in story.scenes])
        return torch.cat([story_ids, torch.tensor([self.ids["eos"]])])


def _lm_batch(seqs: Sequence[torch.Tensor], pad: int) -> torch.Tensor:
    """Right-pad to one length. Causal attention never looks right, so the padding needs no mask."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, :len(seq)] = seq
    return out


def image_code_loss(lm, ids: torch.Tensor, offset: int, codebook: int, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of every image code given what precedes it, over the codebook slice of the logits (their mean,
    or with ``reduction="none"`` one per code, in sequence order)."""
    hidden = lm.model(input_ids=ids).last_hidden_state[:, :-1]
    target = ids[:, 1:]
    is_code = (target >= offset) & (target < offset + codebook)
    logits = lm.lm_head(hidden[is_code])[:, offset:offset + codebook]
    return F.cross_entropy(logits.float(), target[is_code] - offset, reduction=reduction)


def fit_lm(seqs: Sequence[torch.Tensor], ids: dict, offset: int, lm, *, codebook: int, seed: int, steps: int,
           batch_size: int = 4, lr: float = 3e-3, dropout: float = 0.1, log_every: int = 100,
           crop: Optional[Callable[[np.random.Generator], int]] = None) -> dict:
    """Train ``lm`` in place on the LM sequences ``seqs`` (loss on image codes only; ``dropout`` of them with their
    text replaced by PAD, the unconditional CFG row); returns a summary. ``crop(rng)``, when given, draws per batch how
    many images every sequence of the batch keeps (the rest cut off after that image's end token), from its own
    generator so the batches and dropouts are those of an uncropped run."""
    from ..arm.unified import unconditional

    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    crop_rng = np.random.default_rng(seed + 2)
    end_token = ids["eoi"]
    optimizer = torch.optim.AdamW(lm.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, steps, max(1, min(100, steps // 10))))
    order, cursor, losses, lengths = rng.permutation(len(seqs)), 0, [], []
    lm.train()
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(seqs)), 0
        keep = crop(crop_rng) if crop is not None else None
        batch = []
        for i in order[cursor:cursor + batch_size]:
            seq = seqs[i]
            if keep is not None:
                ends = (seq == end_token).nonzero().flatten()
                if keep < len(ends):
                    seq = seq[:int(ends[keep - 1]) + 1]
            batch.append(unconditional(seq, ids, offset) if rng.random() < dropout else seq)
        cursor += batch_size
        lengths.append(max(len(s) for s in batch))
        loss = image_code_loss(lm, _lm_batch(batch, ids["pad"]), offset, codebook)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            _log(f"lm step {step + 1}/{steps}  code loss {np.mean(losses[-log_every:]):.4f}  "
                 f"{time.perf_counter() - start:.0f} s")
    lm.eval()
    return {"lm_steps": steps, "lm_batch_size": batch_size, "lm_lr": lr, "prompt_dropout": dropout,
            "lm_tokens_per_step": round(float(np.mean(lengths)) * batch_size, 1) if lengths else None,
            "lm_final_loss": float(np.mean(losses[-50:])) if losses else None,
            "lm_loss_curve": [round(float(np.mean(losses[i:i + log_every])), 4)
                              for i in range(0, len(losses), max(1, log_every))],
            "lm_parameters": sum(p.numel() for p in lm.parameters()),
            "lm_seconds": round(time.perf_counter() - start, 1)}


def story_crop(rng: np.random.Generator) -> int:
    """How many frames the stories of one LM batch keep under ``--crop``: half the batches 1 or 2 frames, half
    1 .. 6 (the video ARM's ``clip_crop`` carried back to 6-frame stories: frame 1 from the text is shown more
    often for the same compute, and every position of a story is still trained)."""
    return int(rng.integers(1, 3)) if rng.random() < 0.5 else int(rng.integers(1, 7))


STORY_CROP = "half 1..2 frames, half 1..6"


def train_lm(stories: Sequence[Story], tokens: StoryTokens, lm, *, codebook: int, seed: int, steps: int,
             batch_size: int = 4, lr: float = 3e-3, dropout: float = 0.1, log_every: int = 100,
             crop: bool = False) -> dict:
    """Train ``lm`` on stories in place (``fit_lm``), whole or, with ``crop``, cut per batch by ``story_crop``;
    returns a summary."""
    seqs = [tokens(s) for s in stories]
    summary = fit_lm(seqs, tokens.ids, tokens.offset, lm, codebook=codebook, seed=seed, steps=steps,
                     batch_size=batch_size, lr=lr, dropout=dropout, log_every=log_every,
                     crop=story_crop if crop else None)
    return {**summary, "lm_train_stories": len(seqs), "lm_crop": STORY_CROP if crop else "none (whole stories)",
            "lm_tokens_per_story": round(float(np.mean([len(s) for s in seqs])), 1)}


class _SceneCodes:
    """Codes of a scene's frame under the trained VQ, computed once per distinct scene."""

    def __init__(self, vq):
        self.vq, self.memo = vq, {}

    def fill(self, scenes: Sequence[Scene]) -> None:
        todo = list(dict.fromkeys(s for s in scenes if s not in self.memo))
        if todo:
            codes = vq_encode(self.vq, np.stack([world.render(s, IMAGE_SIZE) for s in todo]))
            self.memo.update(zip(todo, codes))

    def __call__(self, scene: Scene) -> torch.Tensor:
        if scene not in self.memo:
            self.fill([scene])
        return self.memo[scene]


# The shipped ARM's share of training stories whose character carries one defect through every frame (the command's
# default, so `python -m acdc_core.toy.train` makes the shipped model).
CARRIED_DEFECTS = 0.25


ONSETS = ("first", "random")


def carry_defects(stories: Sequence[Story], fraction: float, seed: int, onset: str = "first") -> list[Story]:
    """``stories`` with, in a seeded ``fraction`` of them, the character drawn with one defect (1 or 3 ears, 3 or 5
    legs) from an onset frame to the last: its appearance is carried over from frame to frame, right or wrong. An
    ARM trained on them learns to copy the character's body from its context, so a defect it draws is copied on:
    errors propagate through the context, as in the paper's ARMs. ``onset``: "first" (the defect is there from
    frame 1: the shipped ARM's) or "random" (it appears at a random frame and stays, so the share of broken frames
    grows with the frame index, as a per-frame error rate that persists makes it)."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"the fraction of stories with a carried defect must be in [0, 1]; got {fraction!r}.")
    if onset not in ONSETS:
        raise ValueError(f"the defect onset is one of {ONSETS}; got {onset!r}.")
    rng = np.random.default_rng(seed + 3)
    out = []
    for story in stories:
        if rng.random() < fraction:
            if rng.random() < 0.5:
                body = {"n_ears": int(rng.choice([1, 3]))}
            else:
                body = {"n_legs": int(rng.choice([3, 5]))}
            start = 0 if onset == "first" else int(rng.integers(0, len(story.scenes)))
            story = Story(tuple(replace(s, **body) if k >= start else s for k, s in enumerate(story.scenes)),
                          story.prompts)
        out.append(story)
    return out


def train(out: Path, *, seed: int = 0, vq_steps: int = 2000, lm_steps: int = 6000, n_stories: int = 6000,
          hidden: int = 128, layers: int = 4, heads: int = 4, lm_batch_size: int = 4, lm_lr: float = 3e-3,
          vq_eval_frames: int = 300, carried: float = 0.0, onset: str = "first", crop: bool = False,
          log_every: int = 100) -> dict:
    """Train the VQ and the LM and write the unified ARM folder ``out``; returns a summary. ``carried``: the
    fraction of training stories whose character carries one defect through every frame (``carry_defects``);
    ``crop``: train the LM on stories cut per batch (``story_crop``) instead of whole ones."""
    from transformers import GenerationConfig, LlamaForCausalLM

    from ..arm.base import SamplingSettings
    from ..arm.unified import Manifest, build_word_tokenizer, save_unified, special_ids
    from ..tiny.unified import lm_config

    start, cpu = time.perf_counter(), time.process_time()
    stories = carry_defects(split_stories("train", n_stories), carried, seed, onset)
    vq, summary = train_vq(stories, seed=seed, steps=vq_steps, log_every=log_every)
    summary.update(vq_quality(vq, seed=seed, n=vq_eval_frames))
    _log(f"VQ round trip, judged: attributes {summary['vq_roundtrip_attributes']:.1%}, valid frames judged valid "
         f"{summary['vq_roundtrip_valid_judged_valid']:.1%}, broken judged broken "
         f"{summary['vq_roundtrip_broken_judged_broken']:.1%}")

    # The world's vocabulary is closed: the words of 2000 train stories cover it (checked on held-out ones).
    tokenizer = build_word_tokenizer(p for s in split_stories("train", 2000) for p in s.prompts)
    ids = special_ids(tokenizer)
    unk = tokenizer.unk_token_id
    for story in split_stories("heldout", 200):
        for prompt in story.prompts:
            if unk in tokenizer(prompt, add_special_tokens=False).input_ids:
                raise RuntimeError(f"held-out prompt {prompt!r} has a word the tokenizer lacks.")
    offset, K = len(tokenizer), VQ_SIZES["codebook_size"]
    manifest = Manifest(image_size=(IMAGE_SIZE, IMAGE_SIZE), grid=(IMAGE_SIZE // 4, IMAGE_SIZE // 4), codebook_size=K,
                        image_token_offset=offset, special_tokens=ids, text_slot=TEXT_SLOT,
                        default_sampling=SamplingSettings(**DEFAULT_SAMPLING),
                        info={"what": "the ACDC toy world's ARM (acdc_core/toy/world.py); see MODEL_CARD.md",
                              "trained_by": "python -m acdc_core.toy.train_arm", "seed": seed})
    codes = _SceneCodes(vq)
    codes.fill([s for story in stories for s in story.scenes])
    tokens = StoryTokens(tokenizer, manifest, codes)
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(lm_config(offset + K, ids, hidden_size=hidden, intermediate_size=2 * hidden,
                                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                    max_position_embeddings=1024))
    summary.update(train_lm(stories, tokens, lm, codebook=K, seed=seed, steps=lm_steps, batch_size=lm_batch_size, lr=lm_lr,
                            log_every=log_every, crop=crop))
    lm.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])

    summary.update(seed=seed, train_stories=len(stories), carried_defects=carried, defect_onset=onset, hidden=hidden, layers=layers, heads=heads,
                   text_vocab=offset, codebook_size=K, distinct_train_frames=len(codes.memo),
                   train_seconds=round(time.perf_counter() - start, 1),
                   train_cpu_seconds=round(time.process_time() - cpu, 1))
    save_unified(out, lm, tokenizer, vq, manifest)
    return summary


# --------------------------------------------------------------------------------------------------
# 3. Evaluation: ARM-only quality per frame index on held-out stories
# --------------------------------------------------------------------------------------------------
_KEYS = ("physical_valid", "consistent", "matches_prompt")


def _per_frame(results: list[list[dict]]) -> dict[str, list[float]]:
    """Per key, the rate at each frame index over stories."""
    n = len(results[0])
    return {key: [float(np.mean([story[i][key] for story in results])) for i in range(n)] for key in _KEYS}


def judged_runs(arm, stories: Sequence[Story], sampling, seed: int = 0) -> dict[str, list[list[dict]]]:
    """ARM only on ``stories`` (story k seeded ``seed + 1000 k``), each frame judged: ``arm_only`` (the engine loop,
    the ARM continuing from its own frames), ``oracle_context`` (the same seeds, every frame drawn after the true
    earlier frames) and ``vq_ceiling`` (the VQ round trip of the truth). Per run, per story, per frame: the judge's
    verdict."""
    from ..arm import ARMContext
    from ..state import StorySettings
    from ..story import run_story
    from .judge import judge_story

    loop, oracle, ceiling = [], [], []
    for k, story in enumerate(stories):
        story_seed = seed + 1000 * k
        state = run_story(story.prompts, arm, None, None,
                          StorySettings(sampling=sampling, correct_frames=0, seed=story_seed))
        loop.append(judge_story([r.arm_image for r in state.records], story))

        true_codes = arm.encode(torch.from_numpy(world.render_story(story, IMAGE_SIZE)).permute(0, 3, 1, 2) / 255.0)
        ceiling.append(judge_story(arm.decode(true_codes), story))
        context, frames = ARMContext(), []
        for i, prompt in enumerate(story.prompts):   # the same seeds as the loop; the context holds the truth
            tokens = arm.sample_chunk(context, prompt, settings=sampling,
                                      generator=torch.Generator().manual_seed(story_seed + i))
            frames.append(arm.decode(tokens)[0])
            context = context.append(prompt, true_codes[i:i + 1])
        oracle.append(judge_story(frames, story))
    return {"arm_only": loop, "oracle_context": oracle, "vq_ceiling": ceiling}


def evaluate(folder: Path, n_stories: int = 50, seed: int = 0) -> dict:
    """Held-out stories, ARM only, judged per frame index (``judged_runs``) at the ARM's default sampling."""
    from ..arm import load_arm

    t0 = time.perf_counter()
    arm = load_arm(folder)
    sampling = arm.default_sampling
    stories = split_stories("heldout", n_stories)
    runs = judged_runs(arm, stories, sampling, seed)
    return {"eval_stories": len(stories), "eval_seed": seed, "eval_sampling": {
                "guidance_scale": sampling.guidance_scale, "temperature": sampling.temperature,
                "top_k": sampling.top_k, "top_p": sampling.top_p},
            **{name: _per_frame(results) for name, results in runs.items()},
            "eval_seconds": round(time.perf_counter() - t0, 1)}


def format_table(evaluation: dict) -> str:
    """The per-frame-index table as markdown."""
    n = len(evaluation["arm_only"]["physical_valid"])
    lines = ["| run | judged | " + " | ".join(f"frame {i + 1}" for i in range(n)) + " |",
             "|---|---|" + "---|" * n]
    names = {"arm_only": "ARM only (run_story, correct_frames=0)", "oracle_context": "oracle context",
             "vq_ceiling": "VQ round trip of the truth"}
    for run, title in names.items():
        for key in _KEYS:
            lines.append(f"| {title} | {key} | " + " | ".join(f"{v:.2f}" for v in evaluation[run][key]) + " |")
    return "\n".join(lines)


_CARD = """# Toy ARM (ACDC toy world)

The pack's built-in default ARM: a unified-vocabulary autoregressive model for the toy world
(`acdc_core/toy/world.py`), loaded by `load_arm("acdc_core/toy/models/arm")` as the `unified` family
(`acdc_core/arm/unified.py`). It writes a 6-frame story frame by frame as 8x8 VQ codes (32x32 px), every
earlier frame and prompt in context.

- VQ tokenizer (`vq/`): diffusers `VQModel`, channels {vq_channels}, 4x downsampling (32 px -> 8x8 = 64 codes),
  codebook {codebook_size} x {vq_embed_dim}, {vq_parameters:,} parameters. {vq_steps} steps, batch {vq_batch_size},
  Adam lr {vq_lr} (warmup, cosine to 10%), MSE + L1 + the quantizer's loss + {vq_locality_weight} x a locality
  term (a cell's latent must not change when half the other cells come from another frame; see
  `train_arm.py`); unused codes restarted at the worst-quantised latents ({vq_codes_restarted} restarts).
  Final loss {vq_final_loss:.4f}, locality term {vq_final_locality:.3f}. Data: rendered frames, a third from
  train stories, a third random valid scenes, a third broken scenes (`world.corrupt`), drawn fresh every step.
  Judged on {vq_roundtrip_frames} VQ round trips of unseen frames (half broken): all six attributes read right
  {pct_attr:.1f}%, valid frames judged valid {pct_valid:.1f}%, broken frames judged broken {pct_broken:.1f}%.
- Language model (`lm/`): `LlamaForCausalLM`, {layers} layers, hidden {hidden}, {heads} heads, {lm_parameters:,}
  parameters, vocabulary = {text_vocab} word tokens (word-level tokenizer over the world's sentences,
  lower-cased) + {codebook_size} image codes. Sequence `BOS text_1 BOI codes_1 EOI ... text_6 BOI codes_6 EOI EOS`
  ({lm_tokens_per_story} tokens per story). Loss on image codes only (softmax over the codebook slice: the
  text is always given when sampling). Text of {dropout_pct:.0f}% of stories replaced by PAD (the CFG
  unconditional row). {lm_steps} steps, batch {lm_batch_size}, AdamW lr {lm_lr}, betas (0.9, 0.98),
  weight decay 0.01, warmup then cosine to 10%. Final code loss {lm_final_loss:.4f} (nats per code).
- Data: {train_stories} train-split stories (`world.split_stories("train", {train_stories})`; the split is a
  sha256 of the prompts, so no held-out story is trained on), {distinct_train_frames} distinct frames;
  {carried_pct:.0f}% of them with the character carrying one defect (1 or 3 ears, 3 or 5 legs) through every
  frame (`carry_defects`: its body is copied from frame to frame, right or wrong).
- Default sampling (in `acdc_arm.json`; plain ancestral sampling, chosen before any result and not tuned):
  guidance {gs} (1 = no CFG), temperature {temp}, top-k {topk} (0 = off), top-p {topp}.
- Command: `{command}`, seed {seed}. Training took {train_cpu_seconds} s of CPU time, {train_seconds} s wall
  (VQ {vq_seconds} s, LM {lm_seconds} s wall) on {threads} CPU thread(s) ({machine}; the cores were shared
  with other jobs, so wall time is inflated), torch {torch}, transformers {transformers}, diffusers
  {diffusers}; the evaluation below took {eval_seconds} s wall.

## ARM-only quality per frame index (held-out stories)

{eval_stories} held-out stories (`world.split_stories("heldout", {eval_stories})`), story k seeded
{eval_seed} + 1000 k (frame i: + i), generated through `load_arm` + `run_story(correct_frames=0)` at the
default sampling, judged by `toy.judge` from pixels alone: physically valid (one sun or moon, two ears,
four legs), consistent with frame 1 (species and colour as read from the generated frame 1), matches the
frame's prompt (species, colour, place, time, position, pose).

{table}

*Oracle context*: each frame sampled with the same seed but after the VQ codes of the true earlier frames
(what a perfect corrector would leave in the context). *VQ round trip of the truth*: the judge on
decode(encode(true frame)), the ceiling the VQ allows. The gap between the ARM-only and oracle rows at
later frames is error accumulation through the context, the phenomenon ACDC corrects.

Numbers are also in `training_summary.json`. Retraining with the same command, seed, torch version and
thread count reproduces the data and initialisation; float results may differ across machines.
"""


def write_card(out: Path, summary: dict) -> None:
    s = summary
    card = _CARD.format(**s, vq_channels=tuple(VQ_SIZES["vq_channels"]), vq_embed_dim=VQ_SIZES["vq_embed_dim"],
                        pct_attr=100 * s["vq_roundtrip_attributes"],
                        pct_valid=100 * s["vq_roundtrip_valid_judged_valid"],
                        pct_broken=100 * s["vq_roundtrip_broken_judged_broken"], dropout_pct=100 * s["prompt_dropout"],
                        gs=s["eval_sampling"]["guidance_scale"], temp=s["eval_sampling"]["temperature"],
                        topk=s["eval_sampling"]["top_k"], topp=s["eval_sampling"]["top_p"],
                        carried_pct=100 * s.get("carried_defects", 0.0), table=format_table(s))
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    import diffusers
    import transformers

    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train_arm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vq-steps", type=int, default=2000)
    parser.add_argument("--lm-steps", type=int, default=6000)
    parser.add_argument("--stories", type=int, default=6000, help="train-split stories")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vq-eval-frames", type=int, default=300, help="unseen frames to judge VQ round trips on")
    parser.add_argument("--eval-stories", type=int, default=50, help="held-out stories to measure (0: skip)")
    parser.add_argument("--carried-defects", type=float, default=CARRIED_DEFECTS,
                        help="fraction of training stories whose character carries one defect (ears or legs) "
                             "through every frame, so the ARM learns to copy its body from the context")
    parser.add_argument("--defect-onset", choices=ONSETS, default="first",
                        help="where a carried defect starts: frame 1 (the shipped ARM's) or a random frame, kept to the end")
    parser.add_argument("--crop", action="store_true",
                        help=f"train the LM on stories cut per batch ({STORY_CROP}) instead of whole ones")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    summary = train(args.out, seed=args.seed, vq_steps=args.vq_steps, lm_steps=args.lm_steps, n_stories=args.stories,
                    hidden=args.hidden, layers=args.layers, vq_eval_frames=args.vq_eval_frames, carried=args.carried_defects, onset=args.defect_onset,
                    crop=args.crop, log_every=max(1, min(100, args.lm_steps // 10)))
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m acdc_core.toy.train_arm"] + [shlex.quote(str(a)) for a in given])
    summary.update(threads=args.threads, torch=torch.__version__, transformers=transformers.__version__,
                   diffusers=diffusers.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cores visible",
                   command=command)
    if args.eval_stories > 0:
        summary.update(evaluate(args.out, args.eval_stories, seed=args.seed))
        _log(format_table(summary))
        write_card(args.out, summary)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _log(f"saved to {args.out} ({summary['train_seconds']} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
