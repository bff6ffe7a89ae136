"""ARM Token Inpaint (optional, between ACDC steps 1 and 2): the ARM itself fills a painted region of its frame
again, keeping every other code exactly: token-level inpainting, beside the DM's pixel inpainting (Inpaint Physical
Fix). It needs an ARM that fills a frame in parallel (Show-o's MaskGIT); a token-by-token ARM (Janus, Emu3) cannot,
since each of its codes depends on the ones before.

Masks are painted as on Inpaint Physical Fix (``masks.py``): run the story, pick a frame with the buttons under the
node's previews, "Open in MaskEditor", paint, Save, run again. A code is filled again when its cell of the frame
(16x16 px for Show-o at 256 px) has a painted pixel of at least half strength. An empty mask passes the frame on.
"""
from __future__ import annotations

import torch

from acdc_core.arm.base import SamplingSettings
from acdc_core.state import StorySettings
from acdc_core.story import decode, inpaint_tokens, token_cells
from . import bridge
from .frames import to_image
from .masks import TOKEN_FIX, check_painted_files, frame_mask, frame_previews, painted_stamp, painting_inputs
from .widgets import check_float_widgets, tooltip
from .wires import ARM, CATEGORY, FRAME

DISPLAY_NAME = "ARM Token Inpaint (ACDC)"


class ARMTokenInpaint:
    DESCRIPTION = ("Token-level inpainting by the ARM itself (Show-o): the codes under the painted mask are filled "
                   "again by MaskGIT with the story and the prompt in context, every other code is kept. Put it "
                   "between ARM Token Generator and VQ Detokenize. Paint on this node's preview of a frame (pick "
                   "the frame first), or connect a MASK at the ARM's frame size. An empty mask passes the frame on.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "inpaint"
    HAS_INTERMEDIATE_OUTPUT = True     # re-sends its frame previews when a re-run takes them from the cache
    RETURN_TYPES = (FRAME, "IMAGE", "MASK")
    RETURN_NAMES = ("frame", "image", "mask")
    OUTPUT_TOOLTIPS = ("The frame with the region's codes filled again (for VQ Detokenize, which passes its pixels on).",
                       "The ARM's frame after the inpainting, decoded.",
                       "The mask that was applied, at the ARM's frame size (all zero where nothing was filled).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arm": (ARM, tooltip("The ARM that made the frame (Show-o).")),
                "frame": (FRAME, tooltip("From ARM Token Generator.")),
                "cfg": ("FLOAT", tooltip("The ARM's guidance while it fills the region (as on ARM Token Generator; "
                                         "Show-o's cfg is 1 + its w).", default=5.0, min=0.0, max=30.0, step=0.1)),
                "temperature": ("FLOAT", tooltip("MaskGIT's confidence noise (1 as upstream).", default=1.0, min=0.0,
                                                 max=5.0, step=0.05)),
                "maskgit_steps": ("INT", tooltip("MaskGIT steps over the masked codes (18 as upstream).", default=18,
                                                 min=1, max=1000)),
                **painting_inputs(),
            },
            "optional": {
                "mask": ("MASK", tooltip("A mask from another node (1 = fill again) at the ARM's frame size, for every "
                                         "frame that passes; combined with a painted one.")),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, masks=None, image=None, cfg=None, temperature=None):
        return check_float_widgets(cls, cfg=cfg, temperature=temperature) or check_painted_files(masks, image) or True

    @classmethod
    def IS_CHANGED(cls, masks=None, image=None, paint_frame=None, **_):
        return painted_stamp(masks, image, paint_frame)

    def inpaint(self, arm, frame, cfg, temperature, maskgit_steps, paint_frame, masks, image, mask=None):
        backend = arm.use()
        applied = frame_mask(tuple(backend.image_size), frame.number, masks, image, paint_frame, mask, DISPLAY_NAME,
                             "ARM Token Generator")
        if applied is not None and bool((applied >= 0.5).any()):
            settings = StorySettings(sampling=SamplingSettings(guidance_scale=cfg, temperature=temperature,
                                                               maskgit_steps=int(maskgit_steps))).validate()
            cells = token_cells(applied, backend, frame.index)       # refuses an ARM that cannot (before any work)
            frame = inpaint_tokens(frame, backend, settings, cells, progress=bridge.progress())
        else:
            applied = torch.zeros(1, *backend.image_size)
        frame = decode(frame, backend)
        records = frame.state.records
        ui = frame_previews([r.arm_image for r in records], [r.index + 1 for r in records], frame.arm_image[0],
                            frame.number)
        return {"ui": ui, "result": (frame, to_image(frame.arm_image), applied)}


NODES = {TOKEN_FIX: (ARMTokenInpaint, DISPLAY_NAME)}
