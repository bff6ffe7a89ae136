"""Video ACDC in ComfyUI (``acdc_core/video.py``): the stage nodes and the all-in-one node.

Wired by hand, window by window (a change re-runs only what it reaches: a new t' re-runs the correction and every
frame after it, never the ARM's first window):

    Video Prompt -> ARM Video Window -> Video Window Correct -> Re-Tokenize Window -> ARM Video Window -> ...
                                                                                  -> Re-Tokenize Window -> frames

or in one node (ACDC Video), which runs the whole video per queue and also the ARM-only video beside it. The frames
come out as one IMAGE batch for ComfyUI's Save Animated WEBP, Create Video -> Save Video, or VideoHelperSuite's
Video Combine.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from acdc_core.errors import InvalidInputError
from acdc_core.images import resize_to
from acdc_core.memory import MemoryAnswer, MemoryModule, MemorySettings
from acdc_core.report import side_by_side
from acdc_core.video import (CORRECT_CHOICES, VideoSettings, VideoState, check_correction, correct_window,
                             decode_window, generate_frame, new_video, run_video, swap_window, validate_video,
                             window_prompt)
from . import bridge
from .frames import image_to_nchw, to_image
from .widgets import check_float_widgets, seed_input, tooltip
from .wires import ARM, CATEGORY, MEMORY, VIDEO, VIDEO_DM

OFF = MemoryModule(None, MemorySettings(mode="off"))
DEFAULT_PROMPT = "a golden retriever runs through a sunny meadow"
ARM_OWN = -1        # a sampling widget's "the ARM's own value" (e.g. an LWM folder's CFG 5 / top-k 8192 for frame 1)


def _sampling_inputs() -> dict:
    own = " -1: the ARM's own (an LWM folder: CFG 5 and top-k 8192 for frame 1, CFG 1 and top-k 1000 after)."
    return {
        "first_cfg": ("FLOAT", tooltip("The ARM's CFG for frame 1." + own, default=float(ARM_OWN), min=-1.0, max=30.0,
                                       step=0.1)),
        "first_top_k": ("INT", tooltip("The ARM's top-k for frame 1; 0 turns it off." + own, default=ARM_OWN, min=-1,
                                       max=1 << 20)),
        "later_cfg": ("FLOAT", tooltip("The ARM's CFG for every later frame." + own, default=float(ARM_OWN), min=-1.0,
                                       max=30.0, step=0.1)),
        "later_top_k": ("INT", tooltip("The ARM's top-k for every later frame." + own, default=ARM_OWN, min=-1,
                                       max=1 << 20)),
        "temperature": ("FLOAT", tooltip("The ARM's temperature (0: greedy)." + own, default=float(ARM_OWN), min=-1.0,
                                         max=5.0, step=0.05)),
    }


def _prompts(text: str) -> tuple[str, ...]:
    lines = tuple(line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip()
                  .startswith("#"))
    if not lines:
        raise InvalidInputError("the video prompt is empty: write the video's prompt (or one line per window).")
    return lines


def _video_settings_inputs() -> dict:
    return {
        "prompt": ("STRING", tooltip("The video's prompt; several lines: one prompt per window (a new prompt starts "
                                     "a new chunk for the ARM, and the memory reads them as a story).",
                                     default=DEFAULT_PROMPT, multiline=True)),
        "frames": ("INT", tooltip("Frames N (the paper: 32).", default=32, min=2, max=4096)),
        "window": ("INT", tooltip("Window L, the frames the video DM corrects at once (the paper and AnimateDiff: "
                                  "16).", default=16, min=1, max=256)),
        "seed": seed_input("Frame k samples the ARM with seed + k - 1; window w corrects with seed + w - 1."),
    }


def _state(arm, prompt, frames, window, seed, values, **settings) -> VideoState:
    base = VideoSettings(frames=int(frames), window=int(window), seed=int(seed), **settings).validate()
    own = {k: None if v == ARM_OWN else v for k, v in values.items()}       # -1: the ARM's own
    return new_video(_prompts(prompt), base.resolve_sampling(
        arm, cfg=(own["first_cfg"], own["later_cfg"]), top_k=(own["first_top_k"], own["later_top_k"]),
        temperature=own["temperature"]))


def _frames_batch(frames: list[torch.Tensor]) -> torch.Tensor:
    """Frames of different sizes (corrected windows at the DM's size, the rest at the ARM's) as one IMAGE batch, at
    the largest size."""
    size = max((tuple(f.shape[-2:]) for f in frames), key=lambda hw: hw[0] * hw[1])
    return to_image(torch.cat([resize_to(f[None].float(), size) for f in frames]))


def _dm_prompts(state: VideoState) -> str:
    return "\n".join(r.memory_prompt or r.prompt for r in state.windows)


class VideoPrompt:
    DESCRIPTION = ("Starts a video for the wired video chain: its prompt (or one per window), the number of frames, "
                   "the window the video DM corrects at once, the seed, and how the ARM samples frame 1 and the "
                   "frames after it (the paper, after LWM: CFG 5 / top-k 8192, then CFG 1 / top-k 1000).")
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "start"
    RETURN_TYPES = (VIDEO,)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The empty video, for ARM Video Window.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arm": (ARM, tooltip("From Load ARM: an ARM that writes video (the unified family: an LWM "
                                                  "folder from acdc convert lwm, or the built-in tiny video ARM; the "
                                                  "toy-world ARM runs too but was trained on stories).")),
                             **_video_settings_inputs(), **_sampling_inputs()}}

    @classmethod
    def VALIDATE_INPUTS(cls, first_cfg=None, later_cfg=None, temperature=None):
        return check_float_widgets(cls, first_cfg=first_cfg, later_cfg=later_cfg, temperature=temperature) or True

    def start(self, arm, prompt, frames, window, seed, **values):
        state = _state(arm.engine, prompt, frames, window, seed, values, correct="none")
        validate_video(state, arm.engine, None, None)
        return (state,)


class VideoWindowFrames:
    DESCRIPTION = ("The ARM writes the frames of the video's next window, one after another, each with every frame "
                   "before it (corrected windows swapped in) in its context. Shows each frame as its tokens arrive; "
                   "Cancel stops it between tokens.")
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "generate"
    RETURN_TYPES = (VIDEO, "IMAGE")
    RETURN_NAMES = ("video", "window")
    OUTPUT_TOOLTIPS = ("The video with the window written (correct it, then Re-Tokenize Window closes it).",
                       "The window's frames as the ARM wrote them, one batch [L, H, W, 3].")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arm": (ARM, tooltip("The video's ARM.")),
                             "video": (VIDEO, tooltip("From Video Prompt, or from the Re-Tokenize Window before."))}}

    def generate(self, arm, video):
        backend = arm.use()
        if video.done:
            raise InvalidInputError(f"the video's {video.settings.frames} frames are all made; take its frames from "
                                    "the last Re-Tokenize Window.")
        w = len(video.windows)
        start, stop = video.settings.windows[w]
        progress = bridge.progress(frames=stop - start)
        while video.open_window is None:
            progress("frame", video.next_index - start, stop - start)
            video = generate_frame(video, backend, progress=progress)
        progress("frame", stop - start, stop - start)
        frames, _ = decode_window(video, backend, w)
        return (video, to_image(frames))


class VideoWindowCorrect:
    DESCRIPTION = ("Corrects the video's open window at once with the video diffusion model (SDEdit at t' over every "
                   "frame together: the paper's 0.4-0.6; higher repairs motion, lower keeps detail). Its prompt is "
                   "the memory LLM's for the window, or the prompt wired in.")
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "correct"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("window", "dm_prompt")
    OUTPUT_TOOLTIPS = ("The corrected window [L, H, W, 3] at the DM's size (Re-Tokenize Window puts it back).",
                       "The prompt the video DM got.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video_dm": (VIDEO_DM, tooltip("From Load Video Diffusion Model.")),
            "video": (VIDEO, tooltip("From ARM Video Window.")),
            "window": ("IMAGE", tooltip("The window's frames (from ARM Video Window, or your own image nodes).")),
            "t_prime": ("FLOAT", tooltip("SDEdit t' (paper: 0.4-0.6).", default=0.5, min=0.01, max=1.0, step=0.01)),
            "steps": ("INT", tooltip("The full schedule; the floor(t' x steps) steps at or below t' run.", default=50,
                                     min=1, max=1000)),
            "cfg": ("FLOAT", tooltip("The video DM's guidance (paper: 7.5).", default=7.5, min=0.0, max=30.0,
                                     step=0.1)),
            "negative_prompt": ("STRING", tooltip("What the video DM should avoid.", default="")),
        }, "optional": {
            "memory": (MEMORY, tooltip("From Load Memory LLM: writes the window's prompt; without it (and without a "
                                       "prompt) the video's own prompt is used.")),
            "prompt": ("STRING", tooltip("The window's DM prompt, to use instead of the memory's.", forceInput=True)),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, t_prime=None, cfg=None):
        return check_float_widgets(cls, t_prime=t_prime, cfg=cfg) or True

    def correct(self, video_dm, video, window, t_prime, steps, cfg, negative_prompt, memory=None, prompt=None):
        w = video.open_window
        if w is None:
            raise InvalidInputError("the video has no open window to correct: wire ARM Video Window before this node.")
        settings = replace(video.settings, correct="all", strength=t_prime, steps=int(steps), guidance_scale=cfg,
                           negative_prompt=negative_prompt)
        text = (prompt or "").strip()
        engine = memory.engine if memory is not None and not text else OFF
        check_correction(settings, video_dm.engine, engine)          # before any model runs
        frames = image_to_nchw(window, "the window input")
        start, stop = settings.windows[w]
        if frames.shape[0] != stop - start:
            raise InvalidInputError(f"window {w + 1} holds {stop - start} frames; the window input has "
                                    f"{frames.shape[0]}.")
        if not text:
            text = window_prompt(video, memory.use() if memory is not None else OFF, video_dm.engine, w).text
        corrected = correct_window(frames, video_dm.use(), settings, video_dm.engine.fit_prompt(text), w,
                                   progress=bridge.progress())
        return (to_image(corrected), text)


class VideoReTokenize:
    DESCRIPTION = ("Closes the video's open window: re-encodes the corrected frames with the ARM's own tokenizer and "
                   "swaps them into the ARM's context in place of what it wrote, so the next window is generated "
                   "from the corrected one. Without a window wired in, the window stays as the ARM wrote it.")
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "retokenize"
    RETURN_TYPES = (VIDEO, "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("video", "frames", "arm_frames", "dm_prompts")
    OUTPUT_TOOLTIPS = ("The video with the window closed (for the next ARM Video Window).",
                       "Every frame so far as the video shows them (corrected windows as corrected), one batch: "
                       "for Save Animated WEBP, Create Video, or Video Combine.",
                       "Every frame so far as the ARM wrote it, before its window's correction. Not an ARM-only video: "
                       "frames after a corrected window were written from the corrected frames (ACDC Video's "
                       "arm_only_frames is the ARM alone).",
                       "The DM prompt of each window so far, one line per window.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (ARM, tooltip("The video's ARM.")),
            "video": (VIDEO, tooltip("From ARM Video Window (its window open).")),
        }, "optional": {
            "window": ("IMAGE", tooltip("The corrected window (from Video Window Correct, or your own nodes); any "
                                        "size, resized to the ARM's. Unwired: the window stays as the ARM wrote it.")),
            "dm_prompt": ("STRING", tooltip("The window's DM prompt, recorded (from Video Window Correct).",
                                            forceInput=True)),
        }}

    def retokenize(self, arm, video, window=None, dm_prompt=None):
        if video.open_window is None:
            raise InvalidInputError("the video has no open window to close: wire ARM Video Window before this node.")
        corrected = image_to_nchw(window, "the window input") if window is not None else None
        memory = MemoryAnswer(dm_prompt.strip()) if corrected is not None and dm_prompt and dm_prompt.strip() else None
        seed = video.settings.dm_seed_of(video.open_window) if corrected is not None else None
        video = swap_window(video, arm.use(), corrected, memory=memory, dm_seed=seed)
        return (video, _frames_batch(video.output_frames()), _frames_batch(video.arm_frames()), _dm_prompts(video))


class ACDCVideo:
    DESCRIPTION = ("Video ACDC in one node: the ARM writes the video frame by frame; after each window (the paper: "
                   "the first 16 of 32 frames) the video DM corrects the window at once, the corrected frames are "
                   "re-encoded into the ARM's context and the ARM goes on from them. Also makes the ARM-only video "
                   "(same seeds) beside it. Without a video DM it is the ARM alone.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = (VIDEO, "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("video", "frames", "arm_only_frames", "dm_prompts")
    OUTPUT_TOOLTIPS = ("The finished video (its records).",
                       "Every frame of the ACDC video, one batch (for Save Animated WEBP, Create Video, Video Combine).",
                       "The ARM-only video (same seeds; it shares the first window with ACDC's).",
                       "The DM prompt of each window, one line per window.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "arm": (ARM, tooltip("From Load ARM: a video ARM.")),
            **_video_settings_inputs(),
            "correct": (list(CORRECT_CHOICES), tooltip("Which windows the video DM corrects: the first (the paper's), "
                                                       "all, or none (the ARM alone).", default="first")),
            "t_prime": ("FLOAT", tooltip("SDEdit t' (paper: 0.4-0.6).", default=0.5, min=0.01, max=1.0, step=0.01)),
            "steps": ("INT", tooltip("The full schedule; the floor(t' x steps) steps at or below t' run.", default=50,
                                     min=1, max=1000)),
            "cfg": ("FLOAT", tooltip("The video DM's guidance (paper: 7.5).", default=7.5, min=0.0, max=30.0,
                                     step=0.1)),
            "arm_only_video": ("BOOLEAN", tooltip("Also make the ARM-only video, for comparison.", default=True)),
            **_sampling_inputs(),
        }, "optional": {
            "video_dm": (VIDEO_DM, tooltip("From Load Video Diffusion Model; without it the ARM alone makes the "
                                           "video.")),
            "memory": (MEMORY, tooltip("From Load Memory LLM: writes each window's DM prompt; without it the DM gets "
                                       "the video's prompt.")),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, t_prime=None, cfg=None, first_cfg=None, later_cfg=None, temperature=None):
        return check_float_widgets(cls, t_prime=t_prime, cfg=cfg, first_cfg=first_cfg, later_cfg=later_cfg,
                                   temperature=temperature) or True

    def run(self, arm, prompt, frames, window, seed, correct, t_prime, steps, cfg, arm_only_video, video_dm=None,
            memory=None, **values):
        correct = correct if video_dm is not None else "none"
        state = _state(arm.engine, prompt, frames, window, seed, values, correct=correct, strength=t_prime,
                       steps=int(steps), guidance_scale=cfg)
        corrector = video_dm.engine if video_dm is not None else None
        module = memory.engine if memory is not None else OFF
        placement = bridge.ComfyModels([h.managed for h in (arm, video_dm, memory) if h is not None])
        shared: dict = {}

        def keep_first_window(s: VideoState) -> None:
            if s.open_window == 0 and not s.windows:
                shared["state"] = s

        progress = bridge.progress(frames=state.settings.frames)
        acdc = run_video(state.prompts, arm.engine, corrector, module, state.settings, start=state,
                         placement=placement, progress=progress, on_frame=keep_first_window)
        baseline = acdc
        if arm_only_video and correct != "none":
            start = replace(shared["state"], settings=replace(state.settings, correct="none"))
            baseline = run_video(start.prompts, arm.engine, None, None, start.settings, start=start,
                                 placement=placement, progress=bridge.progress(frames=state.settings.frames))
        columns = [("ARM only", baseline.output_frames()), ("ACDC", acdc.output_frames())]
        marked = [baseline.corrected_flags(), acdc.corrected_flags()]
        if baseline is acdc:
            columns, marked = columns[1:], marked[1:]
        ui = {"images": [bridge.save_animation(side_by_side(columns, marked=marked), "acdc_video")],
              "animated": (True,)}
        return {"ui": ui, "result": (acdc, _frames_batch(acdc.output_frames()), _frames_batch(baseline.output_frames()),
                                     _dm_prompts(acdc))}


NODES = {
    "ACDC_VideoPrompt": (VideoPrompt, "Video Prompt (ACDC)"),
    "ACDC_VideoWindowFrames": (VideoWindowFrames, "ARM Video Window (ACDC)"),
    "ACDC_VideoWindowCorrect": (VideoWindowCorrect, "Video Window Correct (ACDC)"),
    "ACDC_VideoReTokenize": (VideoReTokenize, "Re-Tokenize Window (ACDC)"),
    "ACDC_Video": (ACDCVideo, "ACDC Video (all-in-one)"),
}
