"""Re-Tokenize (ACDC step 5): re-encode the corrected frame with the ARM's own VQ encoder, v~_i = E(x~_i),
and swap it into the story in place of v_i. The story then continues from the corrected frame."""
from __future__ import annotations

from dataclasses import replace

from acdc_core.story import reencode
from . import bridge
from .frames import frame_to_nchw, to_image
from .widgets import tooltip
from .wires import ARM, CATEGORY, FRAME, STORY


class ReTokenize:
    DESCRIPTION = ("ACDC step 5: re-encodes the frame's final image with the ARM's own VQ encoder and puts those "
                   "tokens in the story instead of the ARM's, so the next frames are generated from the corrected "
                   "frame and errors stop propagating. A frame SDEdit Correct left alone (ACDC #k) keeps the ARM's "
                   "own tokens. Any image chain may come before it (ComfyUI's own VAE Encode -> KSampler -> VAE "
                   "Decode, an upscale, a colour fix): the image wired in is what is re-encoded.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "retokenize"
    RETURN_TYPES = (STORY, "IMAGE", "IMAGE")
    RETURN_NAMES = ("story", "arm_view", "image")
    OUTPUT_TOOLTIPS = ("The story with this frame added (connect to Loop Frame (close)).",
                       "The frame as the ARM now sees it: its new tokens decoded.",
                       "The frame that went back into the story (the image wired in, or the ARM's frame where ACDC #k "
                       "left it alone): save this one. A Save Image here also waits for the whole chain to be valid.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arm": (ARM, tooltip("The ARM that made the tokens.")),
                "frame": (FRAME, tooltip("The frame (from Inpaint Physical Fix, SDEdit Correct or VQ Detokenize): "
                                         "what happened to it, recorded in the story.")),
                "image": ("IMAGE", tooltip("The final frame (from Inpaint Physical Fix, SDEdit Correct, or your own "
                                           "image nodes).")),
            },
            "optional": {
                "prompt": ("STRING", tooltip("The diffusion prompt of this frame (from LLM Memory Prompt), kept in the "
                                             "story where the memory of later frames reads it. Needed only when no "
                                             "SDEdit Correct saw the frame (e.g. ComfyUI's own KSampler corrects "
                                             "it).", forceInput=True, lazy=bridge.lazy_inputs())),
            },
        }

    def check_lazy_status(self, frame=None, prompt=None, **_):
        # Only a frame corrected outside SDEdit Correct needs its prompt from here (a frame ACDC #k left alone
        # keeps no prompt), so no memory query runs for nothing.
        wanted = frame is not None and frame.corrected is not False and frame.memory_prompt is None
        return ["prompt"] if wanted and prompt is None else []

    def retokenize(self, arm, frame, image, prompt=None):
        backend = arm.use()
        if frame.corrected is not False:     # the image wired in is the frame's final pixels
            frame = replace(frame, image=frame_to_nchw(image))
        story = reencode(frame, backend, memory_prompt=prompt)   # a new state; the frame's state is untouched
        record = story.records[-1]
        view = backend.decode(record.tokens_after) if record.corrected else record.arm_image[None]
        return (story, to_image(view), image if record.corrected else to_image(record.arm_image[None]))


NODES = {"ACDC_ReTokenize": (ReTokenize, "Re-Tokenize (ACDC)")}
