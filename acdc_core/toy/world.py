"""A toy story world where ACDC's effect can be measured on a CPU: scenes, a renderer and stories.

A frame shows one named animal (species, colour) on a background (place; day sky with a sun, or night
sky with a moon), at one of three spots (left / middle / right), in one of three poses (standing,
jumping, lying). Everything is flat-coloured and as big as 32 px allows, for a VQ with 4x patches
(32 px -> 8x8 tokens): species, colour, place, time, position and pose stay readable even through a
plain 4x down/up resampling; ears and legs are 2 px wide, so their count needs a decoder that keeps
detail (``judge`` reads them through blur, noise and a linear 4x down/up, see its accuracy table).

Geometry is defined on a 32-unit canvas (y grows downwards) and rasterised at pixel centres, so
``render(scene, size)`` works at any size; 32 px is the default.

Physical rules a frame can break (for ARM errors and judge tests): exactly one sun or moon, two ears,
four legs (legs are folded out of sight while lying). ``Scene`` carries ``n_ears``, ``n_legs`` and
``n_celestial`` so broken frames render from a scene like any other.

Stories: ``sample_story(rng)`` draws 6 scenes and their prompts. Prompt 1 introduces name, species,
colour, place and time; later prompts describe only the change and use a pronoun ("She hops to the
left.", "Night falls."). ``full_prompt(scene)`` is the self-contained description the memory module
should write and the diffusion model is trained on.

Train / held-out: ``story_split(story)`` hashes the story's prompts (sha256), so a story is in the same
split whatever seed produced it and the two splits never share a story. ``split_stories`` lists the
stories of one split in a fixed order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, Optional

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "NAMES", "SPECIES", "COLOURS", "PLACES", "TIMES", "POSITIONS", "POSES", "PALETTE", "SKY", "GROUND",
    "SUN", "MOON", "HORIZON", "CELESTIAL_SPOTS", "Scene", "Story", "render", "render_story", "silhouette",
    "animal_mask", "extent",
    "full_prompt", "intro_prompt", "descriptions", "sample_scene", "sample_story", "story_split", "split_stories",
    "corrupt", "degrade", "pronoun", "HELDOUT_FRACTION", "TEST_SEED_START",
]

# ----------------------------------------------------------------------------------------------------------
# Vocabulary (closed and small, so tiny models can learn it)
# ----------------------------------------------------------------------------------------------------------

NAMES: dict[str, Literal["she", "he"]] = {
    "Mia": "she", "Lily": "she", "Rosa": "she", "Nina": "she",
    "Leo": "he", "Max": "he", "Tom": "he", "Ben": "he",
}
SPECIES: tuple[str, ...] = ("rabbit", "cat", "bear", "mouse")
COLOURS: tuple[str, ...] = ("red", "blue", "purple", "brown")
PLACES: tuple[str, ...] = ("meadow", "beach", "snowfield", "desert")
TIMES: tuple[str, ...] = ("day", "night")
POSITIONS: tuple[str, ...] = ("left", "middle", "right")
POSES: tuple[str, ...] = ("standing", "jumping", "lying")

# RGB. Animal colours are >= 105 apart from every sky, ground, sun and moon colour and >= 90 from each other.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "blue": (40, 80, 215), "purple": (150, 60, 190), "brown": (120, 72, 32),
}
GROUND: dict[str, tuple[int, int, int]] = {
    "meadow": (90, 170, 60), "beach": (236, 216, 152), "snowfield": (236, 242, 250), "desert": (212, 140, 70),
}
SKY: dict[str, tuple[int, int, int]] = {"day": (150, 200, 245), "night": (22, 26, 64)}
SUN: tuple[int, int, int] = (255, 205, 30)
MOON: tuple[int, int, int] = (236, 236, 200)

# ----------------------------------------------------------------------------------------------------------
# Geometry on the 32-unit canvas
# ----------------------------------------------------------------------------------------------------------

CANVAS = 32.0
HORIZON = 14.0  # sky above, ground below
BASELINE = 30.0  # bottom of the feet when standing
JUMP = 4.0  # how far a jump lifts the animal
CELESTIAL_RADIUS = 3.0
# The first spot holds the one true sun/moon; broken frames add bodies at the next spots. Spots are high
# enough that no animal reaches them, even a jumping rabbit.
CELESTIAL_SPOTS: tuple[tuple[float, float], ...] = ((5.5, 3.5), (16.5, 3.5), (26.5, 3.5))
POSITION_X: dict[str, float] = {"left": 8.0, "middle": 15.0, "right": 21.0}
MAX_EARS, MAX_LEGS, MAX_CELESTIAL = 3, 5, len(CELESTIAL_SPOTS)


@dataclass(frozen=True)
class _Body:
    """A species' proportions in canvas units. The animal faces right; ``cx`` is the body centre."""

    body_w: float
    body_h: float
    leg_len: float
    leg_w: float
    head_w: float
    head_h: float
    head_dx: float  # head centre, relative to the body centre
    head_raise: float  # head top above body top (standing)
    ear: Literal["rect", "tri", "disc"]
    ear_w: float  # width (rect, tri) or radius (disc)
    ear_h: float  # height above the head (rect, tri)
    ear_pitch: float  # centre-to-centre spacing of neighbouring ears
    tail: Literal["puff", "up", "long", "none"]


BODIES: dict[str, _Body] = {
    "rabbit": _Body(12, 7, 3, 2, 7, 6, 5.5, 4, "rect", 2.0, 5.0, 4.0, "puff"),
    "cat": _Body(13, 6, 4, 2, 7, 6, 6.5, 4, "tri", 3.5, 4.0, 4.5, "up"),
    "bear": _Body(15, 9, 3, 2.5, 8, 7, 6.0, 3, "disc", 2.2, 0.0, 5.0, "none"),
    "mouse": _Body(12, 6, 3, 2, 6, 5, 6.0, 2, "disc", 3.0, 0.0, 6.0, "long"),
}


@dataclass(frozen=True)
class Scene:
    """The true content of one frame. ``n_ears``/``n_legs``/``n_celestial`` default to the valid 2/4/1."""

    name: str
    species: str
    colour: str
    place: str
    time: str
    position: str = "middle"
    pose: str = "standing"
    n_ears: int = 2
    n_legs: int = 4
    n_celestial: int = 1

    def __post_init__(self) -> None:
        for field, value, allowed in (("name", self.name, tuple(NAMES)), ("species", self.species, SPECIES),
                                      ("colour", self.colour, COLOURS), ("place", self.place, PLACES),
                                      ("time", self.time, TIMES), ("position", self.position, POSITIONS),
                                      ("pose", self.pose, POSES)):
            if value not in allowed:
                raise InvalidInputError(f"Scene {field} must be one of {', '.join(allowed)}; got {value!r}.")
        for field, value, lo, hi in (("n_ears", self.n_ears, 0, MAX_EARS), ("n_legs", self.n_legs, 0, MAX_LEGS),
                                     ("n_celestial", self.n_celestial, 0, MAX_CELESTIAL)):
            if not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInputError(f"Scene {field} must be an integer in [{lo}, {hi}]; got {value!r}.")

    @property
    def physically_valid(self) -> bool:
        """One sun or moon, two ears, four legs (legs only count where they show: not while lying)."""
        return self.n_celestial == 1 and self.n_ears == 2 and (self.n_legs == 4 or self.pose == "lying")


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in canvas units, [size, size] each (x varies along columns)."""
    u = (np.arange(size, dtype=np.float32) + 0.5) * (CANVAS / size)
    return np.meshgrid(u, u)  # X, Y


def _rect(X: np.ndarray, Y: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return (X >= x0) & (X < x1) & (Y >= y0) & (Y < y1)


def _blob(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """A rounded rectangle (superellipse of power 4) of width w and height h centred at (cx, cy)."""
    return ((X - cx) / (w / 2)) ** 4 + ((Y - cy) / (h / 2)) ** 4 <= 1.0


def _disc(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (X - cx) ** 2 + (Y - cy) ** 2 <= r * r


def _triangle(X: np.ndarray, Y: np.ndarray, cx: float, base_y: float, w: float, h: float) -> np.ndarray:
    """Isosceles triangle, apex up: base of width w at base_y, apex h above it."""
    t = (base_y - Y) / h  # 0 at the base, 1 at the apex
    return (t >= 0) & (t <= 1) & (np.abs(X - cx) <= (1 - t) * w / 2)


def _spread(n: int, centre: float, pitch: float) -> list[float]:
    return [centre + (k - (n - 1) / 2) * pitch for k in range(n)]


@lru_cache(maxsize=2048)
def silhouette(species: str, position: str, pose: str, n_ears: int = 2, n_legs: int = 4,
               size: int = 32) -> np.ndarray:
    """The animal's mask [size, size] bool (read-only, cached). The renderer and the judge share it."""
    if pose not in POSES or position not in POSITION_X:
        raise InvalidInputError(f"Unknown pose {pose!r} or position {position!r}.")
    return animal_mask(species, POSITION_X[position], JUMP if pose == "jumping" else 0.0, lying=pose == "lying",
                       n_ears=n_ears, n_legs=n_legs, size=size)


@lru_cache(maxsize=16384)
def animal_mask(species: str, cx: float, lift: float = 0.0, *, lying: bool = False, facing: str = "right",
                n_ears: int = 2, n_legs: int = 4, scale: float = 1.0, size: int = 32) -> np.ndarray:
    """The animal's mask [size, size] bool (read-only, cached) with its body centred at ``cx`` canvas units,
    lifted ``lift`` units off the ground, facing ``"right"`` (head on the right) or ``"left"`` (the mirror
    image about ``cx``), drawn ``scale`` times its story-world size about the point (cx, baseline).
    ``silhouette`` (the story world's spots and poses) and the video world draw with it."""
    if species not in BODIES:
        raise InvalidInputError(f"species must be one of {', '.join(SPECIES)}; got {species!r}.")
    if facing not in ("left", "right"):
        raise InvalidInputError(f"facing must be 'left' or 'right'; got {facing!r}.")
    b = BODIES[species]
    X, Y = _grid(size)
    if facing == "left":
        X = 2 * cx - X  # mirror the canvas about the body centre
    if scale != 1.0:
        X, Y = cx + (X - cx) / scale, BASELINE + (Y - BASELINE) / scale
    body_bottom = BASELINE - lift - (0.0 if lying else b.leg_len)
    body_top = body_bottom - b.body_h
    head_top = body_top - (b.head_raise / 2 if lying else b.head_raise)
    head_cx = cx + b.head_dx
    head_cy = head_top + b.head_h / 2

    mask = _blob(X, Y, cx, body_top + b.body_h / 2, b.body_w, b.body_h)
    mask |= _blob(X, Y, head_cx, head_cy, b.head_w, b.head_h)
    # Three ears sit closer together than two, so a broken head stays inside the frame.
    for ex in _spread(n_ears, head_cx - 0.5, b.ear_pitch * (0.8 if n_ears > 2 else 1.0)):
        if b.ear == "rect":
            mask |= _rect(X, Y, ex - b.ear_w / 2, head_top - b.ear_h, ex + b.ear_w / 2, head_top + 1)
        elif b.ear == "tri":
            mask |= _triangle(X, Y, ex, head_top + 1, b.ear_w, b.ear_h + 1)
        else:
            mask |= _disc(X, Y, ex, head_top, b.ear_w)
    if not lying:  # legs fold out of sight while lying
        # Outer legs flush with the body's ends; extra legs keep a 1-unit gap and may stick out a little.
        # Every leg has the same size, so the leg count always shows as leg area, even in a blurry frame.
        pitch = max((b.body_w - b.leg_w) / (n_legs - 1), b.leg_w + 1.0) if n_legs > 1 else 0.0
        for lx in _spread(n_legs, cx, pitch):
            mask |= _rect(X, Y, lx - b.leg_w / 2, body_bottom - 1, lx + b.leg_w / 2, body_bottom + b.leg_len)
    back = cx - b.body_w / 2
    if b.tail == "puff":
        mask |= _disc(X, Y, back + 0.5, body_top + 2, 2.0)
    elif b.tail == "up":
        mask |= _rect(X, Y, back - 0.5, body_top - 5, back + 1.5, body_top + 2)
    elif b.tail == "long":
        mask |= _rect(X, Y, back - 4.5, body_bottom - 2.5, back + 1, body_bottom - 1)
    mask.setflags(write=False)
    return mask


def extent(species: str, scale: float = 1.0) -> tuple[float, float]:
    """How far the animal reaches behind and ahead of its body centre (canvas units, facing right, drawn at
    ``scale``): tail to the back, head and ears to the front."""
    b = BODIES[species]
    tail = {"puff": 1.5, "up": 0.5, "long": 4.5, "none": 0.0}[b.tail]
    ahead = b.head_dx + max(b.head_w / 2, b.ear_pitch / 2 + (b.ear_w if b.ear == "disc" else b.ear_w / 2))
    return scale * (b.body_w / 2 + tail), scale * ahead


@lru_cache(maxsize=256)
def _background(place: str, time: str, n_celestial: int, size: int) -> np.ndarray:
    X, Y = _grid(size)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = GROUND[place]
    image[Y[:, 0] < HORIZON] = SKY[time]
    body = SUN if time == "day" else MOON
    for sx, sy in CELESTIAL_SPOTS[:n_celestial]:
        image[_disc(X, Y, sx, sy, CELESTIAL_RADIUS)] = body
    image.setflags(write=False)
    return image


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The frame of ``scene`` as [size, size, 3] uint8 RGB (a new array). Deterministic."""
    if not isinstance(size, int) or size < 16:
        raise InvalidInputError(f"render size must be an integer >= 16 pixels, got {size!r}.")
    image = _background(scene.place, scene.time, scene.n_celestial, size).copy()
    mask = silhouette(scene.species, scene.position, scene.pose, scene.n_ears, scene.n_legs, size)
    image[mask] = PALETTE[scene.colour]
    return image


def render_story(scenes: "Story | tuple[Scene, ...] | list[Scene]", size: int = 32) -> np.ndarray:
    """All frames of a story as [N, size, size, 3] uint8."""
    scenes = scenes.scenes if isinstance(scenes, Story) else scenes
    return np.stack([render(s, size) for s in scenes])


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------

_POSE_VERB = {"standing": "stands", "jumping": "jumps", "lying": "lies"}
_POSITION_PHRASE = {"left": "on the left of", "middle": "in the middle of", "right": "on the right of"}
_TIME_PHRASE = {"day": "by day", "night": "at night"}


def pronoun(name: str) -> str:
    """'She' or 'He' (capitalised, to start a sentence)."""
    return NAMES[name].capitalize()


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def full_prompt(scene: Scene) -> str:
    """The self-contained description of a frame, e.g.
    ``"Mia, a red rabbit, jumps on the left of a meadow at night."`` (physical facts are not mentioned)."""
    return (f"{scene.name}, {_article(scene.colour)} {scene.colour} {scene.species}, {_POSE_VERB[scene.pose]} "
            f"{_POSITION_PHRASE[scene.position]} {_article(scene.place)} {scene.place} {_TIME_PHRASE[scene.time]}.")


_INTROS = (
    "{name} is {a} {colour} {species}. {P} {verb} {where} {a_place} {place} {when}.",
    "Meet {name}, {a} {colour} {species}. {P} {verb} {where} {a_place} {place} {when}.",
    "{When}, {a} {colour} {species} named {name} {verb} {where} {a_place} {place}.",
)


def intro_prompt(scene: Scene, variant: int = 0) -> str:
    """A story's first sentence: introduces name, species, colour, place and time (three wordings)."""
    when = _TIME_PHRASE[scene.time]
    return _INTROS[variant % len(_INTROS)].format(
        name=scene.name, a=_article(scene.colour), colour=scene.colour, species=scene.species,
        P=pronoun(scene.name), verb=_POSE_VERB[scene.pose], where=_POSITION_PHRASE[scene.position],
        a_place=_article(scene.place), place=scene.place, when=when, When=when[0].upper() + when[1:])


def descriptions(scene: Scene) -> tuple[str, ...]:
    """Every complete, self-contained wording of a frame's scene: ``full_prompt`` (what the memory writes) first,
    then the story intros' wordings (``intro_prompt``). The toy DM trains on all of them, so a prompt it is given
    is judged by what it says, not by how it says it."""
    return (full_prompt(scene),) + tuple(intro_prompt(scene, v) for v in range(len(_INTROS)))


# Changes a later prompt can describe: (kind, target value) -> wordings. "{P}" is the pronoun.
_MOVE_WORDS = {"standing": ("{P} walks to the {pos}.", "{P} runs to the {pos}."), "jumping": ("{P} hops to the {pos}.",)}
_POSE_WORDS = {"jumping": ("{P} jumps.", "{P} jumps up high."), "lying": ("{P} lies down.", "{P} lies down to rest."),
               "standing": ("{P} stands up.", "{P} gets up.")}
_TIME_WORDS = {"night": ("Night falls.", "It gets dark."), "day": ("The sun rises.", "Morning comes.")}


def _next_event(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str]:
    """One change to ``scene`` and the sentence that tells it (never a no-op)."""
    P = pronoun(scene.name)
    while True:
        kind = rng.choice(["move", "pose", "time"], p=[0.45, 0.4, 0.15])
        if kind == "move":
            pos = str(rng.choice([p for p in POSITIONS if p != scene.position]))
            pose = str(rng.choice(["standing", "jumping"]))
            words = _MOVE_WORDS[pose]
            text = words[int(rng.integers(len(words)))].format(P=P, pos=pos)
            return replace(scene, position=pos, pose=pose), text
        if kind == "pose":
            pose = str(rng.choice([p for p in POSES if p != scene.pose]))
            if pose == "standing" and scene.pose != "lying":
                continue  # "stands up" only from lying
            words = _POSE_WORDS[pose]
            return replace(scene, pose=pose), words[int(rng.integers(len(words)))].format(P=P)
        time = "night" if scene.time == "day" else "day"
        words = _TIME_WORDS[time]
        return replace(scene, time=time), words[int(rng.integers(len(words)))]


# ----------------------------------------------------------------------------------------------------------
# Stories and splits
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Story:
    """A story: one true scene and one prompt per frame."""

    scenes: tuple[Scene, ...]
    prompts: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.scenes) != len(self.prompts) or not self.scenes:
            raise InvalidInputError(f"A story needs as many prompts as scenes (>= 1); got {len(self.scenes)} "
                                    f"scenes and {len(self.prompts)} prompts.")

    @property
    def full_prompts(self) -> tuple[str, ...]:
        return tuple(full_prompt(s) for s in self.scenes)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random valid scene."""
    return Scene(name=str(rng.choice(list(NAMES))), species=str(rng.choice(SPECIES)),
                 colour=str(rng.choice(COLOURS)), place=str(rng.choice(PLACES)), time=str(rng.choice(TIMES)),
                 position=str(rng.choice(POSITIONS)), pose=str(rng.choice(POSES, p=[0.5, 0.25, 0.25])))


def sample_story(rng: np.random.Generator, n_frames: int = 6) -> Story:
    """A random story of ``n_frames`` frames; fully determined by the generator's state."""
    if n_frames < 1:
        raise InvalidInputError(f"n_frames must be >= 1, got {n_frames}.")
    scene = sample_scene(rng)
    scenes, prompts = [scene], [intro_prompt(scene, int(rng.integers(len(_INTROS))))]
    for _ in range(n_frames - 1):
        scene, text = _next_event(scene, rng)
        scenes.append(scene)
        prompts.append(text)
    return Story(tuple(scenes), tuple(prompts))


HELDOUT_FRACTION = 1 / 8


def story_split(story: Story) -> Literal["train", "heldout"]:
    """Which split a story belongs to, from a sha256 of its prompts: the same story always lands in the
    same split (whatever seed produced it), so train and held-out never share a story."""
    digest = hashlib.sha256("\n".join(story.prompts).encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION else "train"


# The test split: held-out stories drawn from seeds no development use reaches (the benchmark, the model cards and
# every choice of settings used the first held-out stories, from seed 0 on). Report it once; tune nothing on it.
TEST_SEED_START = 1_000_000


def split_stories(split: Literal["train", "heldout", "test"], n: int, start: int = 0,
                  n_frames: int = 6) -> list[Story]:
    """The first ``n`` stories of ``split``, sampled from seeds ``start, start+1, ...`` (one
    ``np.random.default_rng(seed)`` per story) and kept when ``story_split`` agrees. Deterministic. ``"test"``: the
    held-out stories from seed ``TEST_SEED_START + start`` on (``"heldout"`` is the development set)."""
    if split not in ("train", "heldout", "test"):
        raise InvalidInputError(f"split must be 'train', 'heldout' or 'test', got {split!r}.")
    out: list[Story] = []
    seed = start + (TEST_SEED_START if split == "test" else 0)
    want = "heldout" if split == "test" else split
    while len(out) < n:
        story = sample_story(np.random.default_rng(seed), n_frames)
        if story_split(story) == want:
            out.append(story)
        seed += 1
    return out


# ----------------------------------------------------------------------------------------------------------
# Broken frames and degraded images (judge tests, correction training data)
# ----------------------------------------------------------------------------------------------------------

def corrupt(scene: Scene, rng: np.random.Generator, kind: Optional[str] = None) -> Scene:
    """A physically broken variant of ``scene``: ``kind`` in ``ears`` (1 or 3), ``legs`` (3 or 5; the
    pose becomes standing if it was lying, since lying hides the legs) or ``celestial`` (0 or 2)."""
    kind = kind or str(rng.choice(["ears", "legs", "celestial"]))
    if kind == "ears":
        return replace(scene, n_ears=int(rng.choice([1, 3])))
    if kind == "legs":
        return replace(scene, n_legs=int(rng.choice([3, 5])), pose="standing" if scene.pose == "lying" else scene.pose)
    if kind == "celestial":
        return replace(scene, n_celestial=int(rng.choice([0, 2])))
    raise InvalidInputError(f"corrupt kind must be 'ears', 'legs' or 'celestial', got {kind!r}.")


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return k / k.sum()


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [H, W, C] float, edges replicated."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    padded = np.pad(image, ((r, r), (0, 0), (0, 0)), mode="edge")
    image = sum(k[i] * padded[i:i + image.shape[0]] for i in range(len(k)))
    padded = np.pad(image, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * padded[:, i:i + image.shape[1]] for i in range(len(k)))


def degrade(image: np.ndarray, rng: np.random.Generator, *, blur: float = 0.0, noise: float = 0.0,
            down: int = 1, shift: float = 0.0) -> np.ndarray:
    """What a VQ round trip or a diffusion pass does to a frame, roughly: ``down``x area downsampling then
    bilinear upsampling (all a VQ with ``down``x patches could keep if its decoder were linear), a
    Gaussian ``blur`` (sigma in pixels), a global colour cast (each channel offset by up to ``shift``)
    and Gaussian ``noise`` (std), both on the 0..255 scale. [H, W, 3] uint8 in, the same out."""
    from PIL import Image

    out = image.astype(np.float32)
    h, w = image.shape[:2]
    if down > 1:
        small = Image.fromarray(image).resize((w // down, h // down), Image.Resampling.BOX)
        out = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    if blur > 0:
        out = _blur(out, blur)
    if shift > 0:
        out = out + rng.uniform(-shift, shift, 3)
    if noise > 0:
        out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
