"""The toy video world: motion rules, rendering, prompts and splits."""
from dataclasses import replace

import numpy as np
import pytest

from acdc_core.errors import InvalidInputError
from acdc_core.toy import video_world as vw
from acdc_core.toy import world


def _clip(motion, **kw):
    base = dict(name="Mia", species="rabbit", colour="red", place="meadow", time="day", motion=motion,
                direction="right", start=10.0)
    return vw.Clip(**{**base, **kw})


def _dx(clip):
    xs = np.array([s.cx for s in clip.states()])
    return np.diff(xs)


def test_walking_is_constant_velocity_facing_the_way_it_goes():
    for direction, sign in (("right", 1), ("left", -1)):
        clip = _clip("walks", direction=direction, start=10.0 if direction == "right" else 22.0)
        assert np.allclose(_dx(clip), sign * vw.SPEED["walks"])
        assert {s.facing for s in clip.states()} == {direction}
        assert all(s.lift == 0 for s in clip.states())


def test_running_bounces_inside_the_frame():
    clip = _clip("runs", start=20.0)
    states = clip.states()
    facings = [s.facing for s in states]
    assert "left" in facings and "right" in facings                    # it turned round at an edge
    for s in states:
        lo, hi = vw.x_range(s.species, s.facing)
        assert lo - 1e-6 <= s.cx <= hi + 1e-6
    assert np.all(np.abs(_dx(clip)) <= vw.SPEED["runs"] + 1e-6)        # no jump at the bounce


def test_turning_turns_once_at_its_frame_and_hops_follow_an_arc():
    clip = _clip("turns", start=12.0, turn_at=10)
    dx = _dx(clip)
    assert np.all(dx[:9] > 0) and np.all(dx[9:] < 0)
    assert [s.facing for s in clip.states()][9:11] == ["right", "left"]
    hops = _clip("hops").states()
    lifts = [s.lift for s in hops]
    assert lifts[0] == 0 and lifts[vw.HOP_PERIOD] == 0 and max(lifts) == pytest.approx(vw.HOP_HEIGHT)
    assert np.allclose(_dx(_clip("stands")), 0)


def test_every_sampled_clip_keeps_the_animal_in_the_frame():
    for clip in vw.split_clips("train", 60):
        frames = vw.render_clip(clip)
        assert frames.shape == (vw.FRAMES, vw.SIZE, vw.SIZE, 3) and frames.dtype == np.uint8
        for s in clip.states():
            lo, hi = vw.x_range(s.species, s.facing)
            assert lo - 1e-6 <= s.cx <= hi + 1e-6


def test_render_draws_the_state_and_is_deterministic():
    state = vw.FrameState("cat", "blue", "beach", "night", 14.0)
    image = vw.render_frame(state)
    assert np.array_equal(image, vw.render_frame(state))
    mask = world.animal_mask("cat", 14.0, scale=vw.SCALE)
    assert (image[mask] == world.PALETTE["blue"]).all()
    moved = vw.render_frame(replace(state, cx=18.0))
    assert np.array_equal(np.roll(image, 4, axis=1)[14:, 8:], moved[14:, 8:])   # 4 units = 4 px to the right
    mirrored = vw.render_frame(replace(state, facing="left"))
    assert not np.array_equal(image, mirrored)
    # the occluder is drawn in front of the animal
    hidden = vw.render_frame(replace(state, occluder="rock", occluder_x=14.0))
    rock = vw.occluder_mask("rock", 14.0)
    assert (hidden[rock] == vw.OCCLUDER_COLOURS["rock"]).all() and (rock & mask).any()


def test_story_world_silhouettes_are_the_animal_masks_at_their_spots():
    for species in world.SPECIES:
        for pose, lift in (("standing", 0.0), ("jumping", world.JUMP)):
            assert np.array_equal(world.silhouette(species, "left", pose),
                                  world.animal_mask(species, world.POSITION_X["left"], lift))


def test_prompts_state_the_same_facts_in_every_wording():
    clip = _clip("hops", occluder="bush", time="night", direction="left", start=20.0)
    assert clip.prompt == "Mia, a red rabbit, hops to the left past a bush across a meadow at night."
    for v in range(len(vw.PHRASINGS)):
        text = vw.prompt(clip, v).lower()
        assert all(word in text for word in ("mia", "red", "rabbit", "hops to the left", "bush", "meadow", "night"))


def test_held_out_prompts_are_never_trained_on():
    train = {c.prompt for c in vw.split_clips("train", 2000)}
    heldout = vw.split_clips("heldout", 100)
    assert all(vw.clip_split(c) == "heldout" for c in heldout)
    assert not train & {c.prompt for c in heldout}
    assert vw.split_clips("heldout", 100) == heldout                  # deterministic


def test_bad_clips_and_states_are_refused_with_the_field_named():
    with pytest.raises(InvalidInputError, match="motion"):
        _clip("flies")
    with pytest.raises(InvalidInputError, match="colour"):
        vw.FrameState("cat", "green", "beach", "day", 10.0)
    with pytest.raises(InvalidInputError, match="occluder"):
        vw.occluder_mask("tree", 10.0)
