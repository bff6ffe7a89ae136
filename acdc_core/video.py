"""Video ACDC (arXiv 2410.04721, Sec. 4.2, Eq. 4-6): the story loop's sibling for an ARM that writes video.

The ARM writes N frames one after another, every frame with all the frames before it in its context (frames as
chunks, ``arm/base.py``). The frames fall into windows of L: ``[0, L), [L, 2L), ...`` (the last one shorter when L
does not divide N). When a window's last frame is made, and the window is to be corrected:

  1. decode the window's tokens with the ARM's VQ decoder                       -> ``decode_window``
  2. the memory module writes the window's DM prompt                            -> ``window_prompt``
  3. SDEdit the window at once with a video DM (t' in [0.4, 0.6] in the paper)  -> ``correct_window``
  4. re-encode every frame with the ARM's own tokenizer and swap the window into
     the ARM's context in place of what the ARM wrote; record the window         -> ``swap_window``

``close_window`` composes the four for the window whose frames are all made; ``run_video`` alternates
``generate_frame`` and ``close_window``. A host that wires the steps itself (ComfyUI's video nodes) calls the
same functions.

and generation resumes from the corrected window. ``correct``: ``"first"`` corrects only the first window (the
paper: N = 32, L = 16), ``"all"`` every window, ``"none"`` is the ARM alone. Frame 1 and later frames are sampled
apart (the paper, after LWM: CFG 5 and top-k 8192 for frame 1, CFG 1 and top-k 1000 after; ``VideoSettings``
defaults to the ARM's own, e.g. an LWM folder's ``video_sampling``).

Prompts: one prompt for the video, or one per window. The ARM writes a window whose prompt is the previous
window's as a continuation of the same video and starts a new chunk (its own text) where the prompt changes; the
memory module reads the window prompts as a story (window w's DM prompt from the earlier windows' and its own), so
one prompt gives one DM prompt for every window.

Seeds: frame k (0-based) samples the ARM with ``frame_seed(seed, k)``; window w corrects with
``frame_seed(dm_seed, w)`` (``dm_seed`` None: ``seed``). Every value is frozen: each step returns a new
``VideoState`` and leaves the one it was given as it was (a host may branch from any state, e.g. run ARM-only
from the state before the first correction). Nothing here knows about ComfyUI; ``progress`` may raise to cancel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from .arm.base import ARMBackend, ARMContext, SamplingSettings, check_video
from .correct.base import check_scheduler
from .correct.schedule import check_range, check_strength
from .devices import Placement
from .errors import MAX_SEED, InvalidInputError, check_number, check_seed
from .images import resize_to
from .memory.module import Memory, MemoryAnswer
from .progress import ProgressFn, no_progress
from .state import frame_ranges, frame_seed
from .cost import stage
from .story import _Stay, correction_size

logger = logging.getLogger("acdc_core.video")

CORRECT_CHOICES = ("first", "all", "none")


@dataclass(frozen=True)
class VideoSettings:
    """Everything that decides a video's frames apart from the models and the prompts.

    ``frames`` is N, ``window`` L (N > L). ``first_sampling`` / ``later_sampling``: the ARM's sampling of frame 1 and
    of every later frame; None takes the ARM's (``default_video_sampling``, else its ``default_sampling``).
    ``strength`` (t'), ``steps``, ``guidance_scale``, ``negative_prompt`` and ``scheduler`` are the video DM's, as for
    stories (``state.StorySettings``); ``correction_size`` (H, W) the size the DM corrects at (None: its native size).
    """

    frames: int = 32
    window: int = 16
    correct: str = "first"
    first_sampling: Optional[SamplingSettings] = None
    later_sampling: Optional[SamplingSettings] = None
    strength: float = 0.5
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    scheduler: str = "ddim"
    correction_size: Optional[tuple[int, int]] = None
    seed: int = 0
    dm_seed: Optional[int] = None

    def validate(self) -> "VideoSettings":
        for name in ("frames", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}.")
        if self.frames <= self.window:
            raise InvalidInputError(
                f"a video of {self.frames} frame(s) with a window of {self.window} has nothing to continue after the "
                f"window: give more frames than the window (the paper: 32 frames, a window of 16), or a smaller "
                f"window.")
        if self.correct not in CORRECT_CHOICES:
            raise InvalidInputError(f"correct must be one of {', '.join(CORRECT_CHOICES)} (which windows the DM "
                                    f"corrects); got {self.correct!r}.")
        for sampling in (self.first_sampling, self.later_sampling):
            if sampling is not None:
                sampling.validate()
        check_range(self.strength, self.steps, "strength (t')")
        check_number(self.guidance_scale, "guidance_scale (the DM's CFG)", minimum=0)
        if self.correction_size is not None:
            size = tuple(self.correction_size)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise InvalidInputError(f"correction_size must be (height, width) in whole pixels >= 1, got "
                                        f"{self.correction_size!r}.")
        for name in ("seed", "dm_seed"):
            value = getattr(self, name)
            if value is not None:
                check_seed(value, name)
        if frame_seed(self.seed, self.frames - 1) > MAX_SEED:
            raise InvalidInputError(f"seed {self.seed} is too large for {self.frames} frames: frame k uses seed + k - 1, "
                                    f"which must stay <= 2^64 - 1.")
        return self

    @property
    def windows(self) -> list[tuple[int, int]]:
        """The windows as (start, stop) frame indices: ``[0, L), [L, 2L), ...``, the last one cut at N."""
        return [(s, min(s + self.window, self.frames)) for s in range(0, self.frames, self.window)]

    def corrects(self, window: int) -> bool:
        """Is window ``window`` (0-based) corrected?"""
        return self.correct == "all" or (self.correct == "first" and window == 0)

    def sampling(self, arm: ARMBackend, index: int) -> SamplingSettings:
        """The ARM's sampling settings of frame ``index``: frame 1's, or every later frame's."""
        own = self.first_sampling if index == 0 else self.later_sampling
        if own is not None:
            return own
        defaults = getattr(arm, "default_video_sampling", None)
        if defaults is not None:
            return defaults[0 if index == 0 else 1]
        return getattr(arm, "default_sampling", None) or SamplingSettings()

    def resolve_sampling(self, arm: ARMBackend, *, cfg: tuple = (None, None), top_k: tuple = (None, None),
                         temperature: Optional[float] = None) -> "VideoSettings":
        """These settings with frame 1's and later frames' sampling made concrete: the ARM's own (``sampling``) with
        each value given put over it (``cfg`` and ``top_k``: (frame 1, later frames); None keeps the ARM's)."""
        out = {}
        for index, which in ((0, "first"), (1, "later")):
            changes = {k: v for k, v in (("guidance_scale", cfg[index]), ("top_k", top_k[index]),
                                         ("temperature", temperature)) if v is not None}
            if "top_k" in changes:
                changes["top_k"] = int(changes["top_k"])
            out[f"{which}_sampling"] = replace(self.sampling(arm, index), **changes).validate()
        return replace(self, **out)

    def dm_seed_of(self, window: int) -> int:
        return frame_seed(self.seed if self.dm_seed is None else self.dm_seed, window)


@dataclass(frozen=True)
class VideoFrame:
    """One frame as the ARM wrote it: ``tokens`` is v_k ``[1, tokens_per_image]``."""

    index: int
    window: int
    tokens: torch.Tensor
    arm_seed: int
    seconds: float
    context_frames: Optional[tuple[int, ...]] = None      # the earlier frames the ARM saw; None: all


@dataclass(frozen=True)
class WindowRecord:
    """What happened to one window. ``corrected_frames`` are at the correction size (== ``arm_frames`` where the
    window was not corrected), the rest at the ARM's size; frames are ``[F, 3, H, W]`` in [0, 1]."""

    index: int
    start: int
    stop: int
    prompt: str                           # the ARM's prompt of the window
    memory_prompt: Optional[str]          # the DM's prompt; None where the window was not corrected
    memory_fallback: bool
    corrected: bool
    dm_seed: Optional[int]
    arm_frames: torch.Tensor
    corrected_frames: torch.Tensor
    tokens_before: torch.Tensor           # [F, T]
    tokens_after: torch.Tensor            # [F, T] (== tokens_before where not corrected)
    seconds: dict = field(default_factory=dict)

    @property
    def tokens_kept(self) -> float:
        return float((self.tokens_before == self.tokens_after).float().mean())

    def summary(self) -> dict:
        return {"index": self.index, "frames": [self.start + 1, self.stop], "prompt": self.prompt,
                "memory_prompt": self.memory_prompt, "memory_fallback": self.memory_fallback,
                "corrected": self.corrected, "dm_seed": self.dm_seed, "tokens_kept": round(self.tokens_kept, 4),
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "tokens_before": self.tokens_before.tolist(), "tokens_after": self.tokens_after.tolist()}


@dataclass(frozen=True)
class VideoState:
    """The video so far: its prompts and settings, the ARM's context (corrected windows swapped in), every frame the
    ARM wrote and every window closed."""

    prompts: tuple[str, ...]
    settings: VideoSettings
    context: ARMContext = field(default_factory=ARMContext)
    frames: tuple[VideoFrame, ...] = ()
    windows: tuple[WindowRecord, ...] = ()

    @property
    def next_index(self) -> int:
        return len(self.frames)

    @property
    def open_window(self) -> Optional[int]:
        """The window whose frames are all made but which is not closed yet (None: none)."""
        w = len(self.windows)
        if w < len(self.settings.windows) and self.next_index >= self.settings.windows[w][1]:
            return w
        return None

    @property
    def done(self) -> bool:
        return len(self.windows) == len(self.settings.windows)

    def prompt_of(self, window: int) -> str:
        return self.prompts[window] if len(self.prompts) > 1 else self.prompts[0]

    def memory_prompts(self) -> tuple[str, ...]:
        return tuple(r.memory_prompt for r in self.windows if r.memory_prompt is not None)

    def output_frames(self) -> list[torch.Tensor]:
        """Every closed window's frames as the video shows them: corrected where corrected, else as the ARM made
        them (``[3, H, W]`` each; corrected frames at the correction size)."""
        return [f for r in self.windows for f in (r.corrected_frames if r.corrected else r.arm_frames)]

    def corrected_flags(self) -> list[bool]:
        """For every frame of ``output_frames``: whether its window was corrected."""
        return [r.corrected for r in self.windows for _ in range(r.stop - r.start)]

    def arm_frames(self) -> list[torch.Tensor]:
        """Every closed window's frames as the ARM made them (before correction), ``[3, H, W]`` at the ARM's size."""
        return [f for r in self.windows for f in r.arm_frames]

    def summary(self) -> dict:
        return {"prompts": list(self.prompts), "frames": [
            {"index": f.index, "window": f.window, "arm_seed": f.arm_seed, "seconds": {"arm": round(f.seconds, 4)},
             "arm_saw_frames": frame_ranges(f.context_frames) if f.context_frames is not None else None}
            for f in self.frames], "windows": [r.summary() for r in self.windows]}


def new_video(prompts: str | Sequence[str], settings: VideoSettings) -> VideoState:
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    return VideoState(prompts=prompts, settings=settings)


# --------------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------------

def _window_of(settings: VideoSettings, index: int) -> int:
    return index // settings.window


def _continues(state: VideoState, index: int) -> bool:
    """Whether frame ``index`` continues the chunk before it (same prompt) or starts a chunk of its own."""
    if index == 0:
        return False
    w = _window_of(state.settings, index)
    return state.prompt_of(w) == state.prompt_of(_window_of(state.settings, index - 1))


def generate_frame(state: VideoState, arm: ARMBackend, *, progress: ProgressFn = no_progress) -> VideoState:
    """The ARM writes the next frame v_k with every frame before it (corrected windows swapped in) in its context."""
    if state.open_window is not None:
        raise InvalidInputError(f"window {state.open_window + 1} is complete: close it (correct or keep it) before the "
                                "next frame.")
    k = state.next_index
    if k >= state.settings.frames:
        raise InvalidInputError(f"the video has {state.settings.frames} frame(s); all are made.")
    w = _window_of(state.settings, k)
    prompt, continues = state.prompt_of(w), _continues(state, k)
    seen = arm.fit_context(state.context, prompt, continues=continues)
    context = state.context if len(seen) == len(state.context) else state.context.select(seen)
    if len(seen) < len(state.context):
        logger.warning("frame %d: the video no longer fits the ARM's context window; it sees frames %s.", k + 1,
                       frame_ranges(seen))
    seed = frame_seed(state.settings.seed, k)
    with stage("arm") as took:
        tokens = arm.sample_chunk(context, prompt, settings=state.settings.sampling(arm, k),
                                  generator=torch.Generator().manual_seed(seed), continues=continues and bool(seen),
                                  progress=progress)
    frame = VideoFrame(k, w, tokens, seed, took[0], seen if len(seen) < len(state.context) else None)
    return replace(state, context=state.context.append(prompt, tokens, continues=continues),
                   frames=state.frames + (frame,))


def decode_window(state: VideoState, arm: ARMBackend, window: int) -> tuple[torch.Tensor, float]:
    """Step 1: the window's frames as the ARM wrote them, ``[F, 3, H, W]`` in [0, 1], and the seconds it took."""
    start, stop = state.settings.windows[window]
    with stage("decode") as took:
        frames = arm.decode(torch.cat([f.tokens for f in state.frames[start:stop]]))
    return frames, took[0]


def window_prompt(state: VideoState, memory: Memory, corrector, window: int) -> MemoryAnswer:
    """Step 2: the DM prompt of ``window``: the memory module's answer for its prompt, the window prompts read as a
    story (one prompt: the same answer for every window, asked once), fitted to the corrector's text window."""
    if len(state.prompts) == 1 and state.windows and state.windows[-1].memory_prompt is not None:
        last = state.windows[-1]
        return MemoryAnswer(last.memory_prompt, last.memory_fallback)
    story = state.prompts if len(state.prompts) > 1 else state.prompts[:1]
    i = min(window, len(story) - 1)
    earlier = state.memory_prompts()[:i]
    if len(earlier) < i:            # an earlier window was not corrected: no DM prompt to write from
        return MemoryAnswer(corrector.fit_prompt(story[i]), True)
    answer = memory.answer_for(i, story, earlier)
    return MemoryAnswer(corrector.fit_prompt(answer.text), answer.fallback)


def correct_window(frames: torch.Tensor, corrector, settings: VideoSettings, prompt: str, window: int, *,
                   progress: ProgressFn = no_progress) -> torch.Tensor:
    """Step 3: SDEdit the window ``[F, 3, H, W]`` at the DM's size with the window's DM prompt and seed."""
    return corrector.correct_video(
        resize_to(frames, correction_size(settings, corrector)), prompt, strength=settings.strength,
        steps=settings.steps, guidance_scale=settings.guidance_scale, seed=settings.dm_seed_of(window),
        negative_prompt=settings.negative_prompt, scheduler=settings.scheduler, progress=progress)


def close_window(state: VideoState, arm: ARMBackend, corrector, memory: Optional[Memory], *,
                 placement: Optional[Placement] = None, progress: ProgressFn = no_progress) -> VideoState:
    """Steps 1-4 for the window whose frames are all made: decoded, and where the settings say so given its DM
    prompt, corrected, re-encoded and swapped into the ARM's context frame by frame (``swap_window``)."""
    w = _open(state)
    place = (placement or _Stay).use
    settings = state.settings
    place(arm)
    arm_frames, seconds = decode_window(state, arm, w)
    if not settings.corrects(w):
        return swap_window(state, arm, None, arm_frames=arm_frames, seconds={"decode": seconds})
    place(memory)
    with stage("memory") as took:
        answer = window_prompt(state, memory, corrector, w)
    timing = {"decode": seconds, "memory": took[0]}
    place(corrector)
    with stage("correct") as took:
        corrected = correct_window(arm_frames, corrector, settings, answer.text, w, progress=progress)
    timing["correct"] = took[0]
    place(arm)
    return swap_window(state, arm, corrected, arm_frames=arm_frames, memory=answer, dm_seed=settings.dm_seed_of(w),
                       seconds=timing)


def _open(state: VideoState) -> int:
    w = state.open_window
    if w is None:
        raise InvalidInputError("no window is complete yet: make its frames first." if not state.done else
                                "every window of the video is closed.")
    return w


def swap_window(state: VideoState, arm: ARMBackend, corrected: Optional[torch.Tensor], *,
                arm_frames: Optional[torch.Tensor] = None, memory: Optional[MemoryAnswer] = None,
                dm_seed: Optional[int] = None, seconds: Optional[dict] = None) -> VideoState:
    """Step 4: the open window's corrected frames ``[F, 3, H, W]`` (any size; None: the window stays as the ARM
    wrote it) re-encoded with the ARM's own tokenizer and swapped into the context in place of what the ARM wrote;
    returns the state with the window's record (``memory``: its DM prompt). A host that corrects the window its own
    way (ComfyUI's nodes) calls this with its pixels."""
    w = _open(state)
    start, stop = state.settings.windows[w]
    seconds = dict(seconds or {})
    if arm_frames is None:
        arm_frames, seconds["decode"] = decode_window(state, arm, w)
    before = torch.cat([f.tokens for f in state.frames[start:stop]])
    context, after = state.context, before
    if corrected is not None:
        if corrected.ndim != 4 or corrected.shape[0] != stop - start or corrected.shape[1] != 3:
            raise InvalidInputError(f"window {w + 1} holds {stop - start} frames (frames {start + 1}-{stop}); the "
                                    f"corrected frames have shape {tuple(corrected.shape)}, not [{stop - start}, 3, "
                                    "H, W].")
        with stage("encode") as took:
            after = arm.encode(resize_to(corrected.float(), arm.image_size))
        seconds["encode"] = took[0]
        context = state.context.swap_frames(start, after)
    fixed = corrected is not None
    record = WindowRecord(w, start, stop, state.prompt_of(w), memory.text if memory and fixed else None,
                          bool(memory and fixed and memory.fallback), fixed, dm_seed if fixed else None, arm_frames,
                          corrected.float() if fixed else arm_frames, before, after, seconds)
    return replace(state, context=context, windows=state.windows + (record,))


# --------------------------------------------------------------------------------------------------------
# A whole video
# --------------------------------------------------------------------------------------------------------

def check_prompts(prompts: Sequence[str], settings: VideoSettings) -> tuple[str, ...]:
    """The checks of the settings and prompts that need no model: one prompt for the video or one per window."""
    settings.validate()
    prompts = tuple(prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise InvalidInputError("give the video's prompt (or one prompt per window); got an empty one.")
    windows = len(settings.windows)
    if len(prompts) not in (1, windows):
        raise InvalidInputError(f"give one prompt for the video or one per window ({windows} windows of "
                                f"{settings.window} for {settings.frames} frames); got {len(prompts)}.")
    return prompts


def validate_video(state: VideoState, arm: ARMBackend, corrector, memory: Optional[Memory]) -> None:
    """Every check that can fail, before any model runs."""
    settings = state.settings
    prompts = check_prompts(state.prompts, settings)
    check_video(arm, ARMContext().append(prompts[0], torch.zeros(1, arm.tokens_per_image, dtype=torch.long)),
                prompts[0], 1, True)
    for index, prompt in enumerate(prompts):
        try:
            arm.fit_context(ARMContext(), prompt)
        except InvalidInputError as error:
            raise InvalidInputError(f"prompt {index + 1}: {error}") from None
    for k in (0, 1):
        settings.sampling(arm, k).validate()
    if settings.correct != "none":
        check_correction(settings, corrector, memory)


def check_correction(settings: VideoSettings, corrector, memory: Optional[Memory]) -> None:
    """The checks of the windows' correction: a video DM that takes windows this long at this size, t', its
    sampler, and a memory module that answers."""
    if corrector is None:
        raise InvalidInputError("no video diffusion model is loaded but windows are to be corrected; load one "
                                "(e.g. AnimateDiff), or set correct to 'none' for the ARM alone.")
    if memory is None:
        raise InvalidInputError("no memory module given; pass MemoryModule(None, MemorySettings(mode='off')) to use "
                                "the raw prompts.")
    if not callable(getattr(corrector, "correct_video", None)):
        raise InvalidInputError(f"the {getattr(corrector, 'kind', '?')} corrector corrects still images, not video "
                                "windows; load a video diffusion model (AnimateDiff: an SD1.5 model and a motion "
                                "adapter).")
    longest = max(stop - start for start, stop in settings.windows)
    limit = getattr(corrector, "max_frames", None)
    if limit is not None and longest > limit:
        raise InvalidInputError(f"a window of {longest} frames is longer than this video DM takes ({limit}); set the "
                                f"window to at most {limit} (AnimateDiff was trained on "
                                f"{getattr(corrector, 'native_frames', limit)}).")
    check_strength(settings.strength, settings.steps, "strength (t')")
    check_scheduler(settings.scheduler, corrector.schedulers)
    multiple = int(getattr(corrector, "image_multiple", 1))
    size = correction_size(settings, corrector)
    if any(side % multiple for side in size):
        raise InvalidInputError(f"correction_size {size[0]}x{size[1]} does not suit this video DM: its sides must be "
                                f"multiples of {multiple} (e.g. {max(multiple, size[0] // multiple * multiple)}).")
    memory.check()


def run_video(prompts: str | Sequence[str], arm: ARMBackend, corrector, memory: Optional[Memory],
              settings: VideoSettings = VideoSettings(), *, start: Optional[VideoState] = None,
              placement: Optional[Placement] = None, progress: ProgressFn = no_progress,
              on_frame: Optional[Callable[[VideoState], None]] = None,
              on_window: Optional[Callable[[VideoState], None]] = None) -> VideoState:
    """Run video ACDC (or resume ``start``) and return the final state. ``on_frame(state)`` is called as each frame
    is written, ``on_window(state)`` as each window is closed (the CLI writes its frames to disk there)."""
    state = start if start is not None else new_video(prompts, settings)
    validate_video(state, arm, corrector, memory)
    total = state.settings.frames
    while not state.done:
        if state.open_window is not None:
            state = close_window(state, arm, corrector, memory, placement=placement, progress=progress)
            if on_window is not None:
                on_window(state)
            continue
        progress("frame", state.next_index, total)
        (placement or _Stay).use(arm)
        state = generate_frame(state, arm, progress=progress)
        if on_frame is not None:
            on_frame(state)
    progress("frame", total, total)
    return state
