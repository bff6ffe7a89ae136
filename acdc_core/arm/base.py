"""The one small protocol every ARM backend meets.

A story is a sequence of *chunks*. Each chunk is one prompt and the image tokens the ARM produced for
it. A chunk holds one image (a story frame) or several (a window of video frames), so tokens are a
tensor ``[n_images, tokens_per_image]``; how a backend lays them out in its own sequence (raster order,
rows with end-of-line tokens, parallel masked filling) is its own business.

Video. A video is one prompt and many frames. It is held as *frames as chunks*: the first frame is a chunk like a
story frame's, and every later frame is a chunk with ``continues=True``, which has no text of its own and follows
the frame before it directly in the ARM's sequence (the end-of-frame token between them is the backend's layout).
A chunk of n images and one chunk followed by n - 1 continuing chunks of one image each are the same sequence, so
the two spellings are interchangeable; the video loop (``video.py``) makes one frame per call (its own seed and
sampling settings per frame, a record and a preview per frame) and swaps a corrected window back frame by frame
(``swap`` per frame, or ``swap_frames``). Because a backend's cache is keyed by the ids themselves, continuing
after a window swap recomputes only from the window's first changed code. A backend that generates video says so
with ``video_capable = True`` (the unified-vocabulary family: LWM, the toy video ARM); the others refuse
``continues`` and ``images_per_chunk > 1`` with a clear error (``check_video``).

The context is a value: ``append`` and ``swap`` return a new context and leave the old one intact.
A backend may keep a key/value cache behind a context (``cache`` below) purely as a speed-up: it is a
memo of the sequence it covers, never part of the context's meaning, so a stale cache can cost time but
never change a result.

Images cross this protocol as float tensors ``[N, 3, H, W]`` in ``[0, 1]`` (channels first).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Protocol, runtime_checkable

import torch

from ..errors import InvalidInputError, check_number
from ..progress import ProgressFn, no_progress


# How a token-by-token family decodes (``decoding.CachedDecoder.set_decoding``): its key/value cache and step.
DECODING = ("dynamic", "static", "compiled")


def check_maskgit_steps(steps) -> int:
    """The number of MaskGIT steps, or a clear error (a whole number >= 1)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"MaskGIT steps must be a whole number >= 1, got {steps!r}.")
    return steps


@dataclass(frozen=True)
class SamplingSettings:
    """How an ARM samples image tokens. ``top_k``/``top_p`` of 0 / 1.0 mean off. ``maskgit_steps``: the steps of a
    family that fills a frame by parallel masked prediction (Show-o; 18 as upstream), ignored by token-by-token
    families."""

    guidance_scale: float = 5.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    maskgit_steps: int = 18

    def validate(self) -> "SamplingSettings":
        check_number(self.temperature, "temperature", minimum=0, hint=" 0 means greedy.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidInputError(f"top_k must be a whole number >= 0 (0 turns it off), got {self.top_k!r}.")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError(f"top_p must be in (0, 1] (1 turns it off), got {self.top_p}.")   # NaN too
        check_number(self.guidance_scale, "the ARM's guidance_scale", minimum=0, hint=" 1 turns CFG off.")
        check_maskgit_steps(self.maskgit_steps)
        return self


@dataclass(frozen=True)
class Chunk:
    """One prompt and the image tokens that answer it: ``tokens`` is ``[n_images, tokens_per_image]``.
    ``continues``: the chunk holds the next frame(s) of the video the chunk before it began (same prompt, no text
    of its own in the ARM's sequence; see the module docstring)."""

    prompt: str
    tokens: torch.Tensor
    continues: bool = False


class CacheMemo:
    """A mutable holder for a backend's key/value cache and the exact sequence it covers.

    Contexts derived from one another share one memo. A backend that wants to reuse the cache compares
    ``covered`` with the sequence it needs, keeps the longest common prefix (cropping the cache) and
    prefills only the rest. Because ``covered`` always tells the truth, sharing is safe.
    """

    __slots__ = ("cache", "covered")

    def __init__(self) -> None:
        self.cache: Any = None
        self.covered: Optional[torch.Tensor] = None  # [B, L] ids (or any key the backend chooses)


@dataclass(frozen=True)
class ARMContext:
    """The story so far as the ARM sees it: the chunks in order, plus a cache memo (not part of equality)."""

    chunks: tuple[Chunk, ...] = ()
    memo: CacheMemo = field(default_factory=CacheMemo, compare=False, repr=False)

    def append(self, prompt: str, tokens: torch.Tensor, *, continues: bool = False) -> "ARMContext":
        if continues and not self.chunks:
            raise InvalidInputError("a continuing chunk (the next frame of a video) needs the video's first frame "
                                    "before it; the context is empty.")
        return replace(self, chunks=self.chunks + (Chunk(prompt, tokens.detach().clone(), bool(continues)),))

    def swap(self, index: int, tokens: torch.Tensor) -> "ARMContext":
        """A new context where chunk ``index`` holds ``tokens`` instead (the ACDC swap, v_i -> v~_i)."""
        if not -len(self.chunks) <= index < len(self.chunks):
            raise InvalidInputError(
                f"cannot swap chunk {index}: the context holds {len(self.chunks)} chunk(s).")
        old = self.chunks[index]
        if tuple(tokens.shape) != tuple(old.tokens.shape):
            raise InvalidInputError(
                f"swapped tokens have shape {tuple(tokens.shape)} but chunk {index} holds "
                f"{tuple(old.tokens.shape)}; re-encode the image at the ARM's resolution.")
        chunks = list(self.chunks)
        chunks[index] = Chunk(old.prompt, tokens.detach().clone(), old.continues)
        return replace(self, chunks=tuple(chunks))

    def swap_frames(self, first: int, tokens: torch.Tensor) -> "ARMContext":
        """A new context where the one-image chunks ``first .. first + n - 1`` hold the rows of ``tokens``
        ``[n, tokens_per_image]`` instead (a corrected video window swapped back, frames as chunks)."""
        count = int(tokens.shape[0]) if tokens.ndim == 2 else 0
        if count < 1 or not 0 <= first or first + count > len(self.chunks):
            raise InvalidInputError(
                f"cannot swap {count} frame(s) from chunk {first}: the context holds {len(self.chunks)} chunk(s) "
                f"and the tokens have shape {tuple(tokens.shape)} ([n_frames, tokens_per_image]).")
        context = self
        for k in range(count):
            context = context.swap(first + k, tokens[k:k + 1])
        return context

    def select(self, indices: tuple[int, ...]) -> "ARMContext":
        """A context of the chunks at ``indices`` (in order), sharing this one's cache memo (see ``fit_context``)."""
        return replace(self, chunks=tuple(self.chunks[i] for i in indices))

    def __len__(self) -> int:
        return len(self.chunks)


@runtime_checkable
class ARMBackend(Protocol):
    """What the ACDC loop, and every host, needs from an autoregressive multimodal model."""

    family: str                      # a key of ``registry.FAMILIES``
    image_size: tuple[int, int]      # (H, W) in pixels of one image the ARM makes
    tokens_per_image: int
    codebook_size: int               # image tokens are ids in [0, codebook_size)
    device: torch.device
    previews: bool                   # whether ``sample_chunk`` hands partial frames to ``progress``
    # Optional: ``inpaints_tokens = True`` where ``sample_chunk`` also takes ``known`` ([tokens_per_image] codes,
    # -1 where to fill), keeps those codes and fills the rest (a frame filled in parallel: Show-o).
    # Optional: ``batch_capable = True`` where ``sample_chunks(contexts, prompts, *, settings, generators, batch,
    # progress)`` samples one chunk for each of several stories in one batch, each story getting the codes
    # ``sample_chunk`` gives it with the same generator (``decoding.CachedDecoder.sample_chunks``; hosts go through
    # ``story.generate_many``, which runs the stories one after another for a backend without it).
    # Optional: ``video_capable = True`` where ``sample_chunk`` takes ``continues=True`` and ``images_per_chunk > 1``
    # (video frames; see the module docstring). Backends without it refuse both (``check_video``).

    def sample_chunk(self, context: ARMContext, prompt: str, *, settings: SamplingSettings,
                     generator: torch.Generator, images_per_chunk: int = 1, continues: bool = False,
                     progress: ProgressFn = no_progress) -> torch.Tensor:
        """Tokens ``[images_per_chunk, tokens_per_image]`` for ``prompt`` given everything in ``context``;
        ``continues``: the next frame(s) of the video ``context``'s last chunk belongs to (``prompt`` is its prompt)."""
        ...

    def fit_context(self, context: ARMContext, prompt: str, *, images_per_chunk: int = 1,
                    continues: bool = False) -> tuple[int, ...]:
        """The indices of the chunks of ``context`` the ARM conditions ``prompt``'s chunk on: all of them while the
        sequence fits the model's context window, else the long-story policy (``decoding.window_policy``). Raises a
        clear error when ``prompt`` cannot be a chunk at all (too long even alone, control tokens in it)."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[N, tokens_per_image]`` -> images ``[N, 3, H, W]`` in [0, 1]."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] at ``image_size`` -> tokens ``[N, tokens_per_image]``."""
        ...

    def to(self, device: torch.device | str) -> "ARMBackend":
        """Move the weights (used to offload the ARM while another stage needs the memory)."""
        ...

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every torch module holding weights, by name, for a host's memory manager."""
        ...


def check_video(backend, context: ARMContext, prompt: str, images_per_chunk: int, continues: bool) -> None:
    """A clear error unless the request is one ``backend`` can make: one image of a new chunk for any backend; video
    frames (``images_per_chunk > 1`` or ``continues``) only for a ``video_capable`` one, continuing a context whose
    last chunk has the same prompt."""
    if isinstance(images_per_chunk, bool) or not isinstance(images_per_chunk, int) or images_per_chunk < 1:
        raise InvalidInputError(f"images_per_chunk must be a whole number >= 1, got {images_per_chunk!r}.")
    if images_per_chunk == 1 and not continues:
        return
    if not getattr(backend, "video_capable", False):
        raise InvalidInputError(
            f"the {backend.family} ARM makes one image per chunk (a story frame), not video: got images_per_chunk="
            f"{images_per_chunk}{' and continues=True' if continues else ''}. Video needs an ARM that writes frames "
            "one after another in one sequence (the unified family: LWM, the toy video ARM).")
    if continues:
        if not context.chunks:
            raise InvalidInputError("continues=True needs the video's first frame in the context; it is empty.")
        if context.chunks[-1].prompt != prompt:
            raise InvalidInputError(
                f"a continuing frame belongs to the video of the context's last chunk, whose prompt is "
                f"{context.chunks[-1].prompt[:60]!r}, not {prompt[:60]!r}; start a new chunk for a new prompt.")


def check_images(images: torch.Tensor, size: tuple[int, int], what: str = "image") -> None:
    """Raise a clear error unless ``images`` is [N, 3, H, W] with (H, W) == size."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(
            f"{what} must be a tensor [N, 3, H, W] (channels first, RGB); got shape {tuple(images.shape)}.")
    if tuple(images.shape[-2:]) != tuple(size):
        raise InvalidInputError(
            f"{what} is {images.shape[-2]}x{images.shape[-1]} (HxW) but the ARM works at "
            f"{size[0]}x{size[1]}; resize it first (acdc_core.images.resize_to)." )
