"""A tiny, seeded Show-o folder in the published layout (random weights), written in seconds: ``config.json``
(``_class_name: Showo``) and ``pytorch_model.safetensors`` (PhiForCausalLM's tensors under ``showo.``), with
``magvitv2/`` (a MAGVIT-v2 in showlab/magvitv2's layout) and ``phi-1_5/`` (a word-level tokenizer and a tiny
Phi config) inside, so ``load_arm(folder)`` goes through the real loader. No hub.

32 px frames: the MAGVIT-v2 downsamples 4x (8 x 8 = 64 tokens) with 6 bits (64 codes); the text slot is 16.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..arm.magvit import MagvitConfig, MagvitV2
from ..arm.showo import PREFIX, TEXT_DIR, VQ_DIR, ShowoVocab, build_phi
from ..arm.unified import build_word_tokenizer, special_ids

_TEXT = [
    "Mia is a red rabbit. She stands on the left of a meadow by day.",
    "Leo, a blue cat, jumps in the middle of a beach at night.",
    "She hops to the right. He lies down. Night falls. The sun rises. It gets dark. She barks.",
]
MAGVIT = MagvitConfig(channels=32, encoder_multipliers=(1, 1, 2), encoder_blocks=(1, 1, 1), decoder_multipliers=(1, 1, 2),
                      decoder_blocks=(1, 1, 1), bits=6)


def build_tiny_showo(folder: str | Path, seed: int = 0, *, max_text_len: int = 16,
                     max_position_embeddings: int = 2048) -> Path:
    """Write a tiny seeded Show-o folder to ``folder`` and return it."""
    from safetensors.torch import save_file
    from transformers import PhiConfig

    folder = Path(folder)
    (folder / VQ_DIR).mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_tokenizer(_TEXT)
    ids = special_ids(tokenizer)
    tokenizer.save_pretrained(folder / TEXT_DIR)
    vocab = ShowoVocab(llm_vocab_size=len(tokenizer), codebook_size=MAGVIT.codebook_size, bos=ids["bos"], eos=ids["eos"])
    phi = PhiConfig(vocab_size=vocab.llm_vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=max_position_embeddings, resid_pdrop=0.0,
                    embd_pdrop=0.0, attention_dropout=0.0, bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    (folder / TEXT_DIR / "config.json").write_text(phi.to_json_string())
    torch.manual_seed(seed)
    lm = build_phi(PhiConfig.from_dict({**phi.to_dict(), "vocab_size": vocab.size}))
    save_file({PREFIX + name: t.contiguous() for name, t in lm.state_dict().items()}, folder / "pytorch_model.safetensors")
    vq = MagvitV2(MAGVIT)
    save_file({name: t.contiguous() for name, t in vq.state_dict().items()}, folder / VQ_DIR / "pytorch_model.safetensors")
    (folder / VQ_DIR / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2"}))
    grid = 32 // MAGVIT.downsampling
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "Showo", "vocab_size": vocab.size, "llm_vocab_size": vocab.llm_vocab_size,
        "codebook_size": vocab.codebook_size, "num_vq_tokens": grid * grid, "llm_model_path": "microsoft/phi-1_5",
        "w_clip_vit": False, "max_text_len": max_text_len,
        "acdc_note": f"tiny random Show-o for tests (seed {seed}); max_text_len is not in published configs (128)"},
        indent=1))
    return folder
