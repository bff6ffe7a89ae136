"""ACDC Story: the whole method in one node, for people who do not want to wire the per-frame chain.

It calls the same engine function as the headless CLI (``acdc_core.story.run_story``).
"""
from __future__ import annotations

from acdc_core.arm.base import SamplingSettings
from acdc_core.errors import InvalidInputError
from acdc_core.memory import MemoryModule, MemorySettings
from acdc_core.state import StorySettings, new_story
from acdc_core.story import run_story
from . import bridge
from .frames import one_mask, story_results
from .widgets import (check_correct_frames, check_float_widgets, check_story_text, correct_frames_input,
                      optional_seed, read_correct_frames, sampler_input, seed_input, tooltip)
from .wires import (ARM, CATEGORY, DEFAULT_STORY, DM, MEMORY, STORY_OUTPUT_NAMES, STORY_OUTPUT_TOOLTIPS,
                    STORY_OUTPUTS)


def fix_masks(mask, fix_frame: int, frames: int, has_dm: bool) -> dict:
    """The mask input as the engine's fix masks ({0-based frame: [1, H, W]}), or a clear error naming the inputs.

    Checked when the node runs, before any model does: ComfyUI's validation never sees a linked MASK.
    """
    if mask is None:
        return {}
    if not fix_frame:
        raise InvalidInputError("a mask is wired but fix_frame is 0: set fix_frame to the frame to fix, or unwire "
                                "the mask.")
    if fix_frame > frames:
        raise InvalidInputError(f"fix_frame is {fix_frame} but the story has {frames} frames: set fix_frame to a "
                                f"frame of the story (1 to {frames}).")
    if not has_dm:
        raise InvalidInputError("a mask is wired but no diffusion model (dm): the fix repaints with one; wire a dm, "
                                "or unwire the mask.")
    return {fix_frame - 1: one_mask(mask, f"the mask input (for fix_frame {fix_frame})")}


class ACDCStory:
    DESCRIPTION = ("The whole ACDC method in one node: for every line of the story the ARM draws the frame with the "
                   "story so far in context, the memory LLM writes the diffusion prompt, the diffusion model corrects "
                   "the frame (SDEdit at t'), an optional mask is inpainted, and the corrected frame is re-encoded "
                   "into the ARM's context. Without a diffusion model it is the ARM alone.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    # The same outputs as Loop Frame (close): the wired chain and this node are interchangeable downstream.
    RETURN_TYPES = STORY_OUTPUTS
    RETURN_NAMES = STORY_OUTPUT_NAMES
    OUTPUT_TOOLTIPS = STORY_OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arm": (ARM, tooltip("From Load ARM.")),
                "story": ("STRING", tooltip("One line per frame (blank lines and # lines are skipped).",
                                            default=DEFAULT_STORY, multiline=True)),
                "seed": seed_input("Seed of frame 1; frame k uses seed + k - 1 for the ARM (and for the diffusion "
                                   "model unless dm_seed is set)."),
                "t_prime": ("FLOAT", tooltip("SDEdit t' (paper: 0.4-0.5 for images).", default=0.5, min=0.01,
                                             max=1.0, step=0.01)),
                "steps": ("INT", tooltip("Length of the full schedule; the floor(t' x steps) steps at or below t' "
                                         "run.", default=50, min=1, max=1000)),
                "cfg": ("FLOAT", tooltip("Guidance of the diffusion model (paper: 7.5).", default=7.5, min=0.0,
                                         max=30.0, step=0.1)),
                "correct_frames": correct_frames_input("the diffusion model corrects"),
                "arm_cfg": ("FLOAT", tooltip("The ARM's classifier-free guidance.", default=5.0, min=0.0, max=30.0,
                                             step=0.1)),
                "temperature": ("FLOAT", tooltip("The ARM's sampling temperature.", default=1.0, min=0.0, max=5.0,
                                                 step=0.05)),
                "fix_frame": ("INT", tooltip("The frame the mask input fixes (1-based); 0: no fix.", default=0, min=0,
                                             max=10000)),
                "fix_t_prime": ("FLOAT", tooltip("t' of the masked fix.", default=0.8, min=0.01, max=1.0, step=0.01)),
                "negative_prompt": ("STRING", tooltip("What the diffusion model should avoid.", default="")),
                "dm_seed": seed_input("Seed of the diffusion model's correction of frame 1 (frame k: + k - 1); "
                                      "-1: the same as seed.", allow_same=True),
                "fix_seed": seed_input("Seed of the masked fix (frame k: + k - 1); -1: the frame's own diffusion "
                                       "seed.", allow_same=True),
                "sampler_name": sampler_input(),
            },
            "optional": {
                "dm": (DM, tooltip("From Load Diffusion Model or ComfyUI Model as Corrector; without it the ARM "
                                   "alone makes the story.")),
                "memory": (MEMORY, tooltip("From Load Memory LLM; without it the diffusion model gets the raw "
                                           "story lines.")),
                "mask": ("MASK", tooltip("Region of frame fix_frame to inpaint (1 = repaint), at the frame's "
                                         "corrected size or the ARM's size: one mask (set fix_frame too).")),
                "arm_top_k": ("INT", tooltip("The ARM samples among the k most likely codes; 0 turns it off (Emu3's "
                                             "own setting: 2048). Not for Show-o.", default=0, min=0, max=1 << 20)),
                "maskgit_steps": ("INT", tooltip("Show-o only: MaskGIT steps per frame (18 as upstream, 4 for "
                                                 "Show-o-Turbo).", default=18, min=1, max=1000)),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, story=None, correct_frames=None, t_prime=None, cfg=None, arm_cfg=None, temperature=None,
                        fix_t_prime=None):
        return (check_float_widgets(cls, t_prime=t_prime, cfg=cfg, arm_cfg=arm_cfg, temperature=temperature,
                                    fix_t_prime=fix_t_prime)
                or check_correct_frames(correct_frames) or check_story_text(story))

    def run(self, arm, story, seed, t_prime, steps, cfg, correct_frames, arm_cfg, temperature, fix_frame,
            fix_t_prime, negative_prompt, dm_seed, fix_seed, sampler_name, dm=None, memory=None, mask=None,
            arm_top_k=0, maskgit_steps=18):
        # Every check before any model runs (the engine's run_story checks the rest before its first frame).
        state = new_story(story)
        masks = fix_masks(mask, fix_frame, len(state.prompts), dm is not None)
        settings = StorySettings(
            sampling=SamplingSettings(guidance_scale=arm_cfg, temperature=temperature, top_k=int(arm_top_k),
                                      maskgit_steps=int(maskgit_steps)),
            strength=t_prime, steps=steps, guidance_scale=cfg, negative_prompt=negative_prompt, scheduler=sampler_name,
            correct_frames=(0 if dm is None else read_correct_frames(correct_frames)), fix_strength=fix_t_prime,
            seed=int(seed), dm_seed=optional_seed(dm_seed), fix_seed=optional_seed(fix_seed)).validate()
        module = memory.engine if memory is not None else MemoryModule(None, MemorySettings(mode="off"))
        placement = bridge.ComfyModels([h.managed for h in (arm, dm, memory) if h is not None])
        final = run_story(state.prompts, arm.engine, dm.engine if dm is not None else None, module, settings,
                          fix_masks=masks, placement=placement, progress=bridge.progress(frames=len(state.prompts)))
        return story_results(final)


NODES = {"ACDC_Story": (ACDCStory, "ACDC Story (all-in-one)")}
