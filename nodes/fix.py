"""Inpaint Physical Fix (ACDC's optional step): repaint only a masked region of a frame, e.g. a second moon.

Masks come from a MASK input, or are painted in ComfyUI's mask editor on this node's previews:

1. Run the story. This node shows every frame as it left the node (frame 1 .. N).
2. Pick the frame to paint (``paint_frame``; the web extension's frame buttons set it and put that frame in
   the ``image`` widget), right-click the node, "Open in MaskEditor", paint over the error, Save.
   The mask editor writes the painted file's name into ``image``; the painted region is where it made
   the picture transparent (mask = 1 - alpha).
3. Run again. Only that frame's copy of this node sees the mask (``acdc_frame_inputs``), so frames before
   it come from ComfyUI's cache; the frame is inpainted in the masked region only, re-tokenized, and the
   frames after it are generated again from the fixed frame.

Masks painted for other frames are kept in ``masks`` ({"frame": "file [input]"}), which the web extension
updates when you switch frames; a painted file in ``image`` always applies to ``paint_frame``.
An empty mask passes the frame through unchanged.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import torch

from acdc_core.errors import InvalidInputError
from acdc_core.images import nchw_to_bhwc
from . import bridge
from .correct import bhwc, frame_index
from .values import CATEGORY, DM, TOKENS, seed_input, tooltip


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
    """A painted file -> mask [H, W] in {0, 1}: where the mask editor made it transparent (1 - alpha);
    a file without alpha counts its light pixels (white = repaint)."""
    from PIL import Image

    path = bridge.annotated_path(value)
    if not path.is_file():
        raise InvalidInputError(f"the painted mask {value!r} is not in ComfyUI's input folder; paint it again.")
    with Image.open(path) as picture:
        if "A" in picture.getbands() or (picture.mode == "P" and "transparency" in picture.info):
            alpha = np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            mask = 1.0 - alpha
        else:
            mask = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy((mask > 0.5).astype(np.float32))


class InpaintFix:
    DESCRIPTION = ("Physical fix: inpaints only the masked region of the frame with the diffusion model (two moons, "
                   "a third ear), then the frame goes on to Re-Tokenize and the story continues from the fixed "
                   "frame. Paint the mask in the mask editor on this node's preview of a frame (pick the frame "
                   "first), or connect a MASK. An empty mask passes the frame through.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "fix"
    # Its previews are re-sent when a re-run takes the frames from the cache, so the frames to paint on are
    # there after every run (ComfyUI's flag for UI-bearing nodes that are not output nodes).
    HAS_INTERMEDIATE_OUTPUT = True
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The fixed frame (the input, untouched, where there is no mask).",
                       "The mask that was applied (all zero where nothing was fixed).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dm": (DM, tooltip("From Load Diffusion Model.")),
                "pixels": ("IMAGE", tooltip("The frame to fix (from SDEdit Correct).")),
                "fix_prompt": ("STRING", tooltip("What the masked region should show (e.g. \"a clear night sky\"). "
                                                 "Empty: the frame's own prompt.", default="", multiline=True)),
                "t_prime": ("FLOAT", tooltip("t' of the masked repair; high values (0.8) redraw the region freely.",
                                             default=0.8, min=0.01, max=1.0, step=0.01)),
                "steps": ("INT", tooltip("Length of the full DDIM schedule (the steps below t' run).", default=50,
                                         min=1, max=1000)),
                "cfg": ("FLOAT", tooltip("Classifier-free guidance.", default=7.5, min=0.0, max=30.0, step=0.1)),
                "seed": seed_input("Noise seed; frame k uses seed + k - 1."),
                "grow": ("INT", tooltip("Grow the mask by this many pixels before repainting.", default=8, min=0,
                                        max=256)),
                "feather": ("INT", tooltip("Blend the repaint into the frame over this many pixels beyond the grown "
                                           "mask; farther pixels stay exactly as they were.", default=8, min=0,
                                           max=256)),
                "paint_frame": ("INT", tooltip("The frame the mask editor paints (the frame shown in the image "
                                               "field). The web extension's frame buttons set it.", default=1,
                                               min=1, max=10000)),
                "masks": ("STRING", tooltip("Masks painted for other frames, as JSON {frame: file}; kept by the web "
                                            "extension when you switch frames. Clear it to drop them.", default="")),
                "image": ("STRING", tooltip("The frame the mask editor opens, then the painted file it saved (for "
                                            "paint_frame). Set by the mask editor and the web extension.",
                                            default="")),
            },
            "optional": {
                "prompt": ("STRING", tooltip("The frame's own prompt (from LLM Memory Prompt), used when fix_prompt "
                                             "is empty.", forceInput=True, lazy=True)),
                "tokens": (TOKENS, tooltip("The frame's tokens (from ARM Token Generator): which frame this is, for "
                                           "its painted mask, its seed and the previews of earlier frames.")),
                "mask": ("MASK", tooltip("A mask from another node (1 = repaint), for every frame that passes; "
                                         "combined with a painted one.")),
            },
        }

    # -- the loop gives each frame's copy only that frame's mask ---------------------------------------------

    @classmethod
    def acdc_frame_inputs(cls, inputs: dict, frame: int) -> dict:
        """Inputs of this node's copy for ``frame``: only that frame's painted mask, in one canonical form.

        So painting (or browsing to) another frame leaves this copy's inputs, and ComfyUI's cache of every
        frame before the painted one, as they were.
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

    @classmethod
    def VALIDATE_INPUTS(cls, masks, image):
        """Every painted file named in ``masks`` and ``image`` must exist (checked before anything runs)."""
        try:
            found = parse_masks(masks or "")
            if is_painted(image):
                found[0] = image.strip()
            for frame, value in sorted(found.items()):
                if not bridge.annotated_path(value).is_file():
                    which = f"for frame {frame}" if frame else "in the image field"
                    return (f"the mask painted {which} ({value}) is not in ComfyUI's input folder; paint it again "
                            f"or clear it.")
        except (InvalidInputError, ValueError) as error:
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, masks=None, image=None, paint_frame=None, **_):
        """The painted files' names, sizes and times: a file changed in place still re-runs the fix."""
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

    # -- running ---------------------------------------------------------------------------------------------

    def _mask(self, pixels: torch.Tensor, frame: int, masks: str, image: str, paint_frame: int,
              mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The mask for this frame, [B, H, W] in [0, 1], or None. Sizes must match the frame."""
        batch, _, height, width = pixels.shape
        combined = None
        if mask is not None:
            wired = mask if mask.ndim == 3 else mask[None]
            if tuple(wired.shape[-2:]) != (height, width) or wired.shape[0] not in (1, batch):
                raise InvalidInputError(
                    f"the mask is {tuple(wired.shape[-2:])[0]}x{tuple(wired.shape[-2:])[1]} (batch {wired.shape[0]}) "
                    f"but frame {frame} is {height}x{width} (batch {batch}); give a mask of the frame's size.")
            combined = wired.float().clamp(0, 1).expand(batch, -1, -1)
        painted = effective_masks(masks, image, paint_frame).get(frame)
        if painted is not None:
            drawn = load_mask(painted)
            if tuple(drawn.shape) != (height, width):
                raise InvalidInputError(
                    f"the mask painted for frame {frame} is {drawn.shape[0]}x{drawn.shape[1]} but the frame is "
                    f"{height}x{width} (was the correction size changed?); paint it again on this node's preview.")
            drawn = drawn[None].expand(batch, -1, -1)
            combined = drawn if combined is None else torch.maximum(combined, drawn)
        return combined

    def check_lazy_status(self, pixels=None, fix_prompt="", masks="", image="", paint_frame=1, prompt=None,
                          tokens=None, mask=None, **_):
        if prompt is not None or (fix_prompt or "").strip() or pixels is None:
            return []
        try:
            found = self._mask(bhwc(pixels), frame_index(tokens) + 1, masks, image, paint_frame, mask)
        except InvalidInputError:
            return []  # the run itself reports the problem
        return ["prompt"] if found is not None and bool((found > 0).any()) else []

    def fix(self, dm, pixels, fix_prompt, t_prime, steps, cfg, seed, grow, feather, paint_frame, masks, image,
            prompt=None, tokens=None, mask=None):
        index = frame_index(tokens)
        frame = bhwc(pixels)                                   # IMAGE [B, H, W, 3] -> [B, 3, H, W]
        applied = self._mask(frame, index + 1, masks, image, paint_frame, mask)
        if applied is None or not bool((applied > 0).any()):
            out, applied = pixels, torch.zeros(frame.shape[0], *frame.shape[-2:])
        else:
            text = (fix_prompt or "").strip() or (prompt or "").strip()
            if not text:
                raise InvalidInputError(
                    f"frame {index + 1} has a mask to fix but no prompt: write a fix_prompt or connect the frame's "
                    f"prompt (from LLM Memory Prompt).")
            corrector = dm.use()
            fixed = corrector.correct(frame, text, strength=t_prime, steps=steps, guidance_scale=cfg,
                                      seed=int(seed) + index, mask=applied[:, None], mask_dilate=grow,
                                      mask_feather=feather, progress=bridge.progress())
            out = nchw_to_bhwc(fixed)                          # -> IMAGE [B, H, W, 3]
        return {"ui": self.previews(tokens, out, index), "result": (out, applied)}

    @staticmethod
    def previews(tokens, out: torch.Tensor, index: int) -> dict:
        """Every frame so far as it left this node: earlier frames from the story, then this one.

        The web extension lets the user pick one to paint; ``acdc_frames`` numbers the images.
        """
        earlier = tokens.state.records if tokens is not None else ()
        images = [bridge.save_preview(r.corrected_image, "frame") for r in earlier]
        images.append(bridge.save_preview(out[0].permute(2, 0, 1), "frame"))  # [H, W, 3] -> [3, H, W]
        frames = [r.index + 1 for r in earlier] + [index + 1]
        return {"images": images, "acdc_frames": frames}


NODES = {"ACDC_InpaintFix": (InpaintFix, "Inpaint Physical Fix (ACDC)")}
