"""A tiny, seeded Janus (``JanusForConditionalGeneration``) written to a local folder. No hub, no download.

The folder looks like a real transformers-format Janus checkpoint: ``config.json``, ``model.safetensors``,
``generation_config.json``, a tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, a byte-level BPE
trained here in milliseconds, with Janus' special tokens) and a processor (``processor_config.json``,
``preprocessor_config.json``, chat template) so both ``load_arm(folder)`` and ``JanusProcessor`` load it.

Janus ties three sizes together, and so must any tiny config:
- the VQ model downsamples by ``2 ** (len(channel_multiplier) - 1)``; the vision tower's ``patch_size`` must
  equal it so ``num_image_tokens == (image_size // patch_size) ** 2`` and ``vq_config.num_patches`` (set
  by ``JanusConfig`` from the vision config) is the VQ latent grid side;
- VQ ``projection_dim == image_token_embed_dim == text hidden size`` (the generation aligner and head);
- the VQ's GroupNorm has 32 groups, so ``base_channels`` is a multiple of 32.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE_PLACEHOLDER = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE_PLACEHOLDER, BOI, EOI, "<|User|>", "<|Assistant|>"]

# The DeepSeek/Janus conversation format ("<|User|>: ...\n\n<|Assistant|>:"), enough for one-turn
# image generation through JanusProcessor. The BOS comes from the tokenizer's post-processor, as in Janus.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: "
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'text' %}{{ content['text'] }}"
    "{% elif content['type'] == 'image' %}<image_placeholder>{% endif %}"
    "{% endfor %}{{ '\\n\\n' }}"
    "{% else %}<|Assistant|>: "
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}" + EOS +
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)

_TRAINING_TEXT = [
    "A golden retriever named Benny runs through a sunlit meadow.",
    "He jumps over a log and lands in the grass.",
    "A small rabbit with long ears sits under a tree at night, two moons in the sky.",
    "The cat sleeps on a red sofa while rain falls outside the window.",
    "A girl in a yellow raincoat walks her dog along the river.",
    "The robot waves, then picks up a blue ball and throws it.",
]

DEFAULT_SIZES: dict[str, Any] = {
    # text model (Llama)
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "text_vocab_size": 512,     # >= tokenizer size; the BPE is trained up to (this - a margin)
    # image tokens (VQ)
    "codebook_size": 64,
    "vq_embed_dim": 8,
    "vq_base_channels": 32,
    "vq_channel_multiplier": (1, 1, 2, 2),   # 3 downsamplings: 8x -> 32 px gives 4x4 = 16 tokens
    "vq_latent_channels": 32,
    # vision tower (understanding path, unused by generation but part of the checkpoint)
    "vision_hidden_size": 32,
    "vision_layers": 1,
}


def byte_level_bpe(vocab_size: int, special_tokens: list[str], texts: list[str] = _TRAINING_TEXT):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` in milliseconds, ``special_tokens`` first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _train_tokenizer(vocab_size: int):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(vocab_size, SPECIAL_TOKENS)
    bos_id = tok.token_to_id(BOS)
    # Like Janus' tokenizer: a BOS in front of every encoded text (when add_special_tokens=True).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE_PLACEHOLDER, "boi_token": BOI, "eoi_token": EOI},
        padding_side="left", chat_template=CHAT_TEMPLATE)


def tiny_janus_config(image_size: int = 32, **size_overrides):
    """The JanusConfig of a tiny model (and the sizes used), without building weights."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    unknown = set(size_overrides) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(f"unknown size override(s) {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}")
    s = {**DEFAULT_SIZES, **size_overrides}
    factor = 2 ** (len(s["vq_channel_multiplier"]) - 1)
    if image_size % factor:
        raise ValueError(f"image_size {image_size} is not a multiple of the VQ downsampling factor {factor}.")
    grid = image_size // factor
    hidden = s["hidden_size"]
    text = LlamaConfig(
        vocab_size=s["text_vocab_size"], hidden_size=hidden, intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"], num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"], max_position_embeddings=s["max_position_embeddings"],
        tie_word_embeddings=False)
    vision = JanusVisionConfig(
        hidden_size=s["vision_hidden_size"], num_hidden_layers=s["vision_layers"], num_attention_heads=4,
        image_size=image_size, patch_size=factor, projection_dim=hidden, depth=2,
        num_image_tokens=grid * grid)
    vq = JanusVQVAEConfig(
        embed_dim=s["vq_embed_dim"], num_embeddings=s["codebook_size"], latent_channels=s["vq_latent_channels"],
        base_channels=s["vq_base_channels"], channel_multiplier=list(s["vq_channel_multiplier"]),
        num_res_blocks=1, projection_dim=hidden, image_token_embed_dim=hidden, num_hidden_layers=2)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq), s


def build_tiny_janus(folder: str | Path, seed: int = 0, image_size: int = 32, **size_overrides) -> Path:
    """Write a tiny seeded Janus checkpoint (safetensors) with tokenizer and processor to ``folder``.

    ``size_overrides`` are keys of ``DEFAULT_SIZES`` (e.g. ``hidden_size=512, num_hidden_layers=8``) so a
    benchmark can build a bigger one. Returns the folder.
    """
    from transformers import GenerationConfig, JanusForConditionalGeneration, JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, sizes = tiny_janus_config(image_size, **size_overrides)
    tokenizer = _train_tokenizer(sizes["text_vocab_size"] - 16)
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but text_vocab_size is "
                         f"{config.text_config.vocab_size}.")
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("bos", BOS), ("eos", EOS), ("pad", PAD), ("image", IMAGE_PLACEHOLDER), ("boi", BOI))}
    config.image_token_id = ids["image"]
    config.text_config.bos_token_id = ids["bos"]
    config.text_config.eos_token_id = ids["eos"]
    config.text_config.pad_token_id = ids["pad"]

    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    # A fresh generation config: one derived from the model config loses generation_kwargs on save/load.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
        generation_kwargs={"boi_token_id": ids["boi"]}, guidance_scale=5.0, do_sample=True,
        num_image_tokens=config.vision_config.num_image_tokens)
    model.save_pretrained(folder, safe_serialization=True)

    image_processor = JanusImageProcessorPil(size={"height": image_size, "width": image_size},
                                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = JanusProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               chat_template=CHAT_TEMPLATE, num_image_tokens=config.vision_config.num_image_tokens)
    processor.save_pretrained(folder)
    (folder / "acdc_tiny.json").write_text(json.dumps(
        {"seed": seed, "image_size": image_size, "sizes": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in sizes.items()}}, indent=2))
    return folder
