"""A tiny, seeded Emu3 (``Emu3ForConditionalGeneration``) written to a local folder. No hub, no download.

The folder looks like ``BAAI/Emu3-Gen-hf``: ``config.json`` (with the ``vocabulary_map`` transformers reads the
visual-token ids from), ``model.safetensors``, a tokenizer with Emu3's special tokens (``<|extra_203|>`` BOS,
``<|extra_204|>`` EOS, ``<|image start|>``, ``<|image token|>``, ``<|extra_200|>`` end of line, ``<|extra_201|>`` end
of frame, ``<|image end|>`` and one ``<|visual token NNNNNN|>`` per code) and an ``Emu3Processor``, plus an
``acdc_emu3.json`` that sets the frame side (32 px: a 4x4 code grid).

Emu3's VQ ties sizes together: GroupNorms of 32 groups (``base_channels`` a multiple of 32) and an attention block
at stage ``attn_resolutions`` whose width (``hidden_size``) is that stage's channels.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .janus import byte_level_bpe

PAD, BOS, EOS = "<|endoftext|>", "<|extra_203|>", "<|extra_204|>"
IMAGE, BOI, EOI, WRAPPER, EOL, EOF = ("<image>", "<|image start|>", "<|image end|>", "<|image token|>",
                                      "<|extra_200|>", "<|extra_201|>")


def visual_token(code: int) -> str:
    return f"<|visual token {code:06d}|>"


def build_tiny_emu3(folder: str | Path, seed: int = 0, *, image_size: int = 32, codebook_size: int = 64,
                    max_position_embeddings: int = 4096) -> Path:
    """Write a tiny seeded Emu3-Gen checkpoint (safetensors) with tokenizer and processor to ``folder``."""
    from transformers import (Emu3Config, Emu3ForConditionalGeneration, Emu3ImageProcessor, Emu3Processor,
                              Emu3TextConfig, Emu3VQVAEConfig, PreTrainedTokenizerFast)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = [PAD, BOS, EOS, IMAGE, BOI, EOI, WRAPPER, EOL, EOF] + [visual_token(c) for c in range(codebook_size)]
    tok = byte_level_bpe(len(specials) + 320, specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI,
                              "image_wrapper_token": WRAPPER, "eof_token": EOF},
        padding_side="left")
    vocab = tokenizer.get_vocab()
    vq = Emu3VQVAEConfig(codebook_size=codebook_size, embed_dim=4, latent_channels=4, base_channels=32,
                         channel_multiplier=[1, 1, 2, 2], num_res_blocks=1, attn_resolutions=[3], hidden_size=64,
                         num_attention_heads=1, temporal_downsample_factor=4)
    text = Emu3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=max_position_embeddings, pad_token_id=vocab[PAD],
                          bos_token_id=vocab[BOS], eos_token_id=vocab[EOS])
    config = Emu3Config(vq_config=vq, text_config=text, vocabulary_map=vocab)
    torch.manual_seed(seed)
    model = Emu3ForConditionalGeneration(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = Emu3ImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=image_size ** 2,
                                         max_pixels=image_size ** 2, spatial_factor=8)
    Emu3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    (folder / "acdc_emu3.json").write_text(json.dumps({"image_size": image_size}))
    return folder
