"""Pixels between ComfyUI and the engine, and a finished story as node outputs.

ComfyUI's IMAGE is ``[B, H, W, C]`` in [0, 1] (channels last); the engine's images are ``[N, 3, H, W]``
(channels first). Every conversion is in ``acdc_core.images``; this module adds what a node needs around it.
"""
from __future__ import annotations

import functools

import torch

from acdc_core.errors import InvalidInputError
from acdc_core.images import bhwc_to_nchw, nchw_to_bhwc, resize_to
from acdc_core.report import story_rows, strip_image
from acdc_core.state import StoryState
from . import bridge
from .graph import copy_of


def image_to_nchw(image, what: str = "image") -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, 3] -> engine images [B, 3, H, W] float, or a clear error naming the shape."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInputError(f"{what} must be an IMAGE [B, H, W, 3]; got {got}.")
    return bhwc_to_nchw(image.float())


def frame_to_nchw(image, what: str = "image") -> torch.Tensor:
    """A ComfyUI IMAGE holding one frame [1, H, W, 3] -> [1, 3, H, W], or a clear error."""
    pixels = image_to_nchw(image, what)
    if pixels.shape[0] != 1:
        raise InvalidInputError(f"{what} must hold one frame; got a batch of {pixels.shape[0]}. In a story "
                                f"each frame goes through the chain on its own (Loop Frame makes the frames).")
    return pixels


def one_mask(mask, what: str = "the mask input") -> torch.Tensor:
    """A ComfyUI MASK holding one mask ([1, H, W], or [H, W]) -> [1, H, W] float in [0, 1], or a clear error.

    A batch of masks is refused: each node that takes a MASK fixes one frame, and which mask would go with
    which frame is not for a node to guess.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InvalidInputError(f"{what} must be a MASK [B, H, W]; got {got}.")
    mask = mask if mask.ndim == 3 else mask[None]
    if mask.shape[0] != 1:
        raise InvalidInputError(f"{what} holds a batch of {mask.shape[0]} masks ({'x'.join(map(str, mask.shape))}); "
                                f"pass one mask.")
    return mask.float().clamp(0, 1)


def to_image(images: torch.Tensor) -> torch.Tensor:
    """Engine images [N, 3, H, W] -> ComfyUI IMAGE [N, H, W, 3]."""
    return nchw_to_bhwc(images.float())


def story_results(state: StoryState) -> dict:
    """A finished story as node outputs (story, frames, ARM frames, DM prompts) plus a side-by-side preview."""
    records = state.records
    if not records:
        raise InvalidInputError("the story has no frames yet.")
    # One batch needs one size: frames corrected by the DM are larger than frames the ARM alone made
    # (ACDC #k); bring every frame to the largest size.
    size = max((tuple(r.corrected_image.shape[-2:]) for r in records), key=lambda hw: hw[0] * hw[1])
    frames = torch.cat([resize_to(r.corrected_image[None].float(), size) for r in records])
    arm_size = tuple(records[0].arm_image.shape[-2:])
    arm_frames = torch.cat([resize_to(r.arm_image[None].float(), arm_size) for r in records])
    dm_prompts = "\n".join(r.memory_prompt if r.memory_prompt is not None else r.story_prompt for r in records)
    strip = strip_image(story_rows(records), [r.story_prompt for r in records])
    ui = {"images": [bridge.save_picture(strip, "story")], "acdc_frames": [len(records)]}
    return {"ui": ui, "result": (state, to_image(frames), to_image(arm_frames), dm_prompts)}


def names_frame_in_errors(cls, display: str):
    """Make a per-frame stage node (one with a ``frame`` or ``story`` input of the pack) say which node and frame
    failed: its errors start "<display name>, frame k: ". Inside the story loop ComfyUI reports a copy's error on
    Loop Frame (close), so without this a user cannot tell which step of which frame stopped; an "acdc.failed"
    message also tells the web extension which node to mark. Returns ``cls``."""
    from acdc_core.errors import ACDCError
    from acdc_core.state import Frame, StoryState

    required = cls.INPUT_TYPES().get("required", {})
    if getattr(cls, "OUTPUT_NODE", False) or not ({"frame", "story"} & set(required)):
        return cls
    run = getattr(cls, cls.FUNCTION)
    if getattr(run, "names_frame", False):
        return cls

    @functools.wraps(run)
    def named(self, *args, **kwargs):
        try:
            return run(self, *args, **kwargs)
        except ACDCError as error:
            frame, story = kwargs.get("frame"), kwargs.get("story")
            number = frame.number if isinstance(frame, Frame) else \
                story.next_index + 1 if isinstance(story, StoryState) and not story.done else None
            text = str(error)
            if number is not None and not text.startswith(display):
                error.args = (f"{display}, frame {number}: {text}",) + error.args[1:]
            # ComfyUI reports an error inside the story loop on Loop Frame (close), the node that made the copy;
            # the web extension marks the node the user placed as well (the copy's original).
            running = bridge.executing_node()
            copy = copy_of(running) if running else None
            if copy is not None:
                bridge.send("acdc.failed", {"node": copy[2], "frame": copy[1], "loop": copy[0], "message": str(error)})
            raise

    named.names_frame = True
    setattr(cls, cls.FUNCTION, named)
    return cls
