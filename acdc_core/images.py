"""Image layout helpers. The engine works in [N, 3, H, W] float in [0, 1] (channels first).

ComfyUI's IMAGE is [B, H, W, C] (channels last); every layout conversion is spelled out here and nowhere else,
and so is the reading of mask files.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def bhwc_to_nchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] -> engine [B, C, H, W] (a new tensor)."""
    return image.permute(0, 3, 1, 2).contiguous()


def nchw_to_bhwc(image: torch.Tensor) -> torch.Tensor:
    """Engine [B, C, H, W] -> ComfyUI IMAGE [B, H, W, C] (a new tensor)."""
    return image.permute(0, 2, 3, 1).contiguous()


def resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [N, C, H, W] to (H, W) with antialiased bicubic, clamped to [0, 1]. Identity if same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0, 1).to(images.dtype)


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image [3, H, W] in [0, 1] -> PIL RGB."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    return Image.fromarray(array.astype(np.uint8), "RGB")


def load_mask(path) -> torch.Tensor:
    """A mask file -> [H, W] float in {0, 1}, 1 = repaint. A picture with transparency (as ComfyUI's mask
    editor saves it) is masked where it is transparent (1 - alpha); one without counts its light pixels
    (white = repaint). The one reader of mask files, for the CLI's --mask and the nodes' painted masks."""
    from .errors import InvalidInputError

    try:
        with Image.open(path) as picture:
            if "A" in picture.getbands() or (picture.mode == "P" and "transparency" in picture.info):
                mask = 1.0 - np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            else:
                mask = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    except OSError as error:   # not an image (PIL's UnidentifiedImageError is an OSError), or unreadable
        raise InvalidInputError(f"the mask file {path} could not be read as an image: {error}") from None
    return torch.from_numpy((mask > 0.5).astype(np.float32))
