"""A tiny, seeded unified-vocabulary ARM (Llama over text + VQ codes, plus a diffusers VQModel) written to a
local folder in seconds: random weights, the real folder layout (``acdc_arm.json``, ``lm/``, ``vq/``), so
``load_arm(folder)`` goes through the same code as the trained toy ARM. No hub, no download.

Sizes tie together as in the trained model: the VQ downsamples by ``2 ** (len(vq_channels) - 1)`` (4x
here: 32 px -> 8x8 = 64 codes); GroupNorm groups must divide every VQ channel count; the LM vocabulary is
the tokenizer's words followed by the codebook.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..arm.base import SamplingSettings
from ..arm.unified import Manifest, build_word_tokenizer, save_unified, special_ids

_TEXT = [
    "Mia is a red rabbit. She stands on the left of a meadow by day.",
    "Leo, a blue cat, jumps in the middle of a beach at night.",
    "She hops to the right. He lies down. Night falls. The sun rises. It gets dark.",
    "A golden retriever named Benny runs through a sunlit meadow. He jumps over a log.",
]

# LWM's video layout (``unified.py``): its prompts, ``<vision>`` in the text, an end-of-frame vision id past the codebook.
LWM_LAYOUT_TEXT = ["You are a helpful assistant. USER: Generate an image of a cat ASSISTANT: <vision> </vision>",
                   "USER: Generate a video of a dog ASSISTANT: <vision>"]
LWM_TEXT_FORMAT = "You are a helpful assistant. USER: Generate an image of {prompt} ASSISTANT: <vision>"
LWM_VIDEO_FORMAT = "You are a helpful assistant. USER: Generate a video of {prompt} ASSISTANT: <vision>"

DEFAULT_SIZES: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 2048,
    "codebook_size": 32, "vq_embed_dim": 4, "latent_channels": 4, "vq_channels": (8, 16, 16), "norm_num_groups": 4,
}


def lm_config(vocab_size: int, ids: dict[str, int], *, hidden_size: int, intermediate_size: int,
              num_hidden_layers: int, num_attention_heads: int, num_key_value_heads: int,
              max_position_embeddings: int):
    """A LlamaConfig for a unified ARM (untied head, bos/eos/pad from ``ids``)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                       num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                       tie_word_embeddings=False)


def vq_model(*, codebook_size: int, vq_embed_dim: int, latent_channels: int, vq_channels: tuple[int, ...],
             norm_num_groups: int, image_size: int, layers_per_block: int = 1, attention: bool = False):
    """A diffusers VQModel downsampling ``2 ** (len(vq_channels) - 1)`` times."""
    from diffusers import VQModel

    n = len(vq_channels)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(vq_channels),
                   layers_per_block=layers_per_block, latent_channels=latent_channels, sample_size=image_size,
                   num_vq_embeddings=codebook_size, vq_embed_dim=vq_embed_dim, norm_num_groups=norm_num_groups,
                   mid_block_add_attention=attention)


def build_tiny_unified(folder: str | Path, seed: int = 0, image_size: int = 32, text_slot: int = 0,
                       layout: str = "default", **size_overrides) -> Path:
    """Write a tiny seeded unified ARM to ``folder`` and return it. ``text_slot``: the manifest's fixed text
    length (0: variable). ``layout``: ``"default"`` (BOI codes EOI per image) or ``"lwm"`` (LWM's video layout:
    its prompt formats, ``<vision>``, an end-of-frame id past the codebook, the ``<vision>`` unconditional row and
    its first-frame / later-frame sampling). ``size_overrides``: keys of DEFAULT_SIZES."""
    from transformers import GenerationConfig, LlamaForCausalLM

    unknown = set(size_overrides) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(f"unknown size override(s) {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}")
    s = {**DEFAULT_SIZES, **size_overrides}
    down = 2 ** (len(s["vq_channels"]) - 1)
    if image_size % down:
        raise ValueError(f"image_size {image_size} is not a multiple of the VQ downsampling factor {down}.")
    grid = image_size // down

    if layout not in ("default", "lwm"):
        raise ValueError(f"layout must be 'default' or 'lwm', got {layout!r}")
    lwm = layout == "lwm"
    tokenizer = build_word_tokenizer(_TEXT + (LWM_LAYOUT_TEXT if lwm else []))
    ids = special_ids(tokenizer)
    offset = len(tokenizer)
    vision_ids = s["codebook_size"] + (2 if lwm else 0)        # LWM: end-of-frame and end-of-video after the codes
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(lm_config(offset + vision_ids, ids, **{
        k: s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "max_position_embeddings")})).eval()
    lm.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    vq = vq_model(codebook_size=s["codebook_size"], vq_embed_dim=s["vq_embed_dim"],
                  latent_channels=s["latent_channels"], vq_channels=tuple(s["vq_channels"]),
                  norm_num_groups=s["norm_num_groups"], image_size=image_size).eval()
    # A spread-out codebook (the default init is within +-1/K): codes stay distinguishable after decoding.
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_(0.0, 1.0)
    video: dict[str, Any] = {}
    if lwm:
        video = {"text_format": LWM_TEXT_FORMAT, "video_text_format": LWM_VIDEO_FORMAT, "image_start": (),
                 "image_end": tuple(tokenizer("</vision>", add_special_tokens=False).input_ids),
                 "frame_end": s["codebook_size"], "unconditional": {"mode": "text", "text": "<vision>"},
                 "video_sampling": (SamplingSettings(guidance_scale=5.0, top_k=s["codebook_size"]),
                                    SamplingSettings(guidance_scale=1.0, top_k=s["codebook_size"] // 2))}
    manifest = Manifest(image_size=(image_size, image_size), grid=(grid, grid), codebook_size=s["codebook_size"],
                        image_token_offset=offset, special_tokens=ids, text_slot=text_slot,
                        default_sampling=SamplingSettings(guidance_scale=3.0, temperature=1.0),
                        info={"what": "tiny random unified ARM for tests", "seed": seed, "layout": layout,
                              "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}}, **video)
    return save_unified(folder, lm, tokenizer, vq, manifest)
