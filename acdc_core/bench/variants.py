"""The paper's variants of a story run (Tables 1-2), over the engine's one story loop.

  ARM only          correct_frames=0: the ARM's frames, nothing corrected
  DM alone          no ARM: the DM draws every frame from scratch (t' = 1, from a mid-grey frame) with the memory's
                    self-contained prompt (the paper's "SD1.5 alone" row)
  ACDC #2           only the first two frames corrected (memory on)
  ACDC w/o memory   every frame corrected, the DM gets the raw story sentence
  ACDC              every frame corrected, the DM gets the memory's self-contained prompt

Every variant runs a story with the story's own seed, so frame 1 of the ARM is the same in all that use it.

The video variants (Table 3 and its t' study), over the engine's video loop:
  ARM only                   the ARM's N frames, nothing corrected (``correct="none"``)
  ACDC (first window)        the first window of L frames corrected, generation continues from it (the paper)
  ACDC (every window)        every window corrected as it closes
  ACDC (first window) t'=x   the paper's setting at another t' (the sweep)
Every video variant runs an item with the same seeds and the same first window: the ARM writes frames 1..L once,
and each variant goes on from that state (``run_video_variants``), so frames 1..L of the ARM are identical in all of
them and every difference after them is the correction's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from ..cost import stage
from ..errors import InvalidInputError
from ..memory import MemoryModule, MemorySettings
from ..progress import ProgressFn, no_progress
from ..state import FrameRecord, StorySettings, StoryState, new_story
from ..story import run_story
from ..video import VideoSettings, VideoState, generate_frame, new_video, run_video

__all__ = ["Variant", "VARIANTS", "variant_named", "slug", "run_variant", "run_dm_alone", "context_images",
           "VideoVariant", "VIDEO_VARIANTS", "SWEEP", "video_variant_named", "run_video_variants", "context_frames"]


@dataclass(frozen=True)
class Variant:
    name: str
    correct_frames: Optional[int]   # None = all, 0 = ARM only
    memory: bool
    arm: bool = True                # False: the DM alone draws every frame


VARIANTS: tuple[Variant, ...] = (
    Variant("ARM only", 0, False),
    Variant("DM alone", None, True, arm=False),
    Variant("ACDC #2", 2, True),
    Variant("ACDC w/o memory", None, False),
    Variant("ACDC", None, True),
)


def slug(name: str) -> str:
    """A variant's folder name: "ACDC w/o memory" -> "acdc-w-o-memory", "ACDC #2" -> "acdc-2"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def variant_named(name: str) -> Variant:
    """The variant called ``name`` (its name or its folder name; "ACDC #k" for any k >= 1)."""
    for v in VARIANTS:
        if name in (v.name, slug(v.name)):
            return v
    m = re.fullmatch(r"(?:ACDC #|acdc-)(\d+)", name.strip())
    if m and int(m.group(1)) >= 1:
        return Variant(f"ACDC #{int(m.group(1))}", int(m.group(1)), True)
    raise InvalidInputError(f"unknown variant {name!r}; choose from {', '.join(v.name for v in VARIANTS)} "
                            "(or ACDC #k for any k).")


def context_images(state: StoryState, arm) -> list:
    """What went back into the ARM's context for every frame: a corrected frame re-encoded with the ARM's
    tokenizer, decoded (the ARM's own frame where nothing was corrected)."""
    return [arm.decode(r.tokens_after)[0] if r.corrected or r.fixed else r.arm_image for r in state.records]


def _memory(variant: Variant, backend, settings: MemorySettings, corrector) -> MemoryModule:
    mode = settings.mode if variant.memory else "off"
    return MemoryModule(backend if variant.memory else None, replace(settings, mode=mode), fit=corrector.fit_prompt)


def run_variant(prompts: Sequence[str], variant: Variant, arm, corrector, memory_backend, settings: StorySettings,
                memory_settings: MemorySettings = MemorySettings(), progress: ProgressFn = no_progress
                ) -> StoryState:
    """One story under one variant. ``settings.seed`` should be the story's own fixed seed."""
    if not variant.arm:
        return run_dm_alone(prompts, corrector, _memory(variant, memory_backend, memory_settings, corrector),
                            settings, progress=progress)
    uses_dm = variant.correct_frames != 0
    memory = _memory(variant, memory_backend, memory_settings, corrector) if uses_dm else None
    return run_story(prompts, arm, corrector if uses_dm else None, memory,
                     replace(settings, correct_frames=variant.correct_frames), progress=progress)


def run_dm_alone(prompts: Sequence[str], corrector, memory: MemoryModule, settings: StorySettings, *,
                 progress: ProgressFn = no_progress) -> StoryState:
    """Every frame drawn by the DM alone: SDEdit at t' = 1 of a mid-grey frame (the whole schedule runs, so nothing
    of the grey survives in a zero-terminal-SNR model and almost nothing in SD's) with the memory's prompt for it,
    with the frame's DM seed. The records hold the DM's frame as both the "ARM" and the corrected image, and no
    tokens."""
    state = new_story(prompts)
    height, width = tuple(settings.correction_size) if settings.correction_size else tuple(corrector.native_size)
    grey = torch.full((1, 3, height, width), 0.5)
    none = torch.zeros(1, 0, dtype=torch.long)
    earlier: list[str] = []
    for i, prompt in enumerate(state.prompts):
        progress("frame", i, len(state.prompts))
        arm_seed, dm_seed = settings.seeds(i)
        with stage("memory") as took_memory:
            answer = memory.answer_for(i, state.prompts, earlier)
        text = corrector.fit_prompt(answer.text)
        with stage("dm") as took:
            image = corrector.correct(grey, text, strength=1.0, steps=settings.steps,
                                      guidance_scale=settings.guidance_scale, seed=dm_seed,
                                      negative_prompt=settings.negative_prompt, scheduler=settings.scheduler,
                                      progress=progress)
        earlier.append(text)
        record = FrameRecord(i, prompt, text, image[0], image[0], none, none, arm_seed, dm_seed, corrected=True,
                             fixed=False, seconds={"memory": took_memory[0], "dm": took[0]},
                             memory_fallback=answer.fallback)
        state = replace(state, records=state.records + (record,))
    progress("frame", len(state.prompts), len(state.prompts))
    return state


# -- video ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoVariant:
    name: str
    correct: str                       # "none", "first" or "all" (VideoSettings.correct)
    strength: Optional[float] = None   # t'; None: the settings' own


VIDEO_VARIANTS: tuple[VideoVariant, ...] = (
    VideoVariant("ARM only", "none"),
    VideoVariant("ACDC (first window)", "first"),
    VideoVariant("ACDC (every window)", "all"),
)
SWEEP: tuple[VideoVariant, ...] = (
    VideoVariant("ACDC (first window) t'=0.4", "first", 0.4),
    VideoVariant("ACDC (first window) t'=0.6", "first", 0.6),
)


def video_variant_named(name: str) -> VideoVariant:
    """The video variant called ``name`` (its name or folder name; "ACDC (first window) t'=x" for any t' in (0, 1])."""
    for v in VIDEO_VARIANTS + SWEEP:
        if name in (v.name, slug(v.name)):
            return v
    m = re.fullmatch(r"ACDC \((first|every) window\) t'=([0-9.]+)", name.strip())
    if m:
        strength = float(m.group(2))
        if 0 < strength <= 1:
            return VideoVariant(f"ACDC ({m.group(1)} window) t'={strength:g}",
                                "first" if m.group(1) == "first" else "all", strength)
    raise InvalidInputError(f"unknown video variant {name!r}; choose from "
                            f"{', '.join(v.name for v in VIDEO_VARIANTS + SWEEP)} (or any t' in (0, 1]).")


def _no_memory() -> MemoryModule:
    return MemoryModule(None, MemorySettings(mode="off"))


def run_video_variants(prompts, arm, corrector, settings: VideoSettings, variants: Sequence[VideoVariant] = VIDEO_VARIANTS,
                       *, seed: int = 0, memory=None, progress: ProgressFn = no_progress) -> dict[str, VideoState]:
    """Every variant on one video with ``seed``: the first window's frames are written once and shared. ``memory``:
    the memory that rewrites each window's prompt (None: the prompt as given, e.g. a toy clip's, which is
    self-contained)."""
    base = replace(settings, seed=seed, dm_seed=None, correct="none")
    state = new_video(prompts, base)
    for i in range(base.window):
        progress("frame", i, base.frames)
        state = generate_frame(state, arm, progress=progress)
    out = {}
    for v in variants:
        s = replace(base, correct=v.correct, strength=v.strength if v.strength is not None else base.strength)
        out[v.name] = run_video(prompts, arm, corrector if v.correct != "none" else None,
                                memory if memory is not None else _no_memory(), s,
                                start=replace(state, settings=s), progress=progress)
    return out


def context_frames(state: VideoState, arm) -> list[torch.Tensor]:
    """The frames that went back into the ARM's context: corrected windows re-encoded and decoded."""
    frames: list[torch.Tensor] = []
    for r in state.windows:
        frames += list(arm.decode(r.tokens_after)) if r.corrected else list(r.arm_frames)
    return frames
