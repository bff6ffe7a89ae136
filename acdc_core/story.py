"""The ACDC loop (arXiv 2410.04721, Sec. 3), one frame at a time, as five public steps.

For frame i with story prompt u_i:
  1. the ARM samples v_i given every earlier (swapped-in) frame and prompt       -> generate
     (optional: the ARM fills a painted region of v_i again, keeping the rest)     -> inpaint_tokens
  2. the VQ decoder turns the tokens into pixels, x_i = D(v_i)                      -> decode
  3. the memory module writes a self-contained DM prompt y_i from y_<i and u_i      -> memory_prompt
  4. SDEdit: noise x_i to t' and denoise with the DM conditioned on y_i             -> correct
     (optional: inpaint a user-painted mask region to fix a physical error)         -> fix
  5. re-encode with the ARM's own VQ encoder, v~_i = E(x~_i), and put v~_i in the
     context instead of v_i; the frame's record is written                          -> reencode
Frames past ``correct_frames`` (the ACDC #k ablation) skip 3-4 and keep v_i.

Each step is a function from values to values: a ``Frame`` (``state.py``) carries what is known about the
frame from step to step, and ``reencode`` turns it into the next ``StoryState``. ``step_frame`` composes
the five for one frame and ``run_story`` folds it over the prompts (``run_stories``: several stories, the ARM's step
decoded for all of them in one batch by ``generate_many``); a host that wires the steps itself
(ComfyUI's stage nodes) calls the same functions, so the two cannot drift apart.
Nothing here knows about ComfyUI: hosts pass a ``progress`` callable that may raise to cancel.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Mapping, Optional, Sequence

import torch

from .arm.base import ARMBackend, ARMContext
from .arm.cache import PaddedBatch
from .correct.base import Corrector, check_scheduler
from .correct.schedule import check_strength
from .cost import stage
from .devices import Placement
from .errors import InvalidInputError
from .images import resize_to
from .memory.module import Memory, MemoryAnswer
from .progress import ProgressFn, no_progress
from .state import (FIX_STRENGTH, Frame, FrameRecord, StorySettings, StoryState, describe_correct_frames,
                    frame_ranges, frame_seed, new_story)

logger = logging.getLogger("acdc_core.story")


class _Stay:
    """No placement: every model stays where it is."""

    @staticmethod
    def use(model) -> object:
        return model


def correction_size(settings: StorySettings, corrector: Corrector) -> tuple[int, int]:
    """The (H, W) the DM corrects at: the setting if given, else the DM's native size."""
    return tuple(settings.correction_size) if settings.correction_size else tuple(corrector.native_size)


# --------------------------------------------------------------------------------------------------------
# The five steps
# --------------------------------------------------------------------------------------------------------

def generate(state: StoryState, arm: ARMBackend, settings: StorySettings, *,
             progress: ProgressFn = no_progress) -> Frame:
    """Step 1: the ARM samples the next frame's tokens v_i with the whole (corrected) story in its context."""
    frame, context = _next_frame(state, arm, settings)
    with stage("arm") as took:
        tokens = arm.sample_chunk(context, state.prompts[frame.index], settings=settings.sampling,
                                  generator=torch.Generator().manual_seed(frame.arm_seed), progress=progress)
    return replace(frame, tokens=tokens).timed("arm", took[0])


def _next_frame(state: StoryState, arm: ARMBackend, settings: StorySettings) -> tuple[Frame, ARMContext]:
    """The next frame before step 1 (no tokens yet: its index, ARM seed and the frames it sees) and its context."""
    i = state.next_index
    if state.done:
        raise InvalidInputError(f"the story has {len(state.prompts)} frame(s); all are made.")
    settings.sampling.validate()
    seen = arm.fit_context(state.context, state.prompts[i])
    if len(seen) < len(state.context):
        logger.warning("frame %d: the story no longer fits the ARM's context window; it sees frames %s (README: "
                       "long stories).", i + 1, frame_ranges(seen))
    frame = Frame(state=state, index=i, tokens=None, arm_seed=settings.seeds(i)[0], context_frames=seen)
    return frame, _seen_context(state, seen)


def generate_many(states: Sequence[StoryState], arm: ARMBackend, settings: Sequence[StorySettings], *,
                  batch: Optional[PaddedBatch] = None, progress: ProgressFn = no_progress) -> list[Frame]:
    """Step 1 for several stories at once: each story's next frame, as ``generate`` makes it (the story's own seeds
    and context), the ARM's decoding batched over the stories where the family can (``sample_chunks``; ``batch``
    carries its cache from frame to frame) and one story after another where it cannot (Show-o)."""
    if len(states) != len(settings):
        raise InvalidInputError(f"generate_many needs one StorySettings per story (got {len(states)} stories and "
                                f"{len(settings)} settings).")
    if not getattr(arm, "batch_capable", False):
        return [generate(state, arm, s, progress=progress) for state, s in zip(states, settings)]
    if len({s.sampling for s in settings}) != 1:
        raise InvalidInputError("stories decoded in one batch share the ARM's sampling settings (guidance, "
                                "temperature, top-k, top-p); give them the same, or run them apart.")
    frames, contexts = zip(*(_next_frame(state, arm, s) for state, s in zip(states, settings)))
    with stage("arm") as took:
        tokens = arm.sample_chunks(list(contexts), [f.state.prompts[f.index] for f in frames],
                                   settings=settings[0].sampling, batch=batch, progress=progress,
                                   generators=[torch.Generator().manual_seed(f.arm_seed) for f in frames])
    share = took[0] / len(frames)           # each story's share of the batch's time
    return [replace(f, tokens=t).timed("arm", share) for f, t in zip(frames, tokens)]


def _seen_context(state: StoryState, seen: Optional[tuple[int, ...]]) -> ARMContext:
    """The context the ARM conditions a frame on: the story's, or the frames ``fit_context`` kept of it."""
    if seen is None or len(seen) == len(state.context):
        return state.context
    return state.context.select(seen)


def check_token_inpainting(arm: ARMBackend) -> None:
    """A clear error unless the ARM can fill part of a frame again (``inpaints_tokens``: Show-o's MaskGIT)."""
    if not getattr(arm, "inpaints_tokens", False):
        raise InvalidInputError(
            f"the {arm.family} ARM cannot re-generate a region of a frame: it writes a frame token by token, each "
            "after the ones before, so the codes after a region depend on it. Token-level inpainting needs an ARM "
            "that fills a frame in parallel (Show-o); repaint the region with the diffusion model instead "
            "(Inpaint Physical Fix, --mask).")


def token_cells(mask: torch.Tensor, arm: ARMBackend, index: int) -> torch.Tensor:
    """A mask ([H, W] or [1, H, W] at the ARM's frame size, 1 = re-generate) -> ``[tokens_per_image]`` bool: the
    codes whose cell of the frame has a pixel of at least 0.5 in it."""
    m = mask.detach().float()
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    height, width = arm.image_size
    grid = round(arm.tokens_per_image ** 0.5)
    if m.ndim != 2 or tuple(m.shape) != (height, width):
        raise InvalidInputError(
            f"the token mask of frame {index + 1} is {'x'.join(map(str, m.shape))} but the ARM's frame is "
            f"{height}x{width}; paint it on the ARM's frame (before SDEdit Correct resizes it).")
    if grid * grid != arm.tokens_per_image or height % grid or width % grid:
        raise InvalidInputError(f"the {arm.family} ARM's {arm.tokens_per_image} codes are not a square grid over "
                                f"its {height}x{width} frame; token masks need one.")
    return (torch.nn.functional.max_pool2d(m[None, None], height // grid)[0, 0] >= 0.5).flatten()


def inpaint_tokens(frame: Frame, arm: ARMBackend, settings: StorySettings, cells: Optional[torch.Tensor], *,
                   progress: ProgressFn = no_progress) -> Frame:
    """Optional, after step 1: token-level inpainting by the ARM itself. The frame's codes in ``cells``
    (``token_cells``) are masked again and filled by the ARM with the same story and prompt in its context and the
    frame's own ARM seed; every other code is kept exactly. ``cells`` None or empty returns the frame as it is."""
    if cells is None or not bool(cells.any()):
        return frame
    check_token_inpainting(arm)
    known = torch.where(cells, torch.full_like(frame.tokens[0], -1), frame.tokens[0])
    with stage("arm_inpaint") as took:
        tokens = arm.sample_chunk(_seen_context(frame.state, frame.context_frames), frame.state.prompts[frame.index],
                                  settings=settings.sampling, generator=torch.Generator().manual_seed(frame.arm_seed),
                                  progress=progress, known=known)
    return frame.timed("arm_inpaint", took[0], tokens=tokens, arm_image=None, image=None)


def decode(frame: Frame, arm: ARMBackend) -> Frame:
    """Step 2: x_i = D(v_i), the ARM's own VQ decoder (a frame already decoded is returned as it is)."""
    if frame.arm_image is not None:
        return frame
    with stage("decode") as took:
        arm_image = arm.decode(frame.tokens)                       # [1, 3, H, W] in [0, 1]
    return frame.timed("decode", took[0], arm_image=arm_image, image=arm_image)


def memory_prompt(state: StoryState, memory: Memory, corrector: Optional[Corrector] = None) -> MemoryAnswer:
    """Step 3: the DM prompt y_i of the story's next frame, from the earlier DM prompts and u_i (fitted to the
    corrector's text window when one is given), marked where the LLM gave nothing usable and the story sentence
    stands in (``fallback``). Whole-story memory answers from its one planned query."""
    i = state.next_index
    if state.done:
        raise InvalidInputError(f"the story has {len(state.prompts)} frame(s); all are made.")
    if any(not r.corrected for r in state.records):
        # An earlier frame has no DM prompt (ACDC #k left it alone), so per-frame memory has no history to write
        # from: the story line stands in, marked. Under ACDC #k this frame is left alone too and the prompt is never
        # used (a host that asks anyway: ComfyUI's --cache-none evaluates eagerly), so no LLM query is made.
        return MemoryAnswer(state.prompts[i], fallback=True)
    if state.planned_memory is not None:
        answer = state.planned_memory[i]
    else:
        answer = memory.answer_for(i, state.prompts, state.memory_prompts)
    return MemoryAnswer(corrector.fit_prompt(answer.text), answer.fallback) if corrector is not None else answer


def correct(frame: Frame, corrector: Corrector, settings: StorySettings, prompt: str, *,
            progress: ProgressFn = no_progress) -> Frame:
    """Step 4: SDEdit the frame at the DM's size with ``prompt`` (y_i) — or, for a frame ACDC #k leaves alone
    (``settings.corrects``), record that it stays as the ARM made it."""
    if frame.image is None:
        raise InvalidInputError(f"frame {frame.number} has no pixels to correct yet: decode its tokens first.")
    if not settings.corrects(frame.index):
        return replace(frame, corrected=False)
    dm_seed = settings.seeds(frame.index)[1]
    with stage("correct") as took:
        image = corrector.correct(
            resize_to(frame.image, correction_size(settings, corrector)), prompt, strength=settings.strength,
            steps=settings.steps, guidance_scale=settings.guidance_scale, seed=dm_seed,
            negative_prompt=settings.negative_prompt, scheduler=settings.scheduler, progress=progress)
    return frame.timed("correct", took[0], image=image, corrected=True, dm_seed=dm_seed, memory_prompt=prompt)


def fix_seed(frame: Frame, settings: StorySettings) -> int:
    """The seed of the physical fix of ``frame``: ``settings.fix_seed`` by the frame rule, else the frame's DM
    seed (that of its correction), else the settings' DM seed of the frame."""
    if settings.fix_seed is not None:
        return frame_seed(settings.fix_seed, frame.index)
    return frame.dm_seed if frame.dm_seed is not None else settings.seeds(frame.index)[1]


def fix(frame: Frame, corrector: Corrector, settings: StorySettings, mask: Optional[torch.Tensor], *,
        prompt: Optional[str] = None, progress: ProgressFn = no_progress) -> Frame:
    """Step 4, optional: inpaint the masked region of the frame (``mask`` [1, 1, H, W] or [1, H, W] at the frame's
    size, 1 = repaint; see ``prepare_mask``) with ``settings.fix_prompt``, else ``prompt``, else the frame's DM
    prompt. An empty mask (or None) returns the frame unchanged. A frame ACDC #k leaves alone cannot be fixed."""
    if mask is None or not bool((mask > 0).any()):
        return frame
    if frame.corrected is False:
        raise InvalidInputError(
            f"frame {frame.number} has a fix mask but is not corrected: correct_frames (ACDC #k) leaves it as the "
            f"ARM made it. Correct more frames, or paint the mask on a corrected frame.")
    if frame.image is None:
        raise InvalidInputError(f"frame {frame.number} has no pixels to fix yet: decode its tokens first.")
    text = (settings.fix_prompt or "").strip() or (prompt or "").strip() or (frame.memory_prompt or "").strip()
    if not text:
        raise InvalidInputError(
            f"frame {frame.number} has a mask to fix but no prompt: give a fix prompt or the frame's DM prompt.")
    with stage("fix") as took:
        image = corrector.correct(
            frame.image, text, strength=settings.fix_strength, steps=settings.steps,
            guidance_scale=settings.guidance_scale, seed=fix_seed(frame, settings),
            negative_prompt=settings.negative_prompt, scheduler=settings.scheduler, mask=mask,
            mask_dilate=settings.mask_dilate, mask_feather=settings.mask_feather, progress=progress)
    return frame.timed("fix", took[0], image=image, fixed=True)


def reencode(frame: Frame, arm: ARMBackend, *, memory_prompt: Optional[str] = None) -> StoryState:
    """Step 5: v~_i = E(x~_i) with the ARM's own tokenizer, swapped into the context in place of v_i, and the
    frame's record; returns the story with this frame added (the frame's own ``state`` is untouched).

    A frame ACDC #k left alone keeps v_i. A frame no corrector decided on (``corrected`` None: the host
    corrected the pixels its own way) is re-encoded from its ``image`` like a corrected one; ``memory_prompt``
    records its DM prompt where the frame does not know it.
    """
    frame = decode(frame, arm)
    if frame.corrected is False:
        new_tokens, corrected_image, prompt = frame.tokens, frame.arm_image, None
    else:
        with stage("encode") as took:
            new_tokens = arm.encode(resize_to(frame.image, arm.image_size))
        frame = frame.timed("encode", took[0])
        corrected_image = frame.image
        prompt = frame.memory_prompt if frame.memory_prompt is not None else memory_prompt
    record = FrameRecord(frame.index, frame.prompt, prompt, frame.arm_image[0], corrected_image[0].float(),
                         frame.tokens, new_tokens, frame.arm_seed, frame.dm_seed, corrected=frame.corrected is not False,
                         fixed=frame.fixed, seconds=frame.stage_seconds(), context_frames=frame.context_frames,
                         memory_fallback=frame.memory_fallback)
    return frame.state.with_frame(record, new_tokens)


# --------------------------------------------------------------------------------------------------------
# One frame, a whole story
# --------------------------------------------------------------------------------------------------------

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


def validate_inputs(state: StoryState, arm: ARMBackend, corrector: Optional[Corrector], memory: Optional[Memory],
                    settings: StorySettings, fix_masks: Optional[Mapping[int, torch.Tensor]] = None,
                    token_masks: Optional[Mapping[int, torch.Tensor]] = None
                    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Every check that can fail, run before any model is called. Returns the prepared fix masks and token cells."""
    settings.validate()
    if not state.prompts:
        raise InvalidInputError("the story is empty: give at least one prompt (one line per frame).")
    settings.check_seeds(len(state.prompts))
    for index, prompt in enumerate(state.prompts):
        try:
            arm.fit_context(ARMContext(), prompt)       # each frame's prompt can be a chunk at all
        except InvalidInputError as error:
            raise InvalidInputError(f"frame {index + 1}: {error}") from None
    needs_dm = settings.correct_frames != 0
    if needs_dm and corrector is None:
        raise InvalidInputError(
            "no diffusion model is loaded but frames are to be corrected; load one, or set "
            "correct_frames to none (0) for the ARM alone.")
    if needs_dm and memory is None:
        raise InvalidInputError("no memory module given; pass MemoryModule(None, MemorySettings(mode='off')) "
                                "to use the raw story prompts.")
    if needs_dm:
        check_strength(settings.strength, settings.steps, "strength (t')")
    if fix_masks:
        check_strength(settings.fix_strength, settings.steps, FIX_STRENGTH)
    if needs_dm:
        check_scheduler(settings.scheduler, corrector.schedulers)
        multiple = int(getattr(corrector, "image_multiple", 1))
        if settings.correction_size and any(side % multiple for side in settings.correction_size):
            height, width = settings.correction_size
            raise InvalidInputError(
                f"correction_size {height}x{width} does not suit this diffusion model: its sides must be multiples "
                f"of {multiple} (e.g. {max(multiple, height // multiple * multiple)}).")
    masks: dict[int, torch.Tensor] = {}
    for index, mask in (fix_masks or {}).items():
        if not 0 <= index < len(state.prompts):
            raise InvalidInputError(
                f"a fix mask is given for frame {index + 1} but the story has {len(state.prompts)} frames.")
        if not settings.corrects(index):
            raise InvalidInputError(
                f"frame {index + 1} has a fix mask but is not corrected (correct_frames = "
                f"{describe_correct_frames(settings.correct_frames)}).")
        masks[index] = prepare_mask(mask, correction_size(settings, corrector), arm.image_size, index)
    cells: dict[int, torch.Tensor] = {}
    for index, mask in (token_masks or {}).items():
        if not 0 <= index < len(state.prompts):
            raise InvalidInputError(
                f"a token mask is given for frame {index + 1} but the story has {len(state.prompts)} frames.")
        check_token_inpainting(arm)
        cells[index] = token_cells(mask, arm, index)
    if needs_dm:
        memory.check()   # e.g. an unreachable LLM endpoint fails here, not after the first frame
    return masks, cells


def step_frame(state: StoryState, arm: ARMBackend, corrector: Optional[Corrector], memory: Optional[Memory],
               settings: StorySettings, *, fix_mask: Optional[torch.Tensor] = None,
               cells: Optional[torch.Tensor] = None, placement: Optional[Placement] = None,
               progress: ProgressFn = no_progress) -> StoryState:
    """Generate, correct and swap in the next frame; return the new state (``state`` is untouched).

    ``fix_mask`` is a prepared [1, 1, H, W] mask at the correction size, ``cells`` the codes the ARM fills
    again (see ``validate_inputs``).
    """
    (placement or _Stay).use(arm)
    frame = generate(state, arm, settings, progress=progress)                       # 1
    return finish_frame(frame, arm, corrector, memory, settings, fix_mask=fix_mask, cells=cells, placement=placement,
                        progress=progress)


def finish_frame(frame: Frame, arm: ARMBackend, corrector: Optional[Corrector], memory: Optional[Memory],
                 settings: StorySettings, *, fix_mask: Optional[torch.Tensor] = None,
                 cells: Optional[torch.Tensor] = None, placement: Optional[Placement] = None,
                 progress: ProgressFn = no_progress) -> StoryState:
    """Steps 2-5 of a frame step 1 made: ``step_frame`` after ``generate`` (and ``run_stories`` after
    ``generate_many``)."""
    state = frame.state
    place = (placement or _Stay).use
    frame = decode(inpaint_tokens(frame, arm, settings, cells, progress=progress), arm)          # 2
    if settings.corrects(frame.index):
        place(memory)
        with stage("memory") as took:
            answer = memory_prompt(state, memory, corrector)                         # 3
        frame = frame.timed("memory", took[0], memory_fallback=answer.fallback)
        place(corrector)
        frame = correct(frame, corrector, settings, answer.text, progress=progress)  # 4
        frame = fix(frame, corrector, settings, fix_mask, progress=progress)
    else:
        frame = replace(frame, corrected=False)                                      # ACDC #k: keep v_i
    place(arm)
    return reencode(frame, arm)                                                      # 5


def plan_memory(state: StoryState, memory: Optional[Memory], settings: StorySettings,
                placement: Optional[Placement] = None) -> StoryState:
    """For whole-story memory, query the LLM once for every DM prompt; otherwise return ``state``."""
    if memory is None or memory.mode != "whole-story" or state.planned_memory is not None \
            or settings.correct_frames == 0:
        return state
    (placement or _Stay).use(memory)
    return replace(state, planned_memory=tuple(memory.answers_for_story(state.prompts)))


def run_story(prompts, arm: ARMBackend, corrector: Optional[Corrector], memory: Optional[Memory],
              settings: StorySettings = StorySettings(), *, fix_masks: Optional[Mapping[int, torch.Tensor]] = None,
              token_masks: Optional[Mapping[int, torch.Tensor]] = None, start: Optional[StoryState] = None, placement: Optional[Placement] = None,
              progress: ProgressFn = no_progress,
              on_frame: Optional[Callable[[StoryState], None]] = None) -> StoryState:
    """Run ACDC over a whole story (or resume ``start``) and return the final state.

    ``fix_masks`` maps a 0-based frame index to a mask ([H, W], 1 = repaint) for the physical fix;
    ``token_masks`` likewise to a mask at the ARM's size of the codes the ARM fills again (``inpaint_tokens``).
    ``on_frame(state)`` is called as each frame is done (the CLI writes the frame to disk there).
    """
    state = start if start is not None else new_story(prompts)
    masks, cells = validate_inputs(state, arm, corrector, memory, settings, fix_masks, token_masks)
    state = plan_memory(state, memory, settings, placement)
    total = len(state.prompts)
    while not state.done:
        progress("frame", state.next_index, total)
        state = step_frame(state, arm, corrector, memory, settings, fix_mask=masks.get(state.next_index),
                           cells=cells.get(state.next_index), placement=placement, progress=progress)
        if on_frame is not None:
            on_frame(state)
    progress("frame", total, total)
    return state


def run_stories(stories: Sequence[Sequence[str]], arm: ARMBackend, corrector: Optional[Corrector],
                memory: Optional[Memory], settings: "StorySettings | Sequence[StorySettings]" = StorySettings(), *,
                placement: Optional[Placement] = None, progress: ProgressFn = no_progress,
                on_frame: Optional[Callable[[int, StoryState], None]] = None) -> list[StoryState]:
    """Run ACDC over several stories, frame index by frame index, with the ARM's step 1 decoded for all of them in one
    batch (``generate_many``): throughput for benchmarks (several stories, or one story under several seeds). Every
    story gets what ``run_story`` gives it alone with the same settings (``settings``: one for all, or one per story,
    e.g. seeds apart); the rest of each frame (steps 2-5) runs story by story. Each story's ARM seconds are its share
    of the batch's. ``on_frame(k, state)`` is called as story k finishes a frame."""
    per_story = [settings] * len(stories) if isinstance(settings, StorySettings) else list(settings)
    if len(per_story) != len(stories):
        raise InvalidInputError(f"run_stories got {len(stories)} stories but {len(per_story)} settings; give one for "
                                "all, or one per story.")
    states = []
    for k, (prompts, s) in enumerate(zip(stories, per_story)):
        try:
            states.append(new_story(prompts))
            validate_inputs(states[-1], arm, corrector, memory, s)
        except InvalidInputError as error:
            raise InvalidInputError(f"story {k + 1}: {error}") from None
    states = [plan_memory(state, memory, s, placement) for state, s in zip(states, per_story)]
    batch, total = PaddedBatch(), max(len(state.prompts) for state in states)
    for index in range(total):
        progress("frame", index, total)
        active = [k for k, state in enumerate(states) if not state.done]
        (placement or _Stay).use(arm)
        frames = generate_many([states[k] for k in active], arm, [per_story[k] for k in active], batch=batch,
                               progress=progress)
        for k, frame in zip(active, frames):
            states[k] = finish_frame(frame, arm, corrector, memory, per_story[k], placement=placement,
                                     progress=progress)
            if on_frame is not None:
                on_frame(k, states[k])
    progress("frame", total, total)
    return states
