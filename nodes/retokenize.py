"""Re-Tokenize (ACDC step 5): re-encode the corrected frame with the ARM's own VQ encoder, v~_i = E(x~_i),
and swap it into the story in place of v_i. The story then continues from the corrected frame."""
from __future__ import annotations

import time

import torch

from acdc_core.images import nchw_to_bhwc, resize_to
from acdc_core.state import FrameRecord
from .values import ARM, CATEGORY, STORY, TOKENS, single_image, tooltip


class ReTokenize:
    DESCRIPTION = ("ACDC step 5: re-encodes the corrected (and fixed) frame with the ARM's own VQ encoder and puts "
                   "those tokens in the story instead of the ARM's, so the next frames are generated from the "
                   "corrected frame and errors stop propagating. A frame that reaches it unchanged (ACDC #k) keeps "
                   "the ARM's own tokens.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "retokenize"
    RETURN_TYPES = (STORY, "IMAGE")
    RETURN_NAMES = ("story", "arm_view")
    OUTPUT_TOOLTIPS = ("The story with this frame added (connect to Loop Frame (close)).",
                       "The frame as the ARM now sees it: its new tokens decoded.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arm": (ARM, tooltip("The ARM that made the tokens.")),
                "tokens": (TOKENS, tooltip("From ARM Token Generator: the frame's original tokens and its story.")),
                "image": ("IMAGE", tooltip("The final frame (from Inpaint Physical Fix or SDEdit Correct).")),
            },
            "optional": {
                "prompt": ("STRING", tooltip("The diffusion model's prompt for this frame (from LLM Memory Prompt): "
                                             "kept in the story, where the memory of later frames reads it.",
                                             forceInput=True, lazy=True)),
                "fix_mask": ("MASK", tooltip("From Inpaint Physical Fix (its mask output): records whether this "
                                             "frame was fixed (run.json, the story's records). Not needed for the "
                                             "pixels or the tokens.")),
            },
        }

    @staticmethod
    def _compare(backend, tokens, image):
        """(x_i = D(v_i) [1, 3, h, w], the final frame [1, 3, H, W], whether the frame reached here unchanged)."""
        arm_image = backend.decode(tokens.tokens)
        final = single_image(image, "image")                     # IMAGE [1, H, W, 3] -> [1, 3, H, W]
        unchanged = tuple(final.shape) == tuple(arm_image.shape) and torch.equal(final, arm_image.to(final))
        return arm_image, final, unchanged

    def check_lazy_status(self, arm=None, tokens=None, image=None, prompt=None, fix_mask=None):
        # An unchanged frame (ACDC #k) keeps no DM prompt, so its memory LLM query never has to run.
        if prompt is not None or arm is None or tokens is None or image is None:
            return []
        return [] if self._compare(arm.use(), tokens, image)[2] else ["prompt"]

    def retokenize(self, arm, tokens, image, prompt=None, fix_mask=None):
        backend = arm.use()
        seconds = dict(tokens.seconds)
        arm_image, final, unchanged = self._compare(backend, tokens, image)   # x_i = D(v_i)
        index, state = tokens.index, tokens.state
        if unchanged:  # not corrected (ACDC #k): the ARM's own tokens stay, as in the headless engine
            new_tokens, memory_prompt, corrected = tokens.tokens, None, arm_image
        else:
            start = time.perf_counter()
            new_tokens = backend.encode(resize_to(final, backend.image_size))   # v~_i = E(x~_i)
            seconds["encode"] = time.perf_counter() - start
            memory_prompt, corrected = (prompt if prompt is not None else None), final
        record = FrameRecord(index, state.prompts[index], memory_prompt, arm_image[0], corrected[0].float(),
                             tokens.tokens, new_tokens, tokens.arm_seed, tokens.arm_seed, corrected=not unchanged,
                             fixed=not unchanged and fix_mask is not None and bool(fix_mask.any()), seconds=seconds)
        story = state.with_frame(record, new_tokens)             # a new state; the input state is untouched
        return (story, nchw_to_bhwc(backend.decode(new_tokens)))


NODES = {"ACDC_ReTokenize": (ReTokenize, "Re-Tokenize (ACDC)")}
