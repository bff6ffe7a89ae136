"""ARM Token Generator (ACDC step 1): the ARM samples the next frame's VQ tokens with the story so far in context."""
from __future__ import annotations

from acdc_core.arm.base import SamplingSettings
from acdc_core.state import StorySettings
from acdc_core.story import generate
from . import bridge
from .widgets import check_float_widgets, seed_input, tooltip
from .wires import ARM, CATEGORY, FRAME, STORY


class ARMTokenGenerator:
    DESCRIPTION = ("ACDC step 1: the ARM samples the VQ image tokens of the story's next frame, with every earlier "
                   "frame (corrected ones swapped in) and prompt in its context. Shows the frame as its tokens "
                   "arrive; Cancel stops it between tokens.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "generate"
    RETURN_TYPES = (FRAME,)
    RETURN_NAMES = ("frame",)
    OUTPUT_TOOLTIPS = ("The new frame: its tokens, its number, its ARM seed and the story it was sampled after. "
                       "Carry it along the chain (VQ Detokenize, SDEdit Correct, Inpaint Physical Fix, Re-Tokenize).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (ARM, tooltip("From Load ARM.")),
            "story": (STORY, tooltip("The story so far (from Loop Frame (open)); the next frame is generated.")),
            "seed": seed_input("Sampling seed; frame k uses seed + k - 1 (as the headless engine does)."),
            "cfg": ("FLOAT", tooltip("The ARM's classifier-free guidance (Janus default 5; 1 turns it off).",
                                     default=5.0, min=0.0, max=30.0, step=0.1)),
            "temperature": ("FLOAT", tooltip("Sampling temperature; 0 is greedy.", default=1.0, min=0.0, max=5.0,
                                             step=0.05)),
            "top_k": ("INT", tooltip("Sample among the k most likely codes; 0 turns it off.", default=0, min=0,
                                     max=1 << 20)),
            "top_p": ("FLOAT", tooltip("Nucleus sampling; 1 turns it off.", default=1.0, min=0.01, max=1.0,
                                       step=0.01)),
        }, "optional": {
            "maskgit_steps": ("INT", tooltip("Show-o only (it fills a frame in parallel, MaskGIT): the number of steps; "
                                             "18 as upstream, 4 for Show-o-Turbo. Show-o takes no top-k/top-p, and "
                                             "its cfg is 1 + Show-o's w (its demo's w 5 is cfg 6).", default=18,
                                             min=1, max=1000)),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, temperature=None, top_p=None):
        return check_float_widgets(cls, cfg=cfg, temperature=temperature, top_p=top_p) or True

    def generate(self, arm, story, seed, cfg, temperature, top_k, top_p, maskgit_steps=18):
        settings = StorySettings(sampling=SamplingSettings(guidance_scale=cfg, temperature=temperature, top_k=top_k,
                                                           top_p=top_p, maskgit_steps=int(maskgit_steps)),
                                 seed=int(seed)).validate()   # before arm.use()
        return (generate(story, arm.use(), settings, progress=bridge.progress()),)


NODES = {"ACDC_ARMTokenGenerator": (ARMTokenGenerator, "ARM Token Generator (ACDC)")}
