"""A story longer than the ARM's context window: the documented policy (frame 1 and the latest frames that fit)
instead of running on past the window, and a prompt too long for the window refused before any frame."""
import json
import shutil

import pytest

from acdc_core.arm import ARMContext, load_arm
from acdc_core.arm.decoding import window_policy
from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings, frame_ranges, parse_frame_ranges
from acdc_core.story import run_story
from acdc_core.tiny import build_default_models

pytestmark = pytest.mark.floors


def test_window_policy_keeps_frame_one_and_drops_the_earliest_after_it():
    assert window_policy(0) == [()]
    assert window_policy(1) == [(0,), ()]
    assert window_policy(4) == [(0, 1, 2, 3), (0, 2, 3), (0, 3), (0,), ()]


@pytest.mark.parametrize("indices, text", [((), "none"), ((0,), "1"), ((0, 4, 5, 6), "1, 5-7"), ((1, 2, 9), "2-3, 10")])
def test_frame_ranges_round_trip(indices, text):
    assert frame_ranges(indices) == text
    assert parse_frame_ranges(text) == indices


@pytest.fixture(scope="module")
def small_window_arm(tmp_path_factory):
    """The tiny Janus with its language model's window cut to a little over three frames."""
    models = build_default_models(tmp_path_factory.mktemp("models"))
    folder = tmp_path_factory.mktemp("arm") / "arm"
    shutil.copytree(models["arm"], folder)
    arm = load_arm(folder)
    frame = arm.sequence_key(ARMContext(), "a dog", cfg=False).shape[-1] + arm.tokens_per_image
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 3 * frame + 30
    (folder / "config.json").write_text(json.dumps(config))
    return load_arm(folder)


def test_a_story_past_the_window_sees_frame_one_and_the_latest_frames(small_window_arm):
    arm = small_window_arm
    prompts = ["a dog", "a dog runs", "a dog sits", "a dog jumps", "a dog eats", "a dog naps"]
    state = run_story(prompts, arm, None, None, StorySettings(correct_frames=0, seed=2))
    seen = [r.context_frames for r in state.records]
    assert seen[:3] == [(), (0,), (0, 1)]                 # the whole story while it fits
    assert all(s[0] == 0 and len(s) < r.index for s, r in zip(seen[3:], state.records[3:]))
    assert seen[-1][-1] == 4                              # always the frame just before
    for i, indices in enumerate(seen):                    # every sequence the ARM ran fits its window
        length = arm.sequence_key(state.context.select(indices), prompts[i], cfg=False).shape[-1]
        assert length + arm.tokens_per_image + 2 <= arm.context_window
    assert [r.summary()["arm_saw_frames"] for r in state.records][:4] == ["none", "1", "1-2", frame_ranges(seen[3])]


def test_a_prompt_too_long_for_the_window_is_refused_before_any_frame(small_window_arm, monkeypatch):
    arm = small_window_arm
    monkeypatch.setattr(arm, "sample_chunk", lambda *a, **k: pytest.fail("a frame was generated"))
    long = " ".join(["dog"] * 5000)
    with pytest.raises(InvalidInputError) as error:
        run_story(["a dog", "a dog runs", long], arm, None, None, StorySettings(correct_frames=0))
    message = str(error.value)
    assert message.startswith("frame 3:") and "(19999 characters)" in message and len(message) < 400
