"""Toy world: rendering, stories and splits, the analytic judge, the rule-based rewriter, the memory LLM."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from acdc_core.errors import InvalidInputError
from acdc_core.memory import DEFAULT_SYSTEM_PROMPT, MemoryModule, MemorySettings, load_local_llm, per_frame_messages
from acdc_core.toy import judge, world
from acdc_core.toy.rewriter import RuleBasedChat, rewrite
from acdc_core.toy.world import Scene, full_prompt, render, sample_story, split_stories, story_split

SHIPPED_MEMORY = Path(world.__file__).parent / "models" / "memory"


def _stories(n: int, start: int = 0) -> list[world.Story]:
    return [sample_story(np.random.default_rng(seed)) for seed in range(start, start + n)]


# ------------------------------------------------------------------------------------------------------------
# World
# ------------------------------------------------------------------------------------------------------------

def test_render_is_deterministic_and_sized() -> None:
    scene = Scene("Mia", "rabbit", "red", "meadow", "night", "left", "jumping")
    a, b = render(scene), render(scene)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    a[0, 0] = 0  # a new array each time: the cached pieces are never handed out
    assert not np.array_equal(a, render(scene))
    assert render(scene, 64).shape == (64, 64, 3)
    # The frame shows what the scene says: sky colour by time, ground colour by place, the animal's colour.
    assert tuple(b[0, 16]) == world.SKY["night"] and tuple(b[31, 16]) == world.GROUND["meadow"]
    assert (b == world.PALETTE["red"]).all(-1).sum() > 60


def test_sample_story_is_deterministic() -> None:
    one, two = sample_story(np.random.default_rng(7)), sample_story(np.random.default_rng(7))
    assert one == two and len(one.scenes) == len(one.prompts) == 6
    assert one != sample_story(np.random.default_rng(8))
    assert np.array_equal(world.render_story(one), world.render_story(two))


def test_scene_rejects_values_outside_the_vocabulary() -> None:
    with pytest.raises(InvalidInputError, match="species"):
        Scene("Mia", "dragon", "red", "meadow", "day")
    with pytest.raises(InvalidInputError, match="n_ears"):
        Scene("Mia", "cat", "red", "meadow", "day", n_ears=7)


def test_no_animal_ever_covers_a_sun_or_moon_spot() -> None:
    X, Y = world._grid(32)
    spots = np.zeros((32, 32), bool)
    for sx, sy in world.CELESTIAL_SPOTS:
        spots |= world._disc(X, Y, sx, sy, world.CELESTIAL_RADIUS)
    for species, position, pose, ears, legs in itertools.product(world.SPECIES, world.POSITIONS, world.POSES,
                                                                 range(4), range(1, 6)):
        assert not (world.silhouette(species, position, pose, ears, legs) & spots).any()


def test_train_and_heldout_never_share_a_story() -> None:
    train, heldout = split_stories("train", 400), split_stories("heldout", 40)
    assert all(story_split(s) == "train" for s in train) and all(story_split(s) == "heldout" for s in heldout)
    assert not {s.prompts for s in train} & {s.prompts for s in heldout}
    assert split_stories("heldout", 40) == heldout  # deterministic
    fraction = sum(story_split(s) == "heldout" for s in _stories(800)) / 800
    assert abs(fraction - world.HELDOUT_FRACTION) < 0.05


def test_later_prompts_use_pronouns_and_do_not_restate_the_character() -> None:
    restated = re.compile(r"\b(" + "|".join(world.SPECIES + world.COLOURS + world.PLACES + tuple(world.NAMES)) + r")\b")
    for story in _stories(300):
        first, name = story.scenes[0], story.scenes[0].name
        for word in (name, first.species, first.colour, first.place):
            assert word in story.prompts[0]
        for prompt, before, after in zip(story.prompts[1:], story.scenes, story.scenes[1:]):
            assert not restated.search(prompt), prompt
            assert before != after  # every sentence tells a change
            if after.time == before.time:  # a character event: starts with the right pronoun
                assert prompt.split()[0] == world.pronoun(name), prompt
        assert full_prompt(story.scenes[2]).startswith(f"{name}, a")


def test_corrupt_breaks_exactly_one_physical_rule() -> None:
    rng = np.random.default_rng(0)
    for kind in ("ears", "legs", "celestial"):
        scene = world.corrupt(world.sample_scene(rng), rng, kind)
        assert not scene.physically_valid
        assert scene.n_ears != 2 if kind == "ears" else scene.n_ears == 2


# ------------------------------------------------------------------------------------------------------------
# Judge
# ------------------------------------------------------------------------------------------------------------

def test_judge_accuracy_on_rendered_ground_truth() -> None:
    """A measured property of the code: >= 98% per attribute on a fixed seeded set of valid and broken
    frames (wrong ears, legs, suns/moons; a first frame of the same or another species/colour), clean and
    degraded (blur, noise, 2x resampling, VQ-like 4x down/up, 4x + blur + noise)."""
    table = judge.measure_accuracy(n=100, seed=0)
    assert set(table) == {d[0] for d in judge.DEGRADATIONS}
    for degradation, accuracy in table.items():
        for attribute, value in accuracy.items():
            assert value >= 0.98, f"{attribute} under {degradation}: {value:.3f}"


def test_judge_story_flags_broken_and_inconsistent_frames() -> None:
    story = sample_story(np.random.default_rng(3))
    frames = world.render_story(story)
    results = judge.judge_story(frames, story)
    assert all(r["physical_valid"] and r["consistent"] and r["matches_prompt"] for r in results)
    assert judge.summarize(results) == {"physical_valid": 1.0, "consistent": 1.0, "matches_prompt": 1.0}

    other_colour = next(c for c in world.COLOURS if c != story.scenes[0].colour)
    broken = list(story.scenes)
    broken[2] = replace(broken[2], n_celestial=2)
    broken[3] = replace(broken[3], colour=other_colour)
    broken[4] = replace(broken[4], n_ears=3)
    # float [N, 3, H, W] in [0, 1] works like uint8 [N, H, W, 3]
    images = torch.from_numpy(world.render_story(broken)).permute(0, 3, 1, 2).float() / 255
    results = judge.judge_story(images, story)
    assert [r["physical_valid"] for r in results] == [True, True, False, True, False, True]
    assert [r["consistent"] for r in results] == [True, True, True, False, True, True]
    assert results[3]["mismatched"] == ("colour",) and results[2]["n_celestial"] == 2
    assert results[4]["n_ears"] == 3 and results[4]["matches_prompt"]


def test_judge_fails_ghosted_and_smeared_frames_on_fit_error_alone() -> None:
    """Two true frames blended (a ghosted double animal) and a frame with a colour smear keep two ears, four
    legs and one sun, yet are no frame the renderer could draw: physically valid must say no, through the fit
    threshold; the true frame itself passes."""
    scene = world.sample_scene(np.random.default_rng(5))
    other = replace(scene, position=next(p for p in world.POSITIONS if p != scene.position))
    a, b = world.render(scene, 32).astype(np.float64), world.render(other, 32).astype(np.float64)
    ghost = ((a + b) / 2).round().astype(np.uint8)
    smear = a.copy()
    smear[8:24, 4:28] = smear[8:24, 4:28] * 0.4 + np.array(world.PALETTE[scene.colour]) * 0.6
    true = judge.judge_frame(a.astype(np.uint8), scene)
    assert true["physical_valid"] and true["fit_error"] <= judge.FIT_THRESHOLD
    for name, image in (("ghost", ghost), ("smear", smear.round().astype(np.uint8))):
        result = judge.judge_frame(image, scene)
        assert result["fit_error"] > judge.FIT_THRESHOLD, name
        assert not result["physical_valid"], name


def test_calibrate_fit_threshold_is_the_quantile_of_fit_errors() -> None:
    rng = np.random.default_rng(9)
    frames = [world.render(world.sample_scene(rng), 32) for _ in range(6)]
    errors = sorted(judge.read_frame(f)["fit_error"] for f in frames)
    assert judge.calibrate_fit_threshold(frames, 1.0) == pytest.approx(errors[-1])
    assert judge.calibrate_fit_threshold(frames, 0.5) == pytest.approx(float(np.quantile(errors, 0.5)))
    with pytest.raises(InvalidInputError, match="quantile"):
        judge.calibrate_fit_threshold(frames, 0.0)


def test_judge_rejects_frames_of_the_wrong_shape() -> None:
    scene = world.sample_scene(np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="shape"):
        judge.judge_frame(np.zeros((32, 32), np.uint8), scene)
    with pytest.raises(InvalidInputError, match="square"):
        judge.judge_frame(np.zeros((32, 48, 3), np.uint8), scene)
    with pytest.raises(InvalidInputError, match="images for a story"):
        judge.judge_story(np.zeros((2, 32, 32, 3), np.uint8), sample_story(np.random.default_rng(0)))


# ------------------------------------------------------------------------------------------------------------
# Rule-based rewriter
# ------------------------------------------------------------------------------------------------------------

def test_rewriter_reproduces_full_prompts_exactly() -> None:
    for story in _stories(400):
        for i, (sentence, scene) in enumerate(zip(story.prompts, story.scenes)):
            assert rewrite(story.prompts[:i], sentence) == full_prompt(scene)
            assert rewrite(story.full_prompts[:i], sentence) == full_prompt(scene)
    with pytest.raises(InvalidInputError, match="name"):
        rewrite([], "She hops to the left.")


@pytest.mark.parametrize("mode", ["per-frame", "whole-story"])
def test_rule_based_chat_through_memory_module(mode: str) -> None:
    memory = MemoryModule(RuleBasedChat(), MemorySettings(mode=mode))
    for story in split_stories("heldout", 10):
        assert memory.prompts_for_story(story.prompts) == list(story.full_prompts)
    # An unparseable chat gets its sentence back, which MemoryModule then uses as is.
    assert RuleBasedChat().chat(per_frame_messages("", [], "Hello there."), max_new_tokens=8, temperature=0,
                                seed=0) == "Hello there."


# ------------------------------------------------------------------------------------------------------------
# Memory LLM
# ------------------------------------------------------------------------------------------------------------

def test_train_memory_runs_a_few_steps_and_the_folder_loads(tmp_path: Path) -> None:
    from acdc_core.toy.train_memory import main

    out = tmp_path / "memory"
    assert main(["--out", str(out), "--steps", "3", "--stories", "30", "--hidden", "32", "--eval-stories", "1",
                 "--threads", "1"]) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["heldout_frames"] == 6
    assert "3 steps" in (out / "MODEL_CARD.md").read_text()
    llm = load_local_llm(out)
    earlier = ["Mia, a red rabbit, stands on the left of a meadow by day."]
    # The template drops any system prompt: the model sees the same tokens with or without one.
    assert llm.render(per_frame_messages(DEFAULT_SYSTEM_PROMPT, earlier, "She jumps.")) == \
        llm.render(per_frame_messages("", earlier, "She jumps."))
    answer = llm.chat(per_frame_messages("", earlier, "She jumps."), max_new_tokens=8, temperature=0, seed=0)
    assert isinstance(answer, str)


@pytest.mark.skipif(not (SHIPPED_MEMORY / "model.safetensors").is_file(), reason="no shipped toy memory model")
def test_shipped_memory_model_rewrites_heldout_stories() -> None:
    from acdc_core.toy.train_memory import evaluate

    card = json.loads((SHIPPED_MEMORY / "training_summary.json").read_text())
    assert card["frame_exact_match"] >= 0.95
    result = evaluate(SHIPPED_MEMORY, n_stories=4)  # 24 frames through load_local_llm + MemoryModule
    assert result["frame_exact_match"] >= 0.9, result["errors"]


def test_the_test_split_is_held_out_and_apart_from_the_development_stories():
    test, dev = split_stories("test", 30), split_stories("heldout", 300)
    assert all(story_split(s) == "heldout" for s in test)
    assert not {s.prompts for s in test} & {s.prompts for s in dev}
    assert split_stories("test", 30) == test
