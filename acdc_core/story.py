"""The ACDC loop (arXiv 2410.04721, Sec. 3), one frame at a time.

For frame i with story prompt u_i:
  1. the ARM samples v_i given every earlier (swapped-in) frame and prompt       -> arm.sample_chunk
  2. the VQ decoder turns the tokens into pixels, x_i = D(v_i)                      -> arm.decode
  3. the memory module writes a self-contained DM prompt y_i from y_<i and u_i      -> memory.prompt_for
  4. SDEdit: noise x_i to t' and denoise with the DM conditioned on y_i             -> corrector.correct
     (optional: inpaint a user-painted mask region to fix a physical error)
  5. re-encode with the ARM's own VQ encoder, v~_i = E(x~_i), and put v~_i in the context instead of v_i.
Frames past ``correct_frames`` (the ACDC #k ablation) skip 3-5 and keep v_i.

``step_frame`` is a function from a state to a new state; ``run_story`` folds it over the prompts.
Nothing here knows about ComfyUI: hosts pass a ``progress`` callable that may raise to cancel.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Mapping, Optional

import torch

from .arm.base import ARMBackend
from .devices import Placement
from .errors import InvalidInputError
from .images import resize_to
from .progress import ProgressFn, no_progress
from .state import FrameRecord, StorySettings, StoryState, new_story


@contextmanager
def _timed(seconds: dict, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def correction_size(settings: StorySettings, corrector) -> tuple[int, int]:
    """The (H, W) the DM corrects at: the setting if given, else the DM's native size."""
    return tuple(settings.correction_size) if settings.correction_size else tuple(corrector.native_size)


def prepare_mask(mask: torch.Tensor, size: tuple[int, int], arm_size: tuple[int, int],
                 index: int) -> torch.Tensor:
    """A user mask ([H, W] or [1, H, W], 1 = repaint) as [1, 1, H, W] at the correction size.

    It must match either the corrected frame (what the user painted on) or the ARM frame; an ARM-size
    mask is scaled up with nearest-neighbour sampling. Anything else is an error naming the sizes.
    """
    m = mask.detach().float()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InvalidInputError(
            f"the fix mask of frame {index + 1} must be [H, W] (or [1, H, W]); got shape {tuple(mask.shape)}.")
    hw = tuple(m.shape)
    if hw != tuple(size) and hw != tuple(arm_size):
        raise InvalidInputError(
            f"the fix mask of frame {index + 1} is {hw[0]}x{hw[1]} but the frame is {size[0]}x{size[1]} "
            f"(corrected) or {arm_size[0]}x{arm_size[1]} (ARM); paint the mask on the frame itself.")
    m = m.clamp(0, 1)[None, None]  # [H, W] -> [1, 1, H, W]
    if hw != tuple(size):
        m = torch.nn.functional.interpolate(m, size=size, mode="nearest")
    return m


def validate_inputs(state: StoryState, arm: ARMBackend, corrector, memory, settings: StorySettings,
                    fix_masks: Optional[Mapping[int, torch.Tensor]] = None) -> dict[int, torch.Tensor]:
    """Every check that can fail, run before any model is called. Returns the prepared masks."""
    settings.validate()
    if not state.prompts:
        raise InvalidInputError("the story is empty: give at least one prompt (one line per frame).")
    needs_dm = settings.correct_frames != 0
    if needs_dm and corrector is None:
        raise InvalidInputError(
            "no diffusion model is loaded but frames are to be corrected; load one, or set "
            "correct_frames=0 for the ARM alone.")
    if needs_dm and memory is None:
        raise InvalidInputError("no memory module given; pass MemoryModule(None, MemorySettings(mode='off')) "
                                "to use the raw story prompts.")
    masks: dict[int, torch.Tensor] = {}
    for index, mask in (fix_masks or {}).items():
        if not 0 <= index < len(state.prompts):
            raise InvalidInputError(
                f"a fix mask is given for frame {index + 1} but the story has {len(state.prompts)} frames.")
        if not settings.corrects(index):
            raise InvalidInputError(
                f"frame {index + 1} has a fix mask but is not corrected (correct_frames={settings.correct_frames}).")
        masks[index] = prepare_mask(mask, correction_size(settings, corrector), arm.image_size, index)
    if needs_dm and hasattr(memory, "check"):
        memory.check()   # e.g. an unreachable LLM endpoint fails here, not after the first frame
    return masks


def step_frame(state: StoryState, arm: ARMBackend, corrector, memory, settings: StorySettings, *,
               fix_mask: Optional[torch.Tensor] = None, placement: Optional[Placement] = None,
               progress: ProgressFn = no_progress) -> StoryState:
    """Generate, correct and swap in the next frame; return the new state (``state`` is untouched).

    ``fix_mask`` is a prepared [1, 1, H, W] mask at the correction size (see ``validate_inputs``).
    """
    i = state.next_index
    if i >= len(state.prompts):
        raise InvalidInputError(f"the story has {len(state.prompts)} frames; all are done.")
    place = placement.use if placement is not None else (lambda model: model)
    seconds: dict[str, float] = {}
    arm_seed, dm_seed = settings.seeds(i)
    prompt = state.prompts[i]

    # 1-2. ARM samples v_i with the whole (corrected) story in context; decode x_i = D(v_i).
    place(arm)
    with _timed(seconds, "arm"):
        generator = torch.Generator().manual_seed(arm_seed)
        tokens = arm.sample_chunk(state.context, prompt, settings=settings.sampling, generator=generator,
                                  progress=progress)
    with _timed(seconds, "decode"):
        arm_image = arm.decode(tokens)                       # [1, 3, H, W] in [0, 1]

    if not settings.corrects(i):
        record = FrameRecord(i, prompt, None, arm_image[0], arm_image[0], tokens, tokens, arm_seed, dm_seed,
                             corrected=False, fixed=False, seconds=seconds)
        return state.with_frame(record, tokens)

    # 3. Memory: a self-contained DM prompt y_i.
    with _timed(seconds, "memory"):
        if state.planned_memory is not None:
            memory_prompt = state.planned_memory[i]
        else:
            place(getattr(memory, "backend", None))
            memory_prompt = memory.prompt_for(i, state.prompts, state.memory_prompts)

    # 4. SDEdit at the DM's size, then the optional masked physical fix.
    size = correction_size(settings, corrector)
    place(corrector)
    with _timed(seconds, "correct"):
        corrected = corrector.correct(
            resize_to(arm_image, size), memory_prompt, strength=settings.strength, steps=settings.steps,
            guidance_scale=settings.guidance_scale, seed=dm_seed, negative_prompt=settings.negative_prompt,
            progress=progress)
    fixed = fix_mask is not None and bool(fix_mask.any())
    if fixed:
        with _timed(seconds, "fix"):
            corrected = corrector.correct(
                corrected, settings.fix_prompt or memory_prompt, strength=settings.fix_strength,
                steps=settings.steps, guidance_scale=settings.guidance_scale, seed=dm_seed,
                negative_prompt=settings.negative_prompt, mask=fix_mask, mask_dilate=settings.mask_dilate,
                mask_feather=settings.mask_feather, progress=progress)

    # 5. Re-encode with the ARM's own tokenizer and swap v~_i in for v_i.
    place(arm)
    with _timed(seconds, "encode"):
        new_tokens = arm.encode(resize_to(corrected, arm.image_size))
    record = FrameRecord(i, prompt, memory_prompt, arm_image[0], corrected[0], tokens, new_tokens, arm_seed,
                         dm_seed, corrected=True, fixed=fixed, seconds=seconds)
    return state.with_frame(record, new_tokens)


def plan_memory(state: StoryState, memory, settings: StorySettings,
                placement: Optional[Placement] = None) -> StoryState:
    """For whole-story memory, query the LLM once for every DM prompt; otherwise return ``state``."""
    mode = getattr(getattr(memory, "settings", None), "mode", None)
    if mode != "whole-story" or state.planned_memory is not None or settings.correct_frames == 0:
        return state
    if placement is not None:
        placement.use(getattr(memory, "backend", None))
    return replace(state, planned_memory=tuple(memory.prompts_for_story(state.prompts)))


def run_story(prompts, arm: ARMBackend, corrector, memory, settings: StorySettings = StorySettings(), *,
              fix_masks: Optional[Mapping[int, torch.Tensor]] = None, start: Optional[StoryState] = None,
              placement: Optional[Placement] = None, progress: ProgressFn = no_progress) -> StoryState:
    """Run ACDC over a whole story (or resume ``start``) and return the final state.

    ``fix_masks`` maps a 0-based frame index to a mask ([H, W], 1 = repaint) for the physical fix.
    """
    state = start if start is not None else new_story(prompts)
    masks = validate_inputs(state, arm, corrector, memory, settings, fix_masks)
    state = plan_memory(state, memory, settings, placement)
    total = len(state.prompts)
    while not state.done:
        progress("frame", state.next_index, total)
        state = step_frame(state, arm, corrector, memory, settings, fix_mask=masks.get(state.next_index),
                           placement=placement, progress=progress)
    progress("frame", total, total)
    return state
