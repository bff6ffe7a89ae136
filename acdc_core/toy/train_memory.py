"""Train the toy world's memory LLM: a tiny Llama that rewrites a story's next sentence into a
self-contained prompt, served by the same ``LocalLLM`` backend as real instruct models.

    python -m acdc_core.toy.train_memory --out acdc_core/toy/models/memory --seed 0

Data: per-frame chats exactly as ``MemoryModule`` builds them (earlier self-contained prompts, numbered,
plus the new story sentence) from train-split world stories; the answer is ``world.full_prompt`` of the
frame. Tokenizer: byte-level BPE trained on the world's sentences (every world word is one token), with
a ChatML template. Plain torch AdamW, loss on the answer tokens only, seeded.

System prompts: the chat template drops system messages, and in a user message it keeps only the text
from the last "Earlier prompts:" on (that is where ``LocalLLM`` puts a system prompt it merges into the
user turn). So the model sees the same tokens whatever system prompt ``MemorySettings`` carries and was
trained without one. It knows one task: per-frame rewriting in the toy world. A whole-story chat gets no
usable numbered answer, and ``MemoryModule`` then queries frame by frame.

The held-out accuracy is measured through the real serving path: ``load_local_llm`` + ``MemoryModule``
(per-frame, greedy, default settings), each frame conditioned on the model's own earlier answers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .world import Story, split_stories

__all__ = ["CHAT_TEMPLATE", "build_tokenizer", "build_examples", "train", "evaluate", "main"]

SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHAT_TEMPLATE = (
    "{#- Toy memory model: trained on one task without a system prompt. System messages are dropped, and a "
    "user message keeps only its text from the last 'Earlier prompts:' on (where LocalLLM merges a system "
    "prompt into the user turn). #}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% set content = message['content'] %}"
    "{% if 'Earlier prompts:' in content %}"
    "{% set content = 'Earlier prompts:' ~ content.split('Earlier prompts:')[-1] %}"
    "{% endif %}"
    "<|im_start|>user\n{{ content }}<|im_end|>\n"
    "{% elif message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chat(earlier: Sequence[str], sentence: str) -> list[dict[str, str]]:
    from ..memory import per_frame_messages

    return per_frame_messages("", earlier, sentence)


def build_tokenizer(stories: Sequence[Story], vocab_size: int = 512):
    """Byte-level BPE trained on the stories' sentences and the memory chat's fixed words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [" ".join(s.prompts) + " " + " ".join(s.full_prompts) for s in stories]
    corpus += ["Earlier prompts: none (this is the first frame).\nNew sentence: Answer: 1. 2. 3. 4. 5. 6. 7. 8. 9."] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   chat_template=CHAT_TEMPLATE)


def build_examples(stories: Sequence[Story], tokenizer) -> list[tuple[list[int], list[int]]]:
    """One (prompt ids, answer ids + eos) pair per frame, the earlier answers being the true prompts."""
    chats, answers = [], []
    for story in stories:
        full = story.full_prompts
        for i, sentence in enumerate(story.prompts):
            chats.append(tokenizer.apply_chat_template(_chat(full[:i], sentence), tokenize=False,
                                                       add_generation_prompt=True))
            answers.append(full[i])
    prompt_ids = tokenizer(chats, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return [(p, a + [tokenizer.eos_token_id]) for p, a in zip(prompt_ids, answer_ids)]


def _batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (p, a) in enumerate(examples):
        seq = p + a
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, len(p):len(seq)] = torch.tensor(a)
        mask[row, :len(seq)] = 1
    return ids, labels, mask


def train(out: Path, *, seed: int = 0, steps: int = 600, batch_size: int = 32, lr: float = 2e-3,
          n_stories: int = 4000, hidden: int = 128, layers: int = 2, log_every: int = 100) -> dict:
    """Train and save the model folder; returns a summary (steps, loss, wall time, sizes)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stories = split_stories("train", n_stories)
    tokenizer = build_tokenizer(stories)
    examples = build_examples(stories, tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, min(50, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))

    order = rng.permutation(len(examples))
    cursor, losses = 0, []
    model.train()
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(examples)), 0
        ids, labels, mask = _batch([examples[i] for i in order[cursor:cursor + batch_size]], tokenizer.pad_token_id)
        cursor += batch_size
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}  loss {np.mean(losses[-log_every:]):.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "train_stories": len(stories),
            "train_examples": len(examples), "hidden": hidden, "layers": layers,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "train_seconds": round(time.perf_counter() - start, 1)}


def evaluate(folder: Path, n_stories: int = 100, start: int = 0) -> dict:
    """Held-out exact match through load_local_llm + MemoryModule (per-frame, greedy, default settings)."""
    from ..memory import MemoryModule, MemorySettings, load_local_llm

    stories = split_stories("heldout", n_stories, start=start)
    memory = MemoryModule(load_local_llm(folder), MemorySettings(mode="per-frame"))
    t0 = time.perf_counter()
    frame_hits, story_hits, examples = [], [], []
    for story in stories:
        got = memory.prompts_for_story(story.prompts)
        hits = [g == t for g, t in zip(got, story.full_prompts)]
        frame_hits += hits
        story_hits.append(all(hits))
        examples += [(s, g, t) for s, g, t, h in zip(story.prompts, got, story.full_prompts, hits) if not h]
    return {"heldout_stories": len(stories), "heldout_frames": len(frame_hits),
            "frame_exact_match": float(np.mean(frame_hits)), "story_exact_match": float(np.mean(story_hits)),
            "eval_seconds": round(time.perf_counter() - t0, 1), "errors": examples[:5]}


_CARD = """# Toy memory LLM (ACDC toy world)

A tiny Llama chat model that does one job: the memory module's per-frame rewrite in the toy world
(`acdc_core/toy/world.py`). Given the earlier self-contained prompts and the new story sentence
("She hops to the left."), it writes the frame's self-contained prompt in `world.full_prompt` words
("Mia, a red rabbit, jumps on the left of a meadow by day."). Load it like any local chat LLM:

    from acdc_core.memory import MemoryModule, MemorySettings, load_local_llm
    memory = MemoryModule(load_local_llm("acdc_core/toy/models/memory"), MemorySettings(mode="per-frame"))

- Model: LlamaForCausalLM, {layers} layers, hidden {hidden}, {parameters:,} parameters, float32 safetensors.
- Tokenizer: byte-level BPE ({vocab_size} tokens) trained on the world's sentences; ChatML template.
- System prompt: none. The chat template drops system messages and keeps a user message's text from its last
  "Earlier prompts:" on, so any `MemorySettings.system_prompt` (the default included) gives the same tokens.
- Mode: per-frame only. A whole-story chat gets no usable numbered answer; `MemoryModule` then falls back
  to per-frame queries (with a warning).
- Data: {train_stories} train-split stories (`world.split_stories("train", {train_stories})`, seeds 0, 1, ...;
  the split is a sha256 of the story's prompts, so no held-out story is ever trained on), one chat per frame:
  {train_examples} examples, the earlier prompts being the true self-contained ones.
- Training: `{command}`
  AdamW lr {lr}, betas (0.9, 0.98), weight decay 0.01, warmup then cosine to 10%, batch {batch_size},
  {steps} steps, loss on the answer tokens only, seed {seed}. Final loss {final_loss:.4f}.
- Wall time: {train_seconds} s for data, tokenizer and training on {threads} CPU thread(s) ({machine}),
  torch {torch}, transformers {transformers}.
- Held-out accuracy: exact match of greedy answers through `load_local_llm` + `MemoryModule` (per-frame,
  default settings, each frame conditioned on the model's own earlier answers) on the first
  {heldout_stories} held-out stories (`world.split_stories("heldout", {heldout_stories})`):
  **{frame_pct:.1f}% of {heldout_frames} frames**, {story_pct:.1f}% of whole stories.

The rule-based baseline (`acdc_core/toy/rewriter.py`, `RuleBasedChat`) is exact on every world story.
Numbers are also in `training_summary.json`. Retraining with the same command and seed on the same
torch version and thread count gives the same data and initialisation; float results may differ
slightly across machines.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    import transformers

    parser = argparse.ArgumentParser(prog="python -m acdc_core.toy.train_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--stories", type=int, default=4000, help="train-split stories to build data from")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--eval-stories", type=int, default=100, help="held-out stories to measure (0: skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for this tiny model on shared cores)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    summary = train(args.out, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    n_stories=args.stories, hidden=args.hidden, layers=args.layers,
                    log_every=max(1, min(100, args.steps // 10)))
    if args.eval_stories > 0:
        summary.update(evaluate(args.out, args.eval_stories))
        print(f"held-out exact match: {summary['frame_exact_match']:.1%} of {summary['heldout_frames']} frames, "
              f"{summary['story_exact_match']:.1%} of stories ({summary['eval_seconds']} s)")
    command = (f"python -m acdc_core.toy.train_memory --out {args.out} --seed {args.seed} --steps {args.steps}")
    summary.update(threads=args.threads, torch=torch.__version__, transformers=transformers.__version__,
                   machine=f"{platform.machine()}, {os.cpu_count()} cores visible", command=command)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.eval_stories > 0:
        card = _CARD.format(**summary, frame_pct=100 * summary["frame_exact_match"],
                            story_pct=100 * summary["story_exact_match"])
        (args.out / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"saved to {args.out} ({summary['train_seconds']} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
