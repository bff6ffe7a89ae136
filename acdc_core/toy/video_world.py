"""A toy video world where video ACDC's effect can be measured on a CPU: clips, their true states, a renderer.

A clip is one prompt and ``FRAMES`` (24) frames of 32 px: an animal of the story world (``world``: name, species,
colour) on a background (place; day sky with one sun, or night sky with one moon) that moves by a rule the renderer
knows, optionally passing behind a foreground object (a rock or a bush) that hides part of it. The animal is drawn
by the story world's own shapes (``world.animal_mask``) at ``SCALE`` (3/4) of their story size, so it has room to
move, facing the way it goes.

Motion rules (``MOTIONS``; speeds in canvas units per frame, 1 unit = 1 px at 32 px):

- ``walks``: constant velocity (``SPEED``) to the left or right, never reaching an edge;
- ``runs``: back and forth at twice the speed, turning round where it would leave the frame (a bounce);
- ``turns``: walks one way, turns round at a frame between 8 and 16, walks back;
- ``hops``: walks one way while hopping: a jump arc of ``HOP_HEIGHT`` every ``HOP_PERIOD`` frames;
- ``stands``: stays where it is, facing one way (the one motion where a still frame is right).

``Clip.states()`` gives the true ``FrameState`` of every frame: everything ``render_frame`` needs. Physical rules a
frame can break (the judge checks them, ``video_judge``): the animal keeps its identity (species), colour and size;
it moves continuously (no teleport, no freeze unless it stands); exactly one sun or moon; the background (place,
time) stays. A broken frame is a ``FrameState`` with a field changed (``dataclasses.replace``), rendered like any
other.

Prompts: ``prompt(clip, variant)``, self-contained ("Mia, a red rabbit, hops to the right past a rock across a
meadow by day."), in ``len(PHRASINGS)`` wordings of the same facts; variant 0 is the canonical one the ARM and the
benchmark use, the diffusion model is trained on all of them.

Train / held-out: ``clip_split`` hashes the canonical prompt (sha256), so a held-out prompt is never trained on,
whatever start position or seed a clip of it has; ``split_clips`` lists the clips of a split in a fixed order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, Optional

import numpy as np

from ..errors import InvalidInputError
from . import world
from .world import COLOURS, GROUND, NAMES, PALETTE, PLACES, SPECIES, TIMES

__all__ = ["FRAMES", "WINDOW", "SIZE", "SCALE", "MOTIONS", "SPEED", "HOP_PERIOD", "HOP_HEIGHT", "OCCLUDERS",
           "OCCLUDER_COLOURS", "PHRASINGS", "FrameState", "Clip", "render_frame", "render_clip", "prompt",
           "sample_clip", "clip_split", "split_clips", "x_range", "occluder_mask", "HELDOUT_FRACTION"]

FRAMES = 24      # frames per clip (the paper: 32)
WINDOW = 8       # the correction window L (the paper: 16); N / L = 3
SIZE = 32        # pixels per side
SCALE = 0.75     # the animal's size relative to the story world's

MOTIONS: tuple[str, ...] = ("walks", "runs", "turns", "hops", "stands")
SPEED: dict[str, float] = {"walks": 0.5, "runs": 1.0, "turns": 0.6, "hops": 0.5, "stands": 0.0}
HOP_PERIOD = 8          # frames per hop
HOP_HEIGHT = 4.0        # canvas units at the top of a hop
TURN_FRAMES = (8, 16)   # a "turns" clip turns round at a frame in this range (inclusive)
OCCLUDERS: tuple[str, ...] = ("rock", "bush")
# >= 75 away from every sky, ground and animal colour (RGB distance), so a hidden part reads as hidden.
OCCLUDER_COLOURS: dict[str, tuple[int, int, int]] = {"rock": (128, 128, 136), "bush": (34, 96, 40)}
OCCLUDER_SIZE = (7.0, 9.0)   # width, height in canvas units; its base sits just below the animals' feet
MARGIN = 0.5                 # the animal keeps this far inside the frame


@dataclass(frozen=True)
class FrameState:
    """The true content of one frame: everything ``render_frame`` draws."""

    species: str
    colour: str
    place: str
    time: str
    cx: float                       # body centre, canvas units
    lift: float = 0.0               # height off the ground (a hop)
    facing: str = "right"
    scale: float = SCALE
    n_celestial: int = 1
    occluder: Optional[str] = None  # "rock" / "bush" in front of the animal, or None
    occluder_x: float = 0.0

    def __post_init__(self) -> None:
        for field, value, allowed in (("species", self.species, SPECIES), ("colour", self.colour, COLOURS),
                                      ("place", self.place, PLACES), ("time", self.time, TIMES),
                                      ("facing", self.facing, ("left", "right")),
                                      ("occluder", self.occluder, (None,) + OCCLUDERS)):
            if value not in allowed:
                raise InvalidInputError(f"FrameState {field} must be one of {allowed}; got {value!r}.")
        if not isinstance(self.n_celestial, int) or not 0 <= self.n_celestial <= world.MAX_CELESTIAL:
            raise InvalidInputError(f"FrameState n_celestial must be 0..{world.MAX_CELESTIAL}; got {self.n_celestial!r}.")


def x_range(species: str, facing: str, scale: float = SCALE) -> tuple[float, float]:
    """The body centres at which the whole animal is inside the frame (with ``MARGIN``)."""
    back, ahead = world.extent(species, scale)
    left, right = (back, ahead) if facing == "right" else (ahead, back)
    return left + MARGIN, world.CANVAS - right - MARGIN


@dataclass(frozen=True)
class Clip:
    """One clip: its character, background and motion. ``states()`` are its true frames."""

    name: str
    species: str
    colour: str
    place: str
    time: str
    motion: str
    direction: str           # which way it first goes (and faces)
    start: float             # body centre at frame 1
    turn_at: int = 12        # "turns": the first frame (0-based) after the turn
    occluder: Optional[str] = None
    occluder_x: float = 16.0
    frames: int = FRAMES

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise InvalidInputError(f"Clip name must be one of {', '.join(NAMES)}; got {self.name!r}.")
        if self.motion not in MOTIONS:
            raise InvalidInputError(f"Clip motion must be one of {', '.join(MOTIONS)}; got {self.motion!r}.")
        if self.direction not in ("left", "right"):
            raise InvalidInputError(f"Clip direction must be 'left' or 'right'; got {self.direction!r}.")
        if not isinstance(self.frames, int) or self.frames < 2:
            raise InvalidInputError(f"Clip frames must be an integer >= 2; got {self.frames!r}.")
        FrameState(self.species, self.colour, self.place, self.time, self.start, occluder=self.occluder)  # checks

    def states(self) -> tuple[FrameState, ...]:
        return _states(self)

    @property
    def prompt(self) -> str:
        return prompt(self)


@lru_cache(maxsize=4096)
def _states(clip: Clip) -> tuple[FrameState, ...]:
    base = FrameState(clip.species, clip.colour, clip.place, clip.time, clip.start, facing=clip.direction,
                      occluder=clip.occluder, occluder_x=clip.occluder_x)
    v = SPEED[clip.motion]
    sign = 1.0 if clip.direction == "right" else -1.0
    x, facing, out = clip.start, clip.direction, []
    for t in range(clip.frames):
        if t > 0:
            if clip.motion == "turns" and t == clip.turn_at:
                sign, facing = -sign, ("left" if facing == "right" else "right")
            x = x + sign * v
            if clip.motion == "runs":   # bounce: reflect off the edge of the range the animal fits in
                lo, hi = x_range(clip.species, facing)
                if x > hi or x < lo:
                    edge = hi if x > hi else lo
                    x = 2 * edge - x
                    sign, facing = -sign, ("left" if facing == "right" else "right")
                    lo, hi = x_range(clip.species, facing)
                    x = min(max(x, lo), hi)
        lift = HOP_HEIGHT * float(np.sin(np.pi * (t % HOP_PERIOD) / HOP_PERIOD)) if clip.motion == "hops" else 0.0
        out.append(replace(base, cx=round(x, 4), lift=round(lift, 4), facing=facing))
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def occluder_mask(kind: str, x: float, size: int = SIZE) -> np.ndarray:
    """The foreground object's mask [size, size] bool (read-only): a rounded blob standing on the ground."""
    if kind not in OCCLUDERS:
        raise InvalidInputError(f"occluder must be one of {', '.join(OCCLUDERS)}; got {kind!r}.")
    X, Y = world._grid(size)
    w, h = OCCLUDER_SIZE
    bottom = world.BASELINE + 1.5
    mask = world._blob(X, Y, x, bottom - h / 2, w, h) if kind == "rock" else (
        world._disc(X, Y, x - 1.5, bottom - 3.5, 3.0) | world._disc(X, Y, x + 1.5, bottom - 3.5, 3.0)
        | world._disc(X, Y, x, bottom - 6.0, 3.0))
    mask = mask & (Y < world.CANVAS)
    mask.setflags(write=False)
    return mask


def render_frame(state: FrameState, size: int = SIZE) -> np.ndarray:
    """The frame of ``state`` as [size, size, 3] uint8 RGB (a new array). Deterministic."""
    if not isinstance(size, int) or size < 16:
        raise InvalidInputError(f"render size must be an integer >= 16 pixels, got {size!r}.")
    image = world._background(state.place, state.time, state.n_celestial, size).copy()
    mask = world.animal_mask(state.species, float(state.cx), float(state.lift), facing=state.facing,
                             scale=float(state.scale), size=size)
    image[mask] = PALETTE[state.colour]
    if state.occluder is not None:
        image[occluder_mask(state.occluder, float(state.occluder_x), size)] = OCCLUDER_COLOURS[state.occluder]
    return image


def render_clip(clip: "Clip | tuple[FrameState, ...] | list[FrameState]", size: int = SIZE) -> np.ndarray:
    """All frames of a clip (or of a list of states) as [T, size, size, 3] uint8."""
    states = clip.states() if isinstance(clip, Clip) else clip
    return np.stack([render_frame(s, size) for s in states])


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------

def _action(clip: Clip) -> str:
    d = clip.direction
    return {"walks": f"walks to the {d}", "runs": "runs back and forth", "turns": f"walks to the {d} and turns back",
            "hops": f"hops to the {d}", "stands": f"stands still facing {d}"}[clip.motion]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


_WHEN = {"day": "by day", "night": "at night"}
# Wordings of the same facts ({past}: " past a rock" or ""). Variant 0 is canonical.
PHRASINGS: tuple[str, ...] = (
    "{name}, {a} {colour} {species}, {action}{past} {across} {a_place} {place} {when}.",
    "{When}, {a} {colour} {species} named {name} {action}{past} {across} {a_place} {place}.",
    "{name} is {a} {colour} {species}. {P} {action}{past} {across} {a_place} {place} {when}.",
)


def prompt(clip: Clip, variant: int = 0) -> str:
    """The clip's self-contained description in wording ``variant`` (0: canonical; see ``PHRASINGS``)."""
    when = _WHEN[clip.time]
    past = f" past {_a(clip.occluder)} {clip.occluder}" if clip.occluder else ""
    return PHRASINGS[variant % len(PHRASINGS)].format(
        name=clip.name, a=_a(clip.colour), colour=clip.colour, species=clip.species, action=_action(clip), past=past,
        across="in" if clip.motion == "stands" else "across", a_place=_a(clip.place), place=clip.place, when=when,
        When=when[0].upper() + when[1:], P=world.pronoun(clip.name))


# ----------------------------------------------------------------------------------------------------------
# Sampling and splits
# ----------------------------------------------------------------------------------------------------------

MOTION_WEIGHTS = (0.25, 0.2, 0.2, 0.25, 0.1)   # walks, runs, turns, hops, stands
OCCLUDER_RATE = 0.3


def _fits(clip: Clip) -> bool:
    return all(x_range(s.species, s.facing)[0] - 1e-6 <= s.cx <= x_range(s.species, s.facing)[1] + 1e-6
               for s in clip.states())


def sample_clip(rng: np.random.Generator, frames: int = FRAMES) -> Clip:
    """A random clip whose animal stays inside the frame; fully determined by the generator's state."""
    name, species, colour = str(rng.choice(list(NAMES))), str(rng.choice(SPECIES)), str(rng.choice(COLOURS))
    place, time = str(rng.choice(PLACES)), str(rng.choice(TIMES))
    motion = str(rng.choice(MOTIONS, p=MOTION_WEIGHTS))
    direction = str(rng.choice(["left", "right"]))
    occluder = str(rng.choice(OCCLUDERS)) if rng.random() < OCCLUDER_RATE else None
    turn_at = int(rng.integers(TURN_FRAMES[0], TURN_FRAMES[1] + 1))
    while True:
        lo, hi = x_range(species, direction)
        start = round(float(rng.uniform(lo, hi)), 2)
        occluder_x = round(float(rng.uniform(8.0, 24.0)), 2)
        clip = Clip(name, species, colour, place, time, motion, direction, start, turn_at, occluder, occluder_x, frames)
        if _fits(clip):
            return clip


HELDOUT_FRACTION = 1 / 8


def clip_split(clip: Clip) -> Literal["train", "heldout"]:
    """Which split a clip's prompt belongs to (sha256 of the canonical prompt): a held-out prompt is never
    trained on, whatever start position a clip of it has."""
    digest = hashlib.sha256(("video\n" + prompt(clip)).encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION else "train"


def split_clips(split: Literal["train", "heldout"], n: int, start: int = 0, frames: int = FRAMES) -> list[Clip]:
    """The first ``n`` clips of ``split``, sampled from seeds ``start, start+1, ...`` (one generator per clip)
    and kept when ``clip_split`` agrees. Deterministic."""
    if split not in ("train", "heldout"):
        raise InvalidInputError(f"split must be 'train' or 'heldout', got {split!r}.")
    out: list[Clip] = []
    seed = start
    while len(out) < n:
        clip = sample_clip(np.random.default_rng(seed), frames)
        if clip_split(clip) == split:
            out.append(clip)
        seed += 1
    return out


def background_colours() -> dict[str, tuple[int, int, int]]:
    """Every non-animal colour of the world, by name (the judge's reference)."""
    return {**{f"ground:{p}": GROUND[p] for p in PLACES}, **{f"occluder:{k}": c for k, c in OCCLUDER_COLOURS.items()}}
