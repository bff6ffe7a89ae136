"""A tiny, seeded chat LLM folder for tests and demos: random weights, so it writes gibberish.

The folder looks like a real instruct model to ``load_local_llm``: ``config.json``, ``model.safetensors``,
``generation_config.json``, a byte-level BPE ``tokenizer.json`` (trained in milliseconds on a built-in
corpus) and a ChatML-style chat template. ``system_role=False`` writes a gemma-like template that
rejects the system role, to exercise the merge path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Union

import torch

__all__ = ["build_tiny_llm", "CHATML_TEMPLATE", "NO_SYSTEM_TEMPLATE"]

_CORPUS = (
    "Benny, a golden retriever with a red collar, runs through a sunlit meadow full of daisies.",
    "He jumps over a fallen log and lands in the tall grass.",
    "Pip, a little grey rabbit, sits under a large mushroom in a misty forest at dawn.",
    "She nibbles a carrot while birds sing in the trees.",
    "A brave knight in silver armour rides a white horse across a snowy mountain pass.",
    "The dragon sleeps in a cave filled with gold coins and glowing crystals.",
    "Earlier prompts: none (this is the first frame). New sentence: Answer:",
    "Rewrite the new sentence into one self-contained image prompt, under 60 words.",
    "1. 2. 3. 4. 5. 6. Story sentences: the cat, the dog, the bird, the fox, at night, in the rain.",
)

_SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Like gemma's template: only user/assistant turns, a system message is an error.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>model\n{% endif %}"
)


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer)
    return tokenizer


def build_tiny_llm(folder: Union[str, os.PathLike], seed: int = 0, *, system_role: bool = True,
                   model_type: Literal["llama", "qwen2"] = "llama", vocab_size: int = 512) -> Path:
    """Write a tiny random chat LLM (2 layers, hidden 64, safetensors) into ``folder``; returns the path.

    ``initializer_range`` is large on purpose so greedy decoding from random weights varies instead of
    repeating one token. The result is fully determined by ``seed``.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config
    from transformers import Qwen2ForCausalLM

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        eos_token="<|im_end|>", pad_token="<|pad|>",
        chat_template=CHATML_TEMPLATE if system_role else NO_SYSTEM_TEMPLATE,
    )
    tokenizer.save_pretrained(path)

    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True, initializer_range=0.3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_type == "llama":
            model = LlamaForCausalLM(LlamaConfig(bos_token_id=None, **common))
        elif model_type == "qwen2":
            model = Qwen2ForCausalLM(Qwen2Config(**common))
        else:
            raise ValueError(f"model_type must be 'llama' or 'qwen2', got {model_type!r}.")
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    return path
