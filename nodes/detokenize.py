"""VQ Detokenize (ACDC step 2): the ARM's VQ decoder turns a frame's tokens into pixels, x_i = D(v_i)."""
from __future__ import annotations

from acdc_core.story import decode
from . import bridge
from .frames import to_image
from .widgets import tooltip
from .wires import ARM, CATEGORY, FRAME


class VQDetokenize:
    DESCRIPTION = ("ACDC step 2: decodes a frame's VQ tokens into an image with the ARM's own VQ decoder, and shows "
                   "it (the ARM's frame before any correction).")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", FRAME)
    RETURN_NAMES = ("image", "frame")
    OUTPUT_TOOLTIPS = ("The ARM's frame, at the ARM's resolution (Janus: 384x384).",
                       "The frame, now with its decoded pixels (for SDEdit Correct, or straight to Re-Tokenize).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (ARM, tooltip("The ARM that made the tokens.")),
            "frame": (FRAME, tooltip("From ARM Token Generator.")),
        }}

    def decode(self, arm, frame):
        frame = decode(frame, arm.use())
        # The picture is shown here rather than by a Preview Image node: an output node that needs only the ARM
        # would let ComfyUI queue a story whose correction half is invalid (it runs the valid outputs only).
        return {"ui": {"images": [bridge.save_preview(frame.arm_image[0], "acdc_arm")]},
                "result": (to_image(frame.arm_image), frame)}       # [1, 3, H, W] -> IMAGE [1, H, W, 3]


NODES = {"ACDC_VQDetokenize": (VQDetokenize, "VQ Detokenize (ACDC)")}
