"""Train the toy video world's ARM: a VQ tokenizer (diffusers ``VQModel``) and a small Llama over text words plus
VQ codes, trained on whole clips ``BOS text BOI codes_1 EOI BOI codes_2 EOI ... BOI codes_24 EOI EOS`` (the unified
family's video layout, one prompt then 24 frames). The result is a unified-vocabulary ARM folder
(``acdc_core/arm/unified.py``) that writes video (``video_capable``) and the pack's built-in video ARM.

    python -m acdc_core.toy.train_video_arm --out acdc_core/toy/models/video_arm --seed 0

1. VQ: 32 px frames -> 8x8 codes (4x downsampling), codebook of 256, the story ARM's recipe
   (``train_arm.train_vq``: reconstruction + quantizer loss + the locality term, dead-code restarts). Frames: a
   third from train-split clips, a third random valid states (any position, height, facing, occluder), a third
   broken states (another colour, species or size, no or two suns/moons), so the codebook can also represent the
   ARM's mistakes.
2. LM: a Llama over [word tokens | codes] on train-split clips (``video_world.split_clips("train", n)``) with their
   canonical prompt, tokenised with the VQ above through the backend's own layout code (``unified.interleave``),
   so training and sampling see the same sequences. Loss on image codes only, softmax over the codebook slice;
   the text of 10% of clips replaced by PAD (the backend's unconditional CFG row). Trained on clips cropped per
   batch to their first k frames (``clip_crop``; half the batches up to the whole 24), so frame 1 from the text is
   seen often and every position of a clip is trained: what drift it shows past the first window is the model's.
3. Evaluation (``--eval-clips``): held-out clips generated ARM only through ``load_arm`` and the engine's video loop
   (``video.run_video`` with ``correct="none"``), judged per frame index by ``toy.video_judge``; with the VQ round
   trip of the true clip as the ceiling.

Seeded and deterministic on one thread (``--threads 1``, the default).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import video_world as vw
from . import world
from .train_arm import DEFAULT_SAMPLING, IMAGE_SIZE, VQ_SIZES, _log, fit_lm, train_vq, vq_encode
from .judge import vq_round_trip

__all__ = ["vq_video_frames", "ClipTokens", "train", "calibrate_judge", "evaluate", "main"]

TEXT_SLOT = 24   # the longest canonical video prompt is 21 word tokens; every prompt is left-padded to 24


def _broken(state: vw.FrameState, rng: np.random.Generator) -> vw.FrameState:
    kind = rng.integers(4)
    if kind == 0:
        return replace(state, colour=str(rng.choice([c for c in world.COLOURS if c != state.colour])))
    if kind == 1:
        return replace(state, species=str(rng.choice([s for s in world.SPECIES if s != state.species])))
    if kind == 2:
        return replace(state, scale=float(rng.choice([0.55, 0.95])))
    return replace(state, n_celestial=int(rng.choice([0, 2])))


def _random_state(rng: np.random.Generator) -> vw.FrameState:
    species, facing = str(rng.choice(world.SPECIES)), str(rng.choice(["left", "right"]))
    lo, hi = vw.x_range(species, facing)
    occluder = str(rng.choice(vw.OCCLUDERS)) if rng.random() < vw.OCCLUDER_RATE else None
    return vw.FrameState(species, str(rng.choice(world.COLOURS)), str(rng.choice(world.PLACES)),
                         str(rng.choice(world.TIMES)), round(float(rng.uniform(lo, hi)), 2),
                         lift=round(float(rng.uniform(0, vw.HOP_HEIGHT)), 2) if rng.random() < 0.3 else 0.0,
                         facing=facing, occluder=occluder, occluder_x=round(float(rng.uniform(8, 24)), 2))


def vq_video_frames(clips: Sequence[vw.Clip]):
    """A ``sample_frames(rng, n)`` for ``train_vq``: a third clip frames, a third random states, a third broken."""
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        states = []
        for k in range(n):
            kind = k % 3
            if kind == 0:
                clip = clips[int(rng.integers(len(clips)))]
                states.append(clip.states()[int(rng.integers(clip.frames))])
            elif kind == 1:
                states.append(_random_state(rng))
            else:
                states.append(_broken(_random_state(rng), rng))
        return np.stack([vw.render_frame(s, IMAGE_SIZE) for s in states])
    return sample


class ClipTokens:
    """Turns a clip into LM ids ``BOS text BOI codes EOI ... EOS`` with the backend's layout code."""

    def __init__(self, tokenizer, manifest, vq):
        self.tokenizer, self.manifest, self.vq = tokenizer, manifest, vq
        self.ids, self.offset = manifest.special_tokens, manifest.image_token_offset

    def codes(self, clips: Sequence[vw.Clip]) -> list[torch.Tensor]:
        frames = np.concatenate([vw.render_clip(c, IMAGE_SIZE) for c in clips])
        codes = vq_encode(self.vq, frames)
        return list(codes.split([c.frames for c in clips]))

    def __call__(self, clip: vw.Clip, codes: torch.Tensor) -> torch.Tensor:
        from ..arm.unified import interleave, prompt_ids

        text = prompt_ids(self.tokenizer, self.manifest, clip.prompt)
        return torch.cat([interleave(self.manifest, [text], [codes]), torch.tensor([self.ids["eos"]])])


def clip_crop(rng: np.random.Generator) -> int:
    """How many frames the clips of one LM batch keep: half the batches 1 .. WINDOW frames, half 1 .. FRAMES.
    Whole clips cost 1,600 tokens a sequence, and the hard part is frame 1 from the text alone, which a clip
    teaches once: crops show it about three times as often for the same compute, while the long ones keep every
    position of a 24-frame clip trained."""
    return int(rng.integers(1, vw.WINDOW + 1)) if rng.random() < 0.5 else int(rng.integers(1, vw.FRAMES + 1))


def train_lm(seqs: Sequence[torch.Tensor], tokens: ClipTokens, lm, *, codebook: int, seed: int, steps: int,
             batch_size: int = 4, lr: float = 3e-3, dropout: float = 0.1, log_every: int = 100) -> dict:
    """Train ``lm`` in place on clips cropped per batch (``clip_crop``) with the story ARM's loop; returns a
    summary."""
    summary = fit_lm(seqs, tokens.ids, tokens.offset, lm, codebook=codebook, seed=seed, steps=steps,
                     batch_size=batch_size, lr=lr, dropout=dropout, log_every=log_every, crop=clip_crop)
    return {**summary, "lm_train_clips": len(seqs), "lm_crop": "half 1..8 frames, half 1..24",
            "lm_tokens_per_clip": round(float(np.mean([len(s) for s in seqs])), 1)}


def video_vocabulary(n: int = 3000) -> list[str]:
    """Every wording of ``n`` train clips and of their prompts: the world's closed vocabulary."""
    return [vw.prompt(c, v) for c in vw.split_clips("train", n) for v in range(len(vw.PHRASINGS))]


def train(out: Path, *, seed: int = 0, vq_steps: int = 2000, lm_steps: int = 3000, n_clips: int = 4000,
          hidden: int = 128, layers: int = 4, heads: int = 4, lm_batch_size: int = 4, lm_lr: float = 3e-3,
          log_every: int = 100) -> dict:
    """Train the VQ and the LM and write the unified ARM folder ``out``; returns a summary."""
    from transformers import GenerationConfig, LlamaForCausalLM

    from ..arm.base import SamplingSettings
    from ..arm.unified import Manifest, build_word_tokenizer, prompt_ids, save_unified, special_ids
    from ..tiny.unified import lm_config

    start, cpu = time.perf_counter(), time.process_time()
    clips = vw.split_clips("train", n_clips)
    vq, summary = train_vq([], seed=seed, steps=vq_steps, log_every=log_every, sample_frames=vq_video_frames(clips))

    tokenizer = build_word_tokenizer(video_vocabulary())
    ids = special_ids(tokenizer)
    offset, K = len(tokenizer), VQ_SIZES["codebook_size"]
    manifest = Manifest(image_size=(IMAGE_SIZE, IMAGE_SIZE), grid=(IMAGE_SIZE // 4, IMAGE_SIZE // 4), codebook_size=K,
                        image_token_offset=offset, special_tokens=ids, text_slot=TEXT_SLOT,
                        default_sampling=SamplingSettings(**DEFAULT_SAMPLING),
                        info={"what": "the ACDC toy video world's ARM (acdc_core/toy/video_world.py); see MODEL_CARD.md",
                              "trained_by": "python -m acdc_core.toy.train_video_arm", "seed": seed,
                              "frames": vw.FRAMES, "window": vw.WINDOW})
    for clip in vw.split_clips("heldout", 300):   # the vocabulary is closed and every prompt fits the slot
        for v in range(len(vw.PHRASINGS)):
            text = vw.prompt(clip, v)
            if tokenizer.unk_token_id in tokenizer(text, add_special_tokens=False).input_ids:
                raise RuntimeError(f"held-out prompt {text!r} has a word the tokenizer lacks.")
        prompt_ids(tokenizer, manifest, clip.prompt)
    tokens = ClipTokens(tokenizer, manifest, vq)
    seqs = []
    for i in range(0, len(clips), 200):
        chunk = clips[i:i + 200]
        seqs += [tokens(c, codes) for c, codes in zip(chunk, tokens.codes(chunk))]
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(lm_config(offset + K, ids, hidden_size=hidden, intermediate_size=2 * hidden,
                                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                    max_position_embeddings=2048))
    summary.update(train_lm(seqs, tokens, lm, codebook=K, seed=seed, steps=lm_steps, batch_size=lm_batch_size,
                            lr=lm_lr, log_every=log_every))
    lm.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    summary.update(seed=seed, train_clips=len(clips), hidden=hidden, layers=layers, heads=heads, text_vocab=offset,
                   codebook_size=K, frames=vw.FRAMES, train_seconds=round(time.perf_counter() - start, 1),
                   train_cpu_seconds=round(time.process_time() - cpu, 1))
    save_unified(out, lm, tokenizer, vq, manifest)
    return summary


# --------------------------------------------------------------------------------------------------
# 3. Evaluation: ARM-only quality per frame index on held-out clips
# --------------------------------------------------------------------------------------------------
EVAL_CHECKS = ("ok", "subject_ok", "background_ok", "motion_ok", "imaging_ok", "moved")


def _rates(verdicts: Sequence[dict]) -> dict[str, list[Optional[float]]]:
    out = {}
    n = len(verdicts[0]["frames"])
    for check in EVAL_CHECKS:
        col = []
        for i in range(n):
            vals = [v["frames"][i][check] for v in verdicts if v["frames"][i].get(check) is not None]
            col.append(round(float(np.mean(vals)), 3) if vals else None)
        out[check] = col
    return out


CALIBRATION_START = 1_000_000   # train-split clips from this seed on: no model trains on them, none is held out


def calibrate_judge(arm, n_clips: int = 40, quantile: float = 0.99, accuracy_clips: int = 12) -> dict:
    """The video judge's fit threshold for ``arm``'s VQ (``video_judge.FIT_THRESHOLD`` is set from this): the
    ``quantile`` of the excess fit error over the VQ round trips of ``n_clips`` fresh train-split clips
    (``CALIBRATION_START``), and the judge's accuracy under it on round trips of ``accuracy_clips`` held-out clips,
    true and broken (``video_judge.measure_accuracy``)."""
    from .video_judge import calibrate_fit_threshold, measure_accuracy

    t0 = time.perf_counter()
    round_trip = vq_round_trip(arm)
    clips = vw.split_clips("train", n_clips, start=CALIBRATION_START)
    frames = np.concatenate([round_trip(vw.render_clip(c)) for c in clips])
    threshold = calibrate_fit_threshold(frames, quantile)
    accuracy = measure_accuracy(accuracy_clips, degradations=(), round_trip=round_trip,
                                fit_threshold=threshold)["round_trip"]
    return {"judge_fit_threshold": round(threshold, 2), "judge_calibration_clips": n_clips,
            "judge_calibration_quantile": quantile, "judge_accuracy_round_trip": {k: round(v, 4) for k, v in
                                                                                   accuracy.items()},
            "judge_calibration_seconds": round(time.perf_counter() - t0, 1)}


def evaluate(folder: Path, n_clips: int = 50, seed: int = 0, fit_threshold: Optional[float] = None) -> dict:
    """Held-out clips, ARM only through ``load_arm`` and the video loop, judged per frame index (with
    ``fit_threshold``, else the judge's own); the VQ round trip of the true clips as the ceiling."""
    from ..arm import load_arm
    from ..memory import MemoryModule, MemorySettings
    from ..video import VideoSettings, run_video
    from .video_judge import judge_clip

    t0 = time.perf_counter()
    arm = load_arm(folder)
    clips = vw.split_clips("heldout", n_clips)
    loop, ceiling = [], []
    for k, clip in enumerate(clips):
        state = run_video(clip.prompt, arm, None, MemoryModule(None, MemorySettings(mode="off")),
                          VideoSettings(frames=clip.frames, window=vw.WINDOW, correct="none", seed=seed + 1000 + k))
        loop.append(judge_clip(torch.stack(state.output_frames()), clip, fit_threshold=fit_threshold))
        true = torch.from_numpy(vw.render_clip(clip)).permute(0, 3, 1, 2) / 255.0
        ceiling.append(judge_clip(arm.decode(arm.encode(true)), clip, fit_threshold=fit_threshold))
    return {"eval_clips": len(clips), "eval_seed": seed, "arm_only": _rates(loop), "vq_ceiling": _rates(ceiling),
            "eval_seconds": round(time.perf_counter() - t0, 1)}


def format_table(evaluation: dict, every: int = 1) -> str:
    """The per-frame-index table as markdown (every ``every``-th frame)."""
    n = len(evaluation["arm_only"]["ok"])
    picks = list(range(0, n, every))
    lines = ["| run | check | " + " | ".join(f"f{i + 1}" for i in picks) + " |", "|---|---|" + "---|" * len(picks)]
    for run, title in (("arm_only", "ARM only"), ("vq_ceiling", "VQ round trip of the truth")):
        for check in EVAL_CHECKS:
            vals = evaluation[run][check]
            lines.append(f"| {title} | {check} | " + " | ".join("-" if vals[i] is None else f"{vals[i]:.2f}"
                                                             for i in picks) + " |")
    return "\n".join(lines)


_CARD = """# Toy video ARM (ACDC toy video world)

The pack's built-in video ARM: a unified-vocabulary autoregressive model for the toy video world
(`acdc_core/toy/video_world.py`), loaded by `load_arm("acdc_core/toy/models/video_arm")` as the `unified` family
(`acdc_core/arm/unified.py`, `video_capable`). From one prompt it writes a {frames}-frame clip frame by frame as 8x8 VQ
codes (32x32 px), every earlier frame in context: `BOS text BOI codes_1 EOI BOI codes_2 EOI ...`.

- VQ tokenizer (`vq/`): diffusers `VQModel`, channels {vq_channels}, 4x downsampling, codebook {codebook_size}, the
  story ARM's recipe (`train_arm.train_vq`: reconstruction + quantizer loss + locality term, dead-code restarts;
  {vq_codes_restarted} restarts), {vq_steps} steps, final loss {vq_final_loss:.4f}, {vq_parameters:,} parameters.
  Frames: a third from train clips, a third random valid states, a third broken states (colour, species, size,
  suns/moons), drawn fresh every step.
- Language model (`lm/`): `LlamaForCausalLM`, {layers} layers, hidden {hidden}, {heads} heads, {lm_parameters:,}
  parameters, vocabulary {text_vocab} word tokens + {codebook_size} codes, {lm_tokens_per_clip} tokens per clip.
  Trained on {train_clips} train-split clips of {frames} frames (split by a sha256 of the prompt: no held-out prompt
  is trained on), each batch cropped to its first k frames (`clip_crop`: {lm_crop}; {lm_tokens_per_step} tokens a
  step on average), loss on image codes only, {dropout_pct:.0f}% of prompts
  replaced by PAD (the CFG row). {lm_steps} steps, batch {lm_batch_size}, AdamW lr {lm_lr}, warmup then cosine to
  10%. Final code loss {lm_final_loss:.4f} nats per code.
- Default sampling (`acdc_arm.json`, chosen before any result): plain ancestral sampling (no CFG, temperature 1).
- Command: `{command}`. Training took {train_seconds} s wall ({train_cpu_seconds} s CPU) on {threads} thread(s)
  ({machine}; the cores were shared with other jobs), torch {torch}, transformers {transformers}, diffusers
  {diffusers}; the evaluation below took {eval_seconds} s.

## ARM-only quality per frame index (held-out clips)

{eval_clips} held-out clips (`video_world.split_clips("heldout", {eval_clips})`), clip k seeded 1000 + k, generated
by `run_video(correct="none")` and judged by `toy.video_judge` from the pixels alone (every 2nd frame shown; all
in `training_summary.json`): `ok` = every check; subject (species, colour, size as prompted and as frame 1),
background (place, time, one sun or moon, as frame 1), motion (the step from the previous frame follows the
prompt's rule), imaging (the frame fits a render), moved (dynamic degree: it moved at least half its speed).

{table}

The judge's imaging check under this VQ: a frame passes when its excess fit error is at most {judge_fit_threshold}
(`video_judge.FIT_THRESHOLD`), the {quantile_pct:g}th percentile over the VQ round trips of {judge_calibration_clips}
fresh train-split clips (`calibrate_judge`; no model trained on them, none is held out). Under it, on the round trips
of 12 held-out clips judged true and broken (`video_judge.measure_accuracy`): {judge_accuracy_text}.

The benchmark (`benchmarks/bench_toy_video.py`, README "Toy video benchmark") measures what correcting the first
window changes.
"""


def write_card(out: Path, summary: dict) -> None:
    accuracy = summary["judge_accuracy_round_trip"]
    text = ", ".join(f"{k.replace('fires:', 'fires on ')} {100 * v:.1f}%" for k, v in accuracy.items() if k != "n_frames")
    card = _CARD.format(**summary, vq_channels=tuple(VQ_SIZES["vq_channels"]), dropout_pct=100 * summary["prompt_dropout"],
                        table=format_table(summary, every=2), quantile_pct=100 * summary["judge_calibration_quantile"],
                        judge_accuracy_text=f"{text} ({accuracy['n_frames']:.0f} frames a condition)")
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    import diffusers
    import transformers

    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train_video_arm",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vq-steps", type=int, default=2000)
    parser.add_argument("--lm-steps", type=int, default=6000)
    parser.add_argument("--clips", type=int, default=4000, help="train-split clips")
    parser.add_argument("--lm-batch-size", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--eval-clips", type=int, default=50, help="held-out clips to measure (0: skip)")
    parser.add_argument("--eval-only", action="store_true", help="measure the folder --out (already trained) and "
                                                                 "write its card")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)

    def measure(summary: dict) -> None:
        from ..arm import load_arm

        summary.update(calibrate_judge(load_arm(args.out)))
        _log(f"judge fit threshold for this VQ: {summary['judge_fit_threshold']} "
             f"(accuracy on its round trips: {summary['judge_accuracy_round_trip']})")
        summary.update(evaluate(args.out, args.eval_clips, seed=args.seed, fit_threshold=summary["judge_fit_threshold"]))
        _log(format_table(summary, every=2))
        write_card(args.out, summary)

    if args.eval_only:
        summary = json.loads((args.out / "training_summary.json").read_text(encoding="utf-8"))
        measure(summary)
        (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return 0
    summary = train(args.out, seed=args.seed, vq_steps=args.vq_steps, lm_steps=args.lm_steps, n_clips=args.clips,
                    hidden=args.hidden, layers=args.layers, lm_batch_size=args.lm_batch_size, log_every=max(1, min(100, args.lm_steps // 10)))
    given = list(sys.argv[1:] if argv is None else argv)
    summary.update(threads=args.threads, torch=torch.__version__, transformers=transformers.__version__,
                   diffusers=diffusers.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cores visible",
                   command=" ".join(["python -m acdc_core.toy.train_video_arm"] + [shlex.quote(str(a)) for a in given]))
    if args.eval_clips > 0:
        measure(summary)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _log(f"saved to {args.out} ({summary['train_seconds']} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
