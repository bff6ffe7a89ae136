"""Masks painted in ComfyUI's mask editor, one file per frame, and the loop's per-frame view of them.

Two nodes are painted on: Inpaint Physical Fix (the DM repaints the region) and ARM Token Inpaint (the ARM fills
the region's codes again). Their widgets hold the masks: ``masks`` maps frame numbers to painted files ({"3": "clipspace/... [input]"}),
``image`` holds the file the mask editor saved last, for ``paint_frame``. The painted region is where the
editor made the picture transparent (mask = 1 - alpha). ``frame_inputs`` gives each frame's copy of the fix
node only its own mask, so painting one frame leaves every other frame's cache entry as it was.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

from acdc_core.errors import InvalidInputError
from acdc_core.images import fit_mask
from acdc_core.images import load_mask as read_mask_file
from . import bridge
from .frames import one_mask
from .widgets import tooltip

FIX = "ACDC_InpaintFix"           # the node classes painted on, whose copies ``frame_inputs`` adapts
TOKEN_FIX = "ACDC_ARMTokenInpaint"
PAINTED = (FIX, TOKEN_FIX)


def parse_masks(text: str) -> dict[int, str]:
    """The ``masks`` widget: JSON {"3": "clipspace-painted-masked-1.png [input]", ...} -> {3: file}."""
    if not text or not str(text).strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidInputError("the masks field is not valid JSON; clear it (the web extension fills it).") from None
    if not isinstance(data, dict):
        raise InvalidInputError('the masks field must be a JSON object like {"3": "file.png [input]"}.')
    out = {}
    for key, value in data.items():
        if not str(key).isdigit() or int(key) < 1 or not isinstance(value, str):
            raise InvalidInputError(f"the masks field maps frame numbers (1, 2, ...) to file names; got {key!r}: "
                                    f"{value!r}.")
        if value.strip():
            out[int(key)] = value.strip()
    return out


def dump_masks(masks: dict[int, str]) -> str:
    """The canonical ``masks`` text (sorted frames), "" when there is none: equal maps give equal text."""
    if not masks:
        return ""
    return json.dumps({str(k): masks[k] for k in sorted(masks)}, separators=(",", ":"))


def is_painted(value) -> bool:
    """A painted mask is a file in ComfyUI's input folder; a frame preview (temp/output) is not."""
    return isinstance(value, str) and bool(value.strip()) and bridge.annotation_type(value) == "input"


def effective_masks(masks: str, image: str, paint_frame: int) -> dict[int, str]:
    """Every frame's painted mask file: the ``masks`` map, with the file in ``image`` for ``paint_frame``."""
    found = parse_masks(masks)
    if is_painted(image):
        found[int(paint_frame)] = image.strip()
    return found


def load_mask(value: str) -> torch.Tensor:
    """A painted file (an annotated name, "file.png [input]") -> mask [H, W] in {0, 1} (``acdc_core.images.load_mask``)."""
    path = bridge.annotated_path(value)
    if not path.is_file():
        raise InvalidInputError(f"the painted mask {value!r} is not in ComfyUI's input folder; paint it again.")
    return read_mask_file(path)


def frame_inputs(inputs: dict, frame: int) -> dict:
    """Inputs of the fix node's copy for ``frame``: only that frame's painted mask, in one canonical form.

    So painting (or browsing to) another frame leaves this copy's inputs, and ComfyUI's cache of every
    frame before the painted one, as they were. ``inputs`` is not changed.
    """
    values = [inputs.get(k) for k in ("masks", "image", "paint_frame")]
    if any(isinstance(v, list) for v in values):  # a widget turned into a link: nothing to adapt
        return inputs
    found = effective_masks(values[0] or "", values[1] or "", values[2] or 1)
    out = dict(inputs)
    out["masks"] = dump_masks({frame: found[frame]} if frame in found else {})
    out["image"] = ""
    out["paint_frame"] = frame
    return out


# ---------------------------------------------------------------------------------- what a painted node shares
def painting_inputs() -> dict:
    """The three widgets that hold a node's painted masks (the web extension sets and hides ``masks``/``image``)."""
    return {
        "paint_frame": ("INT", tooltip("The frame the mask editor paints (the frame shown in the image field). The "
                                       "web extension's frame buttons set it.", default=1, min=1, max=10000)),
        "masks": ("STRING", tooltip("Masks painted for other frames, as JSON {frame: file}; kept by the web "
                                    "extension when you switch frames. Clear it to drop them.", default="")),
        "image": ("STRING", tooltip("The frame the mask editor opens, then the painted file it saved (for "
                                    "paint_frame). Set by the mask editor and the web extension.", default="")),
    }


def check_painted_files(masks: Optional[str], image: Optional[str]) -> Optional[str]:
    """For VALIDATE_INPUTS: a message when the ``masks`` field is malformed or names a file that is not in ComfyUI's
    input folder, else None. (A wired MASK is checked when the node runs: validation never sees a linked value.)"""
    try:
        found = parse_masks(masks or "")
    except InvalidInputError as error:
        return str(error)
    if is_painted(image):
        found[0] = image.strip()
    for frame, value in sorted(found.items()):
        which = f"for frame {frame} in the masks field" if frame else "in the image field"
        try:
            path = bridge.annotated_path(value)
        except ValueError as error:
            return f"the mask painted {which}: {error}"
        if not path.is_file():
            return f"the mask painted {which} ({value}) is not in ComfyUI's input folder; paint it again or clear it."
    return None


def painted_stamp(masks: Optional[str], image: Optional[str], paint_frame: Optional[int]) -> str:
    """For IS_CHANGED: the painted files' names, sizes and times, so a file changed in place still re-runs."""
    try:
        found = effective_masks(masks or "", image or "", paint_frame or 1)
    except InvalidInputError:
        return ""
    stamp = []
    for frame, value in sorted(found.items()):
        try:
            info = os.stat(bridge.annotated_path(value))
            stamp.append(f"{frame}:{value}:{info.st_size}:{info.st_mtime_ns}")
        except (OSError, ValueError):
            stamp.append(f"{frame}:{value}:missing")
    return "|".join(stamp)


def frame_mask(size: tuple[int, int], frame: int, masks: str, image: str, paint_frame: int,
               wired: Optional[torch.Tensor], who: str, made_by: str) -> Optional[torch.Tensor]:
    """The mask for ``frame`` of a painted node, [1, H, W] in [0, 1], or None: a wired MASK (the frame's ``size``)
    and the mask painted for the frame (its size or its enlarged preview's, ``fit_mask``), combined. ``who`` names
    the node in messages, ``made_by`` the node that makes frames of that size."""
    height, width = size
    combined = None
    if wired is not None:
        given = one_mask(wired, f"{who}, frame {frame}: the mask input")
        if tuple(given.shape[-2:]) != (height, width):
            raise InvalidInputError(
                f"{who}, frame {frame}: the mask input is {given.shape[-2]}x{given.shape[-1]} but the frame is "
                f"{height}x{width}; give a mask of the frame's size (the size {made_by} makes).")
        combined = given
    painted = effective_masks(masks, image, paint_frame).get(frame)
    if painted is not None:
        painted_mask = load_mask(painted)
        drawn = fit_mask(painted_mask, (height, width))   # painted on the enlarged preview: back to the frame
        if drawn is None:
            raise InvalidInputError(
                f"{who}, frame {frame}: the mask painted for it is {painted_mask.shape[0]}x{painted_mask.shape[1]}, "
                f"which is neither the frame's {height}x{width} nor its preview's (was the frame size changed?); "
                "paint it again on this node's preview.")
        combined = drawn[None] if combined is None else torch.maximum(combined, drawn[None])
    return combined


def frame_previews(earlier: list[torch.Tensor], numbers: list[int], current: torch.Tensor, number: int) -> dict:
    """The ``ui`` of a painted node: every frame so far ([3, H, W] each), numbered (``acdc_frames``), for the web
    extension's frame buttons."""
    images = [bridge.save_preview(image, "frame") for image in earlier + [current]]
    return {"images": images, "acdc_frames": numbers + [number]}
