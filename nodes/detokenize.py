"""VQ Detokenize (ACDC step 2): the ARM's VQ decoder turns a frame's tokens into pixels, x_i = D(v_i)."""
from __future__ import annotations

from acdc_core.images import nchw_to_bhwc
from .values import ARM, CATEGORY, TOKENS, tooltip


class VQDetokenize:
    DESCRIPTION = "ACDC step 2: decodes a frame's VQ tokens into an image with the ARM's own VQ decoder."
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The ARM's frame, at the ARM's resolution (Janus: 384x384).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (ARM, tooltip("The ARM that made the tokens.")),
            "tokens": (TOKENS, tooltip("From ARM Token Generator.")),
        }}

    def decode(self, arm, tokens):
        images = arm.use().decode(tokens.tokens)  # [1, 3, H, W] in [0, 1]
        return (nchw_to_bhwc(images),)            # -> IMAGE [1, H, W, 3]


NODES = {"ACDC_VQDetokenize": (VQDetokenize, "VQ Detokenize (ACDC)")}
