"""A tiny AnimateDiff (random weights, seeded) for tests, benchmarks and the CLI's built-in demo. No hub, no download.

``build_tiny_animatediff`` writes the tiny SD1.5-shaped diffusers folder of ``tiny.sd.build_tiny_sd`` with a
``motion_adapter/`` folder inside it: a diffusers ``MotionAdapter`` whose blocks match that UNet (channels (32, 64),
two motion layers per block, a motion mid block, a 32-frame position table as AnimateDiff v2 has; 4 heads and 2
norm groups as diffusers' own fast tests use). Load it with
``load_animatediff(folder, folder / "motion_adapter", motion_num_attention_heads=4, motion_norm_num_groups=2)``
for its single-file form (a folder carries its config, so needs neither option).

``write_motion_module_file`` writes a motion adapter folder as ONE ``.safetensors`` file in the original AnimateDiff
layout (guoyww's ``mm_sd_v15_v2`` and the files ComfyUI keeps in ``models/animatediff_models/``): the inverse of
diffusers' ``convert_animatediff_checkpoint_to_diffusers``, with the sinusoidal position table (``pos_encoder.pe``)
stored in both temporal attention blocks as the original module stores it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .sd import build_tiny_sd

TINY_MOTION_ADAPTER = {
    "block_out_channels": [32, 64], "motion_layers_per_block": 2, "motion_num_attention_heads": 4,
    "motion_norm_num_groups": 2, "motion_max_seq_length": 32, "use_motion_mid_block": True,
}

# diffusers' transformer-block names -> the original motion module's (the inverse of diffusers' conversion).
_TO_ORIGINAL = ((".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm"),
                (".attn1", ".attention_blocks.0"), (".attn2", ".attention_blocks.1"))


def original_names(name: str) -> list[str]:
    """The original-layout name(s) of a diffusers ``MotionAdapter`` state-dict entry.

    ``down_blocks.0.motion_modules.1.transformer_blocks.0.attn1.to_q.weight`` ->
    ``down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``.
    A transformer block's one position table (``pos_embed.pe``) is two in the original, one per attention block.
    """
    name = re.sub(r"(motion_modules\.\d+\.)", r"\1temporal_transformer.", name)
    if name.endswith(".pos_embed.pe"):
        block = name[:-len("pos_embed.pe")]
        return [f"{block}attention_blocks.{i}.pos_encoder.pe" for i in (0, 1)]
    for ours, theirs in _TO_ORIGINAL:
        name = name.replace(ours, theirs)
    return [name]


def write_motion_module_file(adapter_folder: str | Path, out_path: str | Path) -> Path:
    """Write a diffusers ``MotionAdapter`` folder as one original-layout ``.safetensors`` motion module file."""
    state = load_file(Path(adapter_folder) / "diffusion_pytorch_model.safetensors")
    original = {new: tensor.clone() for name, tensor in state.items() for new in original_names(name)}  # own copies
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(original, str(out_path))
    return out_path


def build_tiny_animatediff(folder: str | Path, seed: int = 0, *, block_out_channels: tuple[int, ...] = (32, 64),
                           sample_size: int = 8) -> Path:
    """Write a tiny SD1.5-shaped diffusers folder with a matching ``motion_adapter/`` inside; return the folder.

    ``block_out_channels`` and ``sample_size`` (the latent size: native frames are 8x that) are the UNet's, as in
    ``build_tiny_sd``; the adapter gets the same channels. The same ``seed`` always writes the same weights; the
    global torch RNG is left untouched. With the defaults a window of 8 frames at 64x64 takes about 0.1 s per
    guided step on one CPU thread.
    """
    from diffusers import MotionAdapter

    folder = build_tiny_sd(folder, seed, block_out_channels=block_out_channels, sample_size=sample_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        # Random output projections (diffusers does not zero them): the motion layers change the result.
        adapter = MotionAdapter(**{**TINY_MOTION_ADAPTER, "block_out_channels": list(block_out_channels)})
    adapter.save_pretrained(folder / "motion_adapter", safe_serialization=True)
    note = json.loads((folder / "model_index.json").read_text())
    note["_note"] = "tiny random SD1.5-shaped model; motion_adapter/ holds a tiny AnimateDiff MotionAdapter"
    (folder / "model_index.json").write_text(json.dumps(note, indent=2))
    return folder
