"""MAGVIT-v2 with lookup-free quantisation (LFQ): Show-o's image tokenizer (``showlab/magvitv2``), for inference.

The encoder maps pixels in [-1, 1] to a grid of ``bits``-channel vectors; LFQ keeps only their signs, so a code
is a corner of the ±1 hypercube and its index is the binary number of the signs (first channel = highest bit):
13 bits, 8,192 codes. The decoder maps the ±1 vectors back to pixels. Encoder and decoder are asymmetric (other
channel multipliers and block counts), which is why diffusers' ``VQModel`` does not fit.

The published folder holds ``config.json`` (no architecture fields: upstream's class hard-codes them) and
``pytorch_model.safetensors``. The architecture is read off the weights' names and shapes (``MagvitConfig
.from_shapes``), so any size in the published layout loads. Checked against upstream's own code on tiny random
weights (tests/fixtures/magvit_upstream.safetensors, tests/test_arm_magvit.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

WEIGHTS = "pytorch_model.safetensors"


@dataclass(frozen=True)
class MagvitConfig:
    """One side (encoder or decoder) is ``channels`` x ``multipliers[level]`` wide with ``blocks[level]``
    residual blocks per level, attention after each block of the levels in ``attention`` (none in the published
    model) and one attention block in the middle. Level 0 is the full resolution."""

    channels: int = 128
    encoder_multipliers: tuple[int, ...] = (1, 2, 2, 4, 4)
    encoder_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    encoder_attention: tuple[int, ...] = ()
    decoder_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    decoder_attention: tuple[int, ...] = ()
    bits: int = 13            # LFQ: 2**bits codes
    image_channels: int = 3

    @property
    def downsampling(self) -> int:
        """Pixels per token side (16 for the published model: 256 px -> 16 x 16 tokens)."""
        return 2 ** (len(self.encoder_multipliers) - 1)

    @property
    def codebook_size(self) -> int:
        return 2 ** self.bits

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Sequence[int]], where: str = "the MAGVIT-v2 weights") -> "MagvitConfig":
        """The architecture a state dict's names and shapes describe (published layout), or a clear error."""
        def shape(name: str) -> tuple[int, ...]:
            if name not in shapes:
                raise InvalidInputError(f"{where} have no tensor {name!r}: this is not a MAGVIT-v2 (showlab/magvitv2) "
                                        f"tokenizer.")
            return tuple(int(n) for n in shapes[name])

        def levels(side: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
            group = "down" if side == "encoder" else "up"
            found: dict[int, set[int]] = {}
            attention: set[int] = set()
            for name in shapes:
                match = re.match(rf"{side}\.{group}\.(\d+)\.(block|attn)\.(\d+)\.", name)
                if match:
                    level, kind, index = int(match[1]), match[2], int(match[3])
                    if kind == "block":
                        found.setdefault(level, set()).add(index)
                    else:
                        attention.add(level)
            if not found or sorted(found) != list(range(len(found))):
                raise InvalidInputError(f"{where} have no complete {side}.{group} levels: this is not a MAGVIT-v2 "
                                        f"tokenizer.")
            widths = [shape(f"{side}.{group}.{level}.block.0.conv1.weight")[0] for level in sorted(found)]
            if any(width % channels for width in widths):
                raise InvalidInputError(f"{where}: {side} widths {widths} are not multiples of {channels}.")
            blocks = tuple(len(found[level]) for level in sorted(found))
            return tuple(width // channels for width in widths), blocks, tuple(sorted(attention))

        channels = shape("encoder.conv_in.weight")[0]
        encoder = levels("encoder")
        decoder = levels("decoder")
        bits = shape("encoder.conv_out.weight")[0]
        return cls(channels=channels, encoder_multipliers=encoder[0], encoder_blocks=encoder[1],
                   encoder_attention=encoder[2], decoder_multipliers=decoder[0], decoder_blocks=decoder[1],
                   decoder_attention=decoder[2], bits=bits, image_channels=shape("encoder.conv_in.weight")[1])


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class _Residual(nn.Module):
    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(width_in), nn.Conv2d(width_in, width_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(width_out), nn.Conv2d(width_out, width_out, 3, padding=1)
        if width_in != width_out:
            self.nin_shortcut = nn.Conv2d(width_in, width_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map (1x1 projections)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = _norm(width)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(width, width, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (layer(normed).flatten(2).transpose(1, 2) for layer in (self.q, self.k, self.v))  # [B, HW, C]
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class _Middle(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = _Residual(width, width), _Attention(width), _Residual(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Resample(nn.Module):
    """A 3x3 convolution after nearest 2x upsampling, or with stride 2 after padding right and bottom by one."""

    def __init__(self, width: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(width, width, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else F.pad(x, (0, 1, 0, 1)))


class _Level(nn.Module):
    def __init__(self, width_in: int, width: int, blocks: int, attention: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(_Residual(width_in if i == 0 else width, width) for i in range(blocks))
        self.attn = nn.ModuleList(_Attention(width) for _ in range(blocks if attention else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class _Encoder(nn.Module):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = [config.channels * m for m in config.encoder_multipliers]
        self.conv_in = nn.Conv2d(config.image_channels, config.channels, 3, padding=1)
        self.down = nn.ModuleList()
        width_in = config.channels
        for level, (width, blocks) in enumerate(zip(widths, config.encoder_blocks)):
            stage = _Level(width_in, width, blocks, level in config.encoder_attention)
            if level < len(widths) - 1:
                stage.downsample = _Resample(width, up=False)
            self.down.append(stage)
            width_in = width
        self.mid = _Middle(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], config.bits, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.bits, config.bits, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(pixels)
        for stage in self.down:
            h = stage(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        return self.quant_conv(h)


class _Decoder(nn.Module):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = [config.channels * m for m in config.decoder_multipliers]
        self.post_quant_conv = nn.Conv2d(config.bits, config.bits, 1)
        self.conv_in = nn.Conv2d(config.bits, widths[-1], 3, padding=1)
        self.mid = _Middle(widths[-1])
        stages: list[_Level] = []
        width_in = widths[-1]
        for level in reversed(range(len(widths))):   # from the coarsest level up; kept in level order
            stage = _Level(width_in, widths[level], config.decoder_blocks[level], level in config.decoder_attention)
            if level > 0:
                stage.upsample = _Resample(widths[level], up=True)
            stages.insert(0, stage)
            width_in = widths[level]
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.image_channels, 3, padding=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(self.post_quant_conv(codes)))
        for stage in reversed(self.up):
            h = stage(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _LookupFree(nn.Module):
    """The code vectors (``embedding``: index -> ±1 bits, highest bit first) and the bit values; both are
    buffers of the published state dict, and both follow from ``bits``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        powers = 2 ** torch.arange(bits - 1, -1, -1)
        self.register_buffer("power_vals", powers)
        self.register_buffer("embedding", ((torch.arange(2 ** bits)[:, None] // powers) % 2).float() * 2 - 1)

    def indices(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, bits, h, w] -> [B, h * w] code indices (row-major), from the signs (> 0 is a 1 bit)."""
        bits = (latents > 0).long()
        return (bits * self.power_vals.view(1, -1, 1, 1)).sum(1).flatten(1)

    def vectors(self, indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, h * w] indices -> [B, bits, h, w] ±1 code vectors."""
        return self.embedding[indices].unflatten(1, grid).permute(0, 3, 1, 2)


class MagvitV2(nn.Module):
    """``encode(pixels)`` -> code indices, ``decode(indices, grid)`` -> pixels; pixels are [B, 3, H, W] in [-1, 1]."""

    def __init__(self, config: MagvitConfig = MagvitConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)
        self.quantize = _LookupFree(config.bits)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1], sides multiples of ``config.downsampling`` -> [B, (H/f) * (W/f)] indices."""
        factor = self.config.downsampling
        if pixels.ndim != 4 or pixels.shape[1] != self.config.image_channels or pixels.shape[-1] % factor \
                or pixels.shape[-2] % factor:
            raise InvalidInputError(f"MAGVIT-v2 encodes [B, {self.config.image_channels}, H, W] with H and W "
                                    f"multiples of {factor}; got {tuple(pixels.shape)}.")
        return self.quantize.indices(self.encoder(pixels))

    def decode(self, indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, h * w] code indices -> [B, 3, h*f, w*f] pixels (about [-1, 1]; not clamped)."""
        if indices.ndim != 2 or indices.shape[1] != grid[0] * grid[1]:
            raise InvalidInputError(f"MAGVIT-v2 decodes [B, {grid[0] * grid[1]}] indices for a {grid[0]}x{grid[1]} "
                                    f"grid; got {tuple(indices.shape)}.")
        if int(indices.min()) < 0 or int(indices.max()) >= self.config.codebook_size:
            raise InvalidInputError(f"MAGVIT-v2 code indices must be in [0, {self.config.codebook_size}); got "
                                    f"{int(indices.min())}..{int(indices.max())}.")
        return self.decoder(self.quantize.vectors(indices, grid).to(self.decoder.conv_in.weight.dtype))


def load_magvit(folder: str | Path, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> MagvitV2:
    """A MAGVIT-v2 tokenizer folder as published (``pytorch_model.safetensors`` [+ ``config.json``]), its
    architecture read off the weights; a pickle checkpoint or a folder of another kind is refused by name."""
    from safetensors.torch import load_file

    from ..weights import check_state_matches, on_meta, pickle_files, weight_shapes

    folder = Path(folder)
    path = folder / WEIGHTS
    if not path.is_file():
        pickles = pickle_files(folder)
        hint = (f" It holds {', '.join(pickles)}: a pickle, which is not loaded (it can run code). Convert it with "
                f"safetensors' torch.save -> save_file, or download the safetensors version.") if pickles else ""
        raise InvalidInputError(f"{folder} has no {WEIGHTS}: not a MAGVIT-v2 tokenizer folder as published "
                                f"(showlab/magvitv2).{hint}")
    shapes = weight_shapes(folder, WEIGHTS.removesuffix(".safetensors"))
    where = f"the MAGVIT-v2 weights in {path}"
    config = MagvitConfig.from_shapes(shapes, where)
    check_state_matches(on_meta(lambda: MagvitV2(config)), shapes, where)
    model = MagvitV2(config)
    model.load_state_dict(load_file(path))
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
