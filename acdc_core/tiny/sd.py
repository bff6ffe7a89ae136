"""Tiny Stable-Diffusion-shaped models (random weights, seeded) for tests and benchmarks. No hub, no download.

``build_tiny_sd`` writes a diffusers folder shaped like SD1.5 (same component classes, same scheduler config,
same key structure, just narrow); with ``pixel_space=True`` it has no VAE and its UNet denoises RGB pixels
(``pixel_space_model_index`` and ``pixel_space_scheduler_config`` are shared with the toy DM's training script). ``build_tiny_sdxl`` does the same for SDXL's two text encoders and
text-time conditioning. ``write_single_file`` turns a tiny folder into one ``.safetensors`` file in the
original / ComfyUI key layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``; SDXL: ``conditioner.embedders.{0,1}.*``), and ``write_config_dir`` writes the matching weight-free config folder,
the tiny stand-in for the folders shipped in ``acdc_core/correct/configs``.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# A few words a test story uses; each becomes one token of the tiny BPE vocabulary.
_WORDS = (
    "a an the of in on over under with and photo picture painting portrait cat dog rabbit fox bird girl boy "
    "man woman robot dragon golden retriever meadow forest river log tree house sky moon sun night day "
    "sunlit red blue green white black small big old young happy jumps runs sits flies looks at his her "
    "its he she they is are was story frame high quality detailed blurry ugly bad"
).split()

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-level alphabet: every byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the best-ranked adjacent pair (every occurrence) until none is ranked."""
    while len(symbols) > 1:
        pairs = [pair for pair in zip(symbols, symbols[1:]) if pair in ranks]
        if not pairs:
            break
        best = min(pairs, key=ranks.__getitem__)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_tiny_clip_tokenizer(folder: str | Path, *, pad_token: str = _EOS, words: Sequence[str] = _WORDS,
                              model_max_length: int = 77) -> Path:
    """A CLIP tokenizer folder with a small vocabulary: all bytes, bytes + '</w>', and merges that make each of
    the (lower-case) ``words`` one token; any other text still tokenizes, byte by byte."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        # Tokenize the word with the merges so far, as CLIP's BPE will; while it is still in pieces, add a merge
        # of its first two (a new merge ranks last, so it never changes how earlier words tokenize).
        symbols = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            if symbols[0] + symbols[1] not in vocab:
                vocab.append(symbols[0] + symbols[1])
            symbols = _apply_merges(symbols, ranks)
    merges = [f"{a} {b}" for a, b in ranks]
    vocab += [_BOS, _EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, "bos_token": _BOS, "eos_token": _EOS,
        "unk_token": _EOS, "pad_token": pad_token, "do_lower_case": True, "add_prefix_space": False,
    }, indent=2))
    return folder


def _vocab_size(tokenizer_folder: Path) -> int:
    return len(json.loads((tokenizer_folder / "vocab.json").read_text(encoding="utf-8")))


def _sd15_scheduler_config() -> dict:
    """SD1.5's scheduler config (a PNDM config; the corrector builds its DDIM sampler from it)."""
    return {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None}


def pixel_space_scheduler_config() -> dict:
    """The noise schedule of the pixel-space models, as a DDIM config (the sampler the corrector builds).

    SD's betas (scaled linear 0.00085 .. 0.012 over 1000 steps) rescaled to zero terminal SNR, v-prediction and
    trailing spacing, the fix of Lin et al. 2024 ("Common diffusion noise schedules and sample steps are
    flawed"): with SD's own betas the last training step keeps 7% of the image, and in a 32 px frame of flat
    colours that is enough to read the sky's colour, so a model sampled from pure noise takes the noise's
    low frequencies for the scene. The rescaled schedule keeps sqrt(alpha_bar) = 0.49 at t' = 0.5 (SD1.5: 0.53).
    The predicted clean image is clipped to [-1, 1], the range of pixels (only right in pixel space), and the
    last step returns it (``set_alpha_to_one``) rather than SD's slightly noisy one."""
    return {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
            "clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True, "steps_offset": 0,
            "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "trained_betas": None}


def pixel_space_model_index() -> dict:
    """model_index.json of a pixel-space folder: no vae entry, which is what tells the loader."""
    return {"_class_name": "ACDCPixelDiffusion", "_note": "pixel-space text-to-image model; no VAE. Loaded by "
            "acdc_core.correct.load_corrector (not a diffusers pipeline class).",
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"]}


def _tiny_vae():
    from diffusers import AutoencoderKL

    # Four levels like SD's VAE, so the image-to-latent scale factor is 8.
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                         block_out_channels=(16, 32, 32, 32), norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=64)


def _tiny_text_encoder(vocab_size: int, *, hidden: int = 32, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=hidden, hidden_act="quick_gelu",
                            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config).eval()


def _block_types(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SD1.5's pattern: cross-attention in every level but the deepest; the up path mirrors the down path."""
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return down, up


def build_tiny_sd(folder: str | Path, seed: int = 0, inpaint: bool = False, *,
                  block_out_channels: tuple[int, ...] = (32, 64), sample_size: int = 8,
                  pixel_space: bool = False) -> Path:
    """Write a tiny SD1.5-shaped diffusers folder (safetensors) and return its path.

    ``inpaint=True`` gives the UNet 9 input channels (latents, mask, masked-image latents) like
    SD1.5-inpainting. ``sample_size`` is the latent size, so the native resolution is ``8 * sample_size``.
    ``pixel_space=True`` writes no VAE: the UNet denoises RGB pixels (3 channels in and out), the native
    resolution is ``sample_size`` and the scheduler is ``pixel_space_scheduler_config()``.
    The same ``seed`` always writes the same weights; the global torch RNG is left untouched.
    """
    from diffusers import DDIMScheduler, PNDMScheduler, UNet2DConditionModel

    if pixel_space and inpaint:
        raise ValueError("a pixel-space tiny model has no 9-channel inpainting variant")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = write_tiny_clip_tokenizer(folder / "tokenizer")
    down, up = _block_types(len(block_out_channels))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        channels = 3 if pixel_space else 4
        unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=9 if inpaint else channels, out_channels=channels,
            layers_per_block=2, block_out_channels=block_out_channels, down_block_types=down, up_block_types=up,
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
        vae = _tiny_vae()  # drawn (and dropped) in pixel space too, so the text encoder gets the same weights
        text_encoder = _tiny_text_encoder(_vocab_size(tokenizer_dir))
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    if pixel_space:
        DDIMScheduler.from_config(pixel_space_scheduler_config()).save_pretrained(folder / "scheduler")
        (folder / "model_index.json").write_text(json.dumps(pixel_space_model_index(), indent=2))
        return folder
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    PNDMScheduler.from_config(_sd15_scheduler_config()).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionInpaintPipeline" if inpaint else "StableDiffusionPipeline",
        "requires_safety_checker": False, "safety_checker": [None, None], "feature_extractor": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    return folder


def build_tiny_sdxl(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny SDXL-shaped diffusers folder: two CLIP text encoders (the second with a projection,
    whose pooled output feeds the UNet's text-time embedding), pad token "!" for the second tokenizer."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = write_tiny_clip_tokenizer(folder / "tokenizer")
    write_tiny_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    vocab_size = _vocab_size(tokenizer_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), use_linear_projection=True,
            cross_attention_dim=32 + 48,                  # encoder 1 and encoder 2 features, concatenated
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 48,  # six time ids + pooled text embedding
            norm_num_groups=32)
        vae = _tiny_vae()
        text_encoder = _tiny_text_encoder(vocab_size)
        # Wider than encoder 1, as in SDXL (768 vs 1280): diffusers' single-file loader tells them apart by width.
        text_encoder_2 = _tiny_text_encoder(vocab_size, hidden=48, with_projection=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    text_encoder_2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    EulerDiscreteScheduler.from_config({**_sd15_scheduler_config(), "timestep_spacing": "leading"}) \
        .save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    return folder


# ---------------------------------------------------------------------------------------------------------
# diffusers -> original (LDM / ComfyUI / A1111) key layout.

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_head(rest: str, table: dict[str, str]) -> str:
    """Rename the leading module name of ``rest`` (e.g. 'norm1.weight') with ``table``, if listed."""
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_key_to_original(key: str, config: dict) -> str:
    """One diffusers UNet2DConditionModel key -> the LDM ``openaimodel.UNetModel`` key (without prefix).

    LDM numbers the down path as a flat list ``input_blocks``: block 0 is ``conv_in``, then each level has
    ``layers_per_block`` [resnet, attention] pairs followed by one downsampler block; ``output_blocks`` has
    ``layers_per_block + 1`` pairs per level with the upsampler appended to the level's last block.
    """
    per_level = config["layers_per_block"] + 1
    flat = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    head, _, param = key.rpartition(".")
    if head in flat:
        return f"{flat[head]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + level * per_level + j}.0.{_rename_head(rest, _UNET_RESNET)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        level, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + level * per_level + j}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_level}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_head(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{level * per_level + j}.0.{_rename_head(rest, _UNET_RESNET)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        level, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{level * per_level + j}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        # The upsampler follows the resnet (index 1), or the resnet and the attention (index 2).
        slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
        return f"output_blocks.{level * per_level + per_level - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no original-layout name for UNet key {key!r}")


def _vae_key_to_original(key: str, config: dict) -> str:
    """One diffusers AutoencoderKL key -> the LDM ``AutoencoderKL`` key (without prefix).

    LDM numbers the decoder's levels from the deepest up, so diffusers' ``up_blocks.i`` is ``up.{n-1-i}``.
    """
    levels = len(config["up_block_types"])
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_head(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_rename_head(m[2], _VAE_ATTENTION)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_rename_head(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_rename_head(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    return key.replace("conv_norm_out", "norm_out")  # conv_in, conv_out, quant_conv, post_quant_conv as is


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
              "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def _open_clip_state(text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights -> the OpenCLIP text tower layout SDXL checkpoints use."""
    state = {"token_embedding.weight": text["text_model.embeddings.token_embedding.weight"],
             "positional_embedding": text["text_model.embeddings.position_embedding.weight"],
             "ln_final.weight": text["text_model.final_layer_norm.weight"],
             "ln_final.bias": text["text_model.final_layer_norm.bias"],
             # OpenCLIP computes x @ P, a linear layer computes x @ W.T: P = W.T, [hidden, projection].
             "text_projection": text["text_projection.weight"].T}
    layers = {int(m[1]) for key in text if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", key))}
    for i in sorted(layers):
        ours, theirs = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            # OpenCLIP fuses the q, k, v projections into one: [3 * hidden, hidden], q first.
            state[f"{theirs}attn.in_proj_{param}"] = torch.cat(
                [text[f"{ours}self_attn.{name}_proj.{param}"] for name in ("q", "k", "v")])
            for new, old in _OPEN_CLIP.items():
                state[f"{theirs}{old}.{param}"] = text[f"{ours}{new}.{param}"]
    return state


def write_single_file(diffusers_folder: str | Path, out_path: str | Path) -> Path:
    """Write a tiny SD1.5- or SDXL-shaped diffusers folder as one original-layout ``.safetensors`` checkpoint."""
    folder, out_path = Path(diffusers_folder), Path(out_path)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for key, value in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        state["model.diffusion_model." + _unet_key_to_original(key, unet_config)] = value
    for key, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        original = _vae_key_to_original(key, vae_config)
        if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", original):
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convs: [C, C] -> [C, C, 1, 1]
        state["first_stage_model." + original] = value
    sdxl = (folder / "text_encoder_2").is_dir()
    # SD1.x keeps its CLIP-L under cond_stage_model, SDXL under conditioner.embedders.0 (and OpenCLIP under .1).
    clip_prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        # transformers >= 5.6 saves CLIPTextModel without its old "text_model." wrapper; LDM keeps it.
        key = key if key.startswith("text_model.") else "text_model." + key
        state[clip_prefix + key] = value
    if sdxl:
        text_2 = load_file(folder / "text_encoder_2" / "model.safetensors")
        for key, value in _open_clip_state(text_2).items():
            state["conditioner.embedders.1.model." + key] = value
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_path))
    return out_path


def write_config_dir(diffusers_folder: str | Path, out_dir: str | Path) -> Path:
    """Copy a diffusers folder without its weights: what ``from_single_file(config=...)`` needs offline."""
    folder, out_dir = Path(diffusers_folder), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "model_index.json", out_dir / "model_index.json")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        (out_dir / sub.name).mkdir(exist_ok=True)
        for file in sub.iterdir():
            if file.suffix in (".json", ".txt"):
                shutil.copy(file, out_dir / sub.name / file.name)
    return out_dir
