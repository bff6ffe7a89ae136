"""SDEdit Correct (ACDC step 4): noise the ARM's frame to t' and denoise it with the diffusion model."""
from __future__ import annotations

from dataclasses import replace

from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings
from acdc_core.story import correct
from . import bridge
from .frames import frame_to_nchw, to_image
from .widgets import (check_correct_frames, check_float_widgets, correct_frames_input, read_correct_frames,
                      sampler_input, seed_input, tooltip)
from .wires import CATEGORY, DM, FRAME

STEPS_TOOLTIP = ("Length of the full schedule; only the floor(t' x steps) steps at or below t' run (50 at t'=0.5 "
                 "runs 25, as in the paper). With a ComfyUI model the same number runs: its KSampler is asked for "
                 "steps = floor(t' x steps) from a schedule of this length (denoise ~ t').")


class SDEditCorrect:
    DESCRIPTION = ("ACDC step 4: SDEdit. Noises the ARM's frame to diffusion time t' and denoises it back with the "
                   "diffusion model, guided by the frame's prompt: local artifacts are fixed while the content "
                   "stays. The frame is corrected at the model's own size (512 for SD1.5). Cancel stops it between "
                   "steps. \"50 DDIM steps at t'=0.5\" runs the 25 steps below t', as in the paper.")
    CATEGORY = f"{CATEGORY}/stages"
    FUNCTION = "correct"
    RETURN_TYPES = ("IMAGE", FRAME)
    RETURN_NAMES = ("image", "frame")
    OUTPUT_TOOLTIPS = ("The corrected frame at the correction size (the frame unchanged when it is not corrected).",
                       "The frame, with what the correction did (its DM seed and prompt, or that ACDC #k left it "
                       "alone).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dm": (DM, tooltip("From Load Diffusion Model, or ComfyUI Model as Corrector.")),
                "image": ("IMAGE", tooltip("The ARM's frame (from VQ Detokenize).")),
                "prompt": ("STRING", tooltip("The diffusion model's prompt (from LLM Memory Prompt, or the raw "
                                             "story line for the no-memory ablation).", forceInput=True,
                                             lazy=bridge.lazy_inputs())),
                "t_prime": ("FLOAT", tooltip("t': how far the frame is noised, as a fraction of diffusion time. "
                                             "Higher changes more. The paper uses 0.4-0.5 for images.",
                                             default=0.5, min=0.01, max=1.0, step=0.01)),
                "steps": ("INT", tooltip(STEPS_TOOLTIP, default=50, min=1, max=1000)),
                "cfg": ("FLOAT", tooltip("Classifier-free guidance of the diffusion model (paper: 7.5).",
                                         default=7.5, min=0.0, max=30.0, step=0.1)),
                "seed": seed_input("Noise seed; frame k uses seed + k - 1 (as the headless engine does)."),
                "negative_prompt": ("STRING", tooltip("What the diffusion model should avoid.", default="")),
                "correct_frames": correct_frames_input("are corrected"),
                "correction_size": ("INT", tooltip("Side in pixels the frame is corrected at; 0 = the model's "
                                                   "native size (512 SD1.5, 1024 SDXL).", default=0, min=0,
                                                   max=4096, step=8)),
                "sampler_name": sampler_input(),
                "frame": (FRAME, tooltip("The frame (from VQ Detokenize): which frame this is, for its seed and "
                                         "ACDC #k, and what Re-Tokenize records.")),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, correct_frames=None, t_prime=None, cfg=None):
        return check_float_widgets(cls, t_prime=t_prime, cfg=cfg) or check_correct_frames(correct_frames) or True

    @staticmethod
    def settings(t_prime, steps, cfg, seed, negative_prompt, correct_frames, correction_size,
                 sampler_name) -> StorySettings:
        size = (int(correction_size), int(correction_size)) if correction_size else None
        # The ranges here, before the model is placed; the corrector checks the steps t' leaves and the sampler.
        return StorySettings(strength=t_prime, steps=int(steps), guidance_scale=cfg, negative_prompt=negative_prompt,
                             scheduler=sampler_name, correct_frames=read_correct_frames(correct_frames),
                             correction_size=size, dm_seed=int(seed)).validate()

    def check_lazy_status(self, correct_frames="all", frame=None, prompt=None, **_):
        # A frame ACDC #k leaves alone needs no prompt, so its memory LLM query never runs.
        try:
            corrects = frame is None or StorySettings(correct_frames=read_correct_frames(correct_frames)).corrects(
                frame.index)
        except InvalidInputError:
            return []   # the run itself reports it
        return ["prompt"] if prompt is None and corrects else []

    def correct(self, dm, image, t_prime, steps, cfg, seed, negative_prompt, correct_frames, correction_size,
                sampler_name, frame, prompt=None):
        settings = self.settings(t_prime, steps, cfg, seed, negative_prompt, correct_frames, correction_size,
                                 sampler_name)
        # The pixels are the IMAGE wired in (an image node may sit between VQ Detokenize and here).
        frame = replace(frame, image=frame_to_nchw(image))
        corrects = settings.corrects(frame.index)        # ACDC #k: the frame is recorded as left alone
        frame = correct(frame, dm.use() if corrects else dm.engine, settings, prompt or "",
                        progress=bridge.progress())
        return (to_image(frame.image) if corrects else image, frame)


NODES = {"ACDC_SDEditCorrect": (SDEditCorrect, "SDEdit Correct (ACDC)")}
