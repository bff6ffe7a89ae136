"""Masks painted in ComfyUI's mask editor, one file per frame, and the loop's per-frame view of them.

The fix node's widgets hold them: ``masks`` maps frame numbers to painted files ({"3": "clipspace/... [input]"}),
``image`` holds the file the mask editor saved last, for ``paint_frame``. The painted region is where the
editor made the picture transparent (mask = 1 - alpha). ``frame_inputs`` gives each frame's copy of the fix
node only its own mask, so painting one frame leaves every other frame's cache entry as it was.
"""
from __future__ import annotations

import json

import torch

from acdc_core.errors import InvalidInputError
from acdc_core.images import load_mask as read_mask_file
from . import bridge

FIX = "ACDC_InpaintFix"   # the node class whose copies ``frame_inputs`` adapts


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
