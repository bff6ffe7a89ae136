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


# Frames smaller than this are shown enlarged (whole-number factor, nearest neighbour: pixels stay sharp
# squares), so a 32 px frame is readable and can be painted on; the painted mask is brought back by ``fit_mask``.
PREVIEW_SIDE = 256


def preview_factor(height: int, width: int) -> int:
    """How many times a frame of this size is enlarged for a preview (1 for frames of PREVIEW_SIDE and up)."""
    return max(1, PREVIEW_SIDE // max(height, width, 1))


def to_preview(image: torch.Tensor, caption: str | None = None) -> Image.Image:
    """One image [3, H, W] in [0, 1] -> PIL RGB enlarged by ``preview_factor`` (what a person looks at and paints
    on). With ``caption`` the picture is dimmed and the caption written across it (e.g. "cancelled" over a
    half-drawn frame)."""
    picture = to_pil(image)
    factor = preview_factor(picture.height, picture.width)
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    if caption:
        from PIL import ImageDraw, ImageEnhance, ImageFont

        picture = ImageEnhance.Brightness(picture).enhance(0.4)
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default(size=max(12, picture.width // 10))
        box = draw.textbbox((0, 0), caption, font=font)
        at = ((picture.width - (box[2] - box[0])) // 2, (picture.height - (box[3] - box[1])) // 2)
        draw.text(at, caption, fill=(255, 255, 255), font=font)
    return picture


def fit_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
    """A mask [h, w] painted on the frame or on a whole-number enlargement of it (a preview) -> [H, W] of the
    frame's ``size``: a frame pixel is masked when any painted pixel over it is. None if the mask is neither
    (another size or shape: painted on something else)."""
    h, w = mask.shape[-2:]
    height, width = size
    if (h, w) == (height, width):
        return mask
    if h % height or w % width or h // height != w // width:
        return None
    factor = h // height
    return F.max_pool2d(mask.float()[None, None], factor)[0, 0]


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


def enlarge_factor(h: int, w: int, min_side: int = 128) -> int:
    """The whole factor that brings a frame's shorter side to ``min_side`` or more (1 for frames that big): what a
    flow model made for larger frames (RAFT's correlation pyramid) is given toy frames enlarged by."""
    return max(1, -(-min_side // min(h, w)))
