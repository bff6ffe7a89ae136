"""ARM Token Generator (ACDC step 1): the ARM samples the next frame's VQ tokens with the story so far in context."""
from __future__ import annotations

import time

import torch

from acdc_core.arm.base import SamplingSettings
from acdc_core.errors import InvalidInputError
from . import bridge
from .values import ARM, CATEGORY, STORY, TOKENS, FrameTokens, seed_input, tooltip


class ARMTokenGenerator:
    DESCRIPTION = ("ACDC step 1: the ARM samples the VQ image tokens of the story's next frame, with every earlier "
                   "frame (corrected ones swapped in) and prompt in its context. Shows the frame as its tokens "
                   "arrive; Cancel stops it between tokens.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "generate"
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The new frame's tokens, with its number and the story they were sampled after.",)

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
        }}

    def generate(self, arm, story, seed, cfg, temperature, top_k, top_p):
        index = story.next_index
        if story.done:
            raise InvalidInputError(f"the story's {len(story.prompts)} frame(s) are all made.")
        settings = SamplingSettings(guidance_scale=cfg, temperature=temperature, top_k=top_k, top_p=top_p).validate()
        backend = arm.use()
        arm_seed = int(seed) + index
        start = time.perf_counter()
        tokens = backend.sample_chunk(story.context, story.prompts[index], settings=settings,
                                      generator=torch.Generator().manual_seed(arm_seed), progress=bridge.progress())
        return (FrameTokens(story, index, tokens, arm_seed, {"arm": time.perf_counter() - start}),)


NODES = {"ACDC_ARMTokenGenerator": (ARMTokenGenerator, "ARM Token Generator (ACDC)")}
