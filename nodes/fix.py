"""Inpaint Physical Fix (ACDC's optional step): repaint only a masked region of a frame, e.g. a second moon.

Masks come from a MASK input, or are painted in ComfyUI's mask editor on this node's previews:

1. Run the story. This node shows every frame as it left the node (frame 1 .. N).
2. Pick the frame to paint (``paint_frame``; the web extension's frame buttons set it and put that frame in
   the ``image`` widget), right-click the node, "Open in MaskEditor", paint over the error, Save.
   The mask editor writes the painted file's name into ``image``; the painted region is where it made
   the picture transparent (mask = 1 - alpha).
3. Run again. Only that frame's copy of this node sees the mask (``masks.frame_inputs``), so frames before
   it come from ComfyUI's cache; the frame is inpainted in the masked region only, re-tokenized, and the
   frames after it are generated again from the fixed frame.

Masks painted for other frames are kept in ``masks`` ({"frame": "file [input]"}), which the web extension
updates when you switch frames; a painted file in ``image`` always applies to ``paint_frame``.
An empty mask passes the frame through unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings
from acdc_core.story import fix
from . import bridge
from .frames import frame_to_nchw, to_image
from .masks import FIX, check_painted_files, frame_mask, frame_previews, painted_stamp, painting_inputs
from .widgets import check_float_widgets, optional_seed, sampler_input, seed_input, tooltip
from .wires import CATEGORY, DM, FRAME

DISPLAY_NAME = "Inpaint Physical Fix (ACDC)"


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
    RETURN_TYPES = ("IMAGE", "MASK", FRAME)
    RETURN_NAMES = ("image", "mask", "frame")
    OUTPUT_TOOLTIPS = ("The fixed frame (the input, untouched, where there is no mask).",
                       "The mask that was applied (all zero where nothing was fixed).",
                       "The frame, recording whether it was fixed (for Re-Tokenize).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dm": (DM, tooltip("From Load Diffusion Model, or ComfyUI Model as Corrector.")),
                "pixels": ("IMAGE", tooltip("The frame to fix (from SDEdit Correct).")),
                "fix_prompt": ("STRING", tooltip("What the masked region should show (e.g. \"a clear night sky\"). "
                                                 "Empty: the frame's own prompt.", default="", multiline=True)),
                "t_prime": ("FLOAT", tooltip("t' of the masked repair; high values (0.8) redraw the region freely.",
                                             default=0.8, min=0.01, max=1.0, step=0.01)),
                "steps": ("INT", tooltip("Length of the full schedule; the floor(t' x steps) steps at or below t' "
                                         "run.", default=50, min=1, max=1000)),
                "cfg": ("FLOAT", tooltip("Classifier-free guidance.", default=7.5, min=0.0, max=30.0, step=0.1)),
                "seed": seed_input("Noise seed of the fix; frame k uses seed + k - 1. -1: the frame's own DM seed "
                                   "(SDEdit Correct's), as the headless engine does.", allow_same=True),
                "grow": ("INT", tooltip("Grow the mask by this many pixels before repainting.", default=8, min=0,
                                        max=256)),
                "feather": ("INT", tooltip("Blend the repaint into the frame over this many pixels beyond the grown "
                                           "mask; farther pixels stay exactly as they were.", default=8, min=0,
                                           max=256)),
                **painting_inputs(),
                "sampler_name": sampler_input(),
                "frame": (FRAME, tooltip("The frame (from SDEdit Correct): which frame this is, for its painted mask "
                                         "and seed, and the previews of earlier frames.")),
            },
            "optional": {
                "prompt": ("STRING", tooltip("The frame's own prompt (from LLM Memory Prompt), used when fix_prompt "
                                             "is empty and the frame does not know its prompt.", forceInput=True,
                                             lazy=bridge.lazy_inputs())),
                "mask": ("MASK", tooltip("A mask from another node (1 = repaint), for every frame that passes; "
                                         "combined with a painted one.")),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, masks=None, image=None, t_prime=None, cfg=None):
        """Every painted file named in ``masks`` and ``image`` must exist (checked before anything runs)."""
        return check_float_widgets(cls, t_prime=t_prime, cfg=cfg) or check_painted_files(masks, image) or True

    @classmethod
    def IS_CHANGED(cls, masks=None, image=None, paint_frame=None, **_):
        return painted_stamp(masks, image, paint_frame)

    # -- running ---------------------------------------------------------------------------------------------

    @staticmethod
    def _mask(pixels: torch.Tensor, frame: int, masks: str, image: str, paint_frame: int,
              mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The mask for this frame, [1, H, W] in [0, 1], or None (``masks.frame_mask``). Checked before any
        diffusion work (and before the lazy prompt is asked for)."""
        return frame_mask(tuple(pixels.shape[-2:]), frame, masks, image, paint_frame, mask, DISPLAY_NAME,
                          "SDEdit Correct")

    def check_lazy_status(self, pixels=None, fix_prompt="", masks="", image="", paint_frame=1, prompt=None,
                          frame=None, mask=None, **_):
        if prompt is not None or (fix_prompt or "").strip() or pixels is None or frame is None \
                or frame.memory_prompt is not None:
            return []
        try:
            found = self._mask(frame_to_nchw(pixels), frame.number, masks, image, paint_frame, mask)
        except InvalidInputError:
            return []  # the run itself reports the problem
        return ["prompt"] if found is not None and bool((found > 0).any()) else []

    def fix(self, dm, pixels, fix_prompt, t_prime, steps, cfg, seed, grow, feather, paint_frame, masks, image,
            sampler_name, frame, prompt=None, mask=None):
        frame = replace(frame, image=frame_to_nchw(pixels, "pixels"))       # IMAGE [1, H, W, 3] -> [1, 3, H, W]
        applied = self._mask(frame.image, frame.number, masks, image, paint_frame, mask)
        if applied is None or not bool((applied > 0).any()):
            out, applied = pixels, torch.zeros(1, *frame.image.shape[-2:])
        else:
            settings = StorySettings(fix_strength=t_prime, steps=int(steps), guidance_scale=cfg,
                                     scheduler=sampler_name, fix_prompt=(fix_prompt or "").strip() or None,
                                     mask_dilate=int(grow), mask_feather=int(feather),
                                     fix_seed=optional_seed(seed)).validate()   # before the weights move
            frame = fix(frame, dm.use(), settings, applied[:, None], prompt=prompt, progress=bridge.progress())
            out = to_image(frame.image)                                      # -> IMAGE [1, H, W, 3]
        return {"ui": self.previews(frame, out), "result": (out, applied, frame)}

    @staticmethod
    def previews(frame, out: torch.Tensor) -> dict:
        """Every frame so far as it left this node: earlier frames from the story, then this one."""
        earlier = frame.state.records
        return frame_previews([r.corrected_image for r in earlier], [r.index + 1 for r in earlier],
                              out[0].permute(2, 0, 1), frame.number)        # [H, W, 3] -> [3, H, W]


NODES = {FIX: (InpaintFix, DISPLAY_NAME)}
