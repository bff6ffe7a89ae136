"""The video nodes (``nodes/video.py``) in plain Python on the built-in tiny video models: the wired chain (window by
window), the all-in-one node and ``acdc video`` make the same video from the same settings; IMAGE batches are
[B, H, W, 3] in [0, 1]; bad wiring is refused with a clear error."""
from __future__ import annotations

import json

import pytest
import torch

import nodes
from acdc_core.cli import main
from acdc_core.errors import InvalidInputError
from acdc_core.arm import load_arm
from nodes.wires import BUILTIN_VIDEO, ModelHandle

pytestmark = pytest.mark.floors

PROMPT, FRAMES, WINDOW, SEED, STEPS = "a blue cat jumps on a beach", 5, 2, 11, 10
OWN = {"first_cfg": -1, "first_top_k": -1, "later_cfg": -1, "later_top_k": -1, "temperature": -1}
N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module", autouse=True)
def host(standalone_host):
    return standalone_host


@pytest.fixture(scope="module")
def models():
    arm = N["ACDC_LoadARM"]().load(BUILTIN_VIDEO, "auto", False, False)[0]
    dm = N["ACDC_LoadVideoDM"]().load(BUILTIN_VIDEO, BUILTIN_VIDEO, "auto")[0]
    return arm, dm


def chain(arm, dm, correct_windows=(0,)):
    """The wired chain, window by window: correct the windows named, close the others as the ARM wrote them."""
    video = N["ACDC_VideoPrompt"]().start(arm, PROMPT, FRAMES, WINDOW, SEED, **OWN)[0]
    out = None
    for w in range(3):
        video, window = N["ACDC_VideoWindowFrames"]().generate(arm, video)
        assert window.shape == (min(WINDOW, FRAMES - w * WINDOW), 32, 32, 3)
        if w in correct_windows:
            fixed, prompt = N["ACDC_VideoWindowCorrect"]().correct(dm, video, window, 0.5, STEPS, 7.5, "")
            out = N["ACDC_VideoReTokenize"]().retokenize(arm, video, fixed, prompt)
        else:
            out = N["ACDC_VideoReTokenize"]().retokenize(arm, video)
        video = out[0]
    return out


def tokens_of(state) -> list[list]:
    return [r.tokens_after.tolist() for r in state.windows]


def test_the_wired_chain_the_all_in_one_node_and_the_cli_make_the_same_video(models, tmp_path):
    arm, dm = models
    video, frames, arm_frames, prompts = chain(arm, dm)
    assert video.done and [r.corrected for r in video.windows] == [True, False, False]
    # the corrected window comes at the DM's size, the rest at the ARM's
    assert frames.shape == (FRAMES, *dm.engine.native_size, 3) and arm_frames.shape == (FRAMES, 32, 32, 3)
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1 and prompts == "\n".join([PROMPT] * 3)
    one = N["ACDC_Video"]().run(arm, PROMPT, FRAMES, WINDOW, SEED, "first", 0.5, STEPS, 7.5, True, video_dm=dm,
                                **OWN)
    state, acdc_frames, arm_only, _ = one["result"]
    assert tokens_of(state) == tokens_of(video)
    assert torch.allclose(acdc_frames, frames, atol=1e-6)
    assert one["ui"]["images"][0]["filename"].endswith(".webp") and one["ui"]["animated"] == (True,)
    out = tmp_path / "cli"
    assert main(["video", "--prompt", PROMPT, "--frames", str(FRAMES), "--window", str(WINDOW), "--seed", str(SEED),
                 "--steps", str(STEPS), "--out", str(out), "--models", str(tmp_path / "m")]) == 0
    cli = json.loads((out / "run.json").read_text())
    assert [w["tokens_after"] for w in cli["acdc"]["windows"]] == tokens_of(video)
    assert [w["tokens_after"] for w in cli["arm"]["windows"]] == [r.tokens_after.tolist()
                                                                  for r in _arm_only(arm, dm).windows]
    assert arm_only.shape == (FRAMES, 32, 32, 3)


def _arm_only(arm, dm):
    return N["ACDC_Video"]().run(arm, PROMPT, FRAMES, WINDOW, SEED, "none", 0.5, STEPS, 7.5, False, video_dm=dm,
                                 **OWN)["result"][0]


def test_the_arms_sampling_widgets_override_only_what_they_set(models):
    arm, _ = models
    # the ARM folder's own video sampling (the tiny ARM's), else its plain sampling for every frame (the toy's)
    own = arm.engine.default_video_sampling or (arm.engine.default_sampling,) * 2
    assert own[1].top_k != 3
    video = N["ACDC_VideoPrompt"]().start(arm, PROMPT, FRAMES, WINDOW, SEED, **{**OWN, "later_top_k": 3})[0]
    assert video.settings.first_sampling == own[0]
    assert video.settings.later_sampling.top_k == 3
    assert video.settings.later_sampling.guidance_scale == own[1].guidance_scale


def test_bad_wiring_is_refused(models, tiny_models):
    arm, dm = models
    video = N["ACDC_VideoPrompt"]().start(arm, PROMPT, FRAMES, WINDOW, SEED, **OWN)[0]
    with pytest.raises(InvalidInputError, match="no open window to correct"):
        N["ACDC_VideoWindowCorrect"]().correct(dm, video, torch.rand(2, 32, 32, 3), 0.5, STEPS, 7.5, "")
    with pytest.raises(InvalidInputError, match="no open window to close"):
        N["ACDC_VideoReTokenize"]().retokenize(arm, video)
    opened, window = N["ACDC_VideoWindowFrames"]().generate(arm, video)
    with pytest.raises(InvalidInputError, match="holds 2 frames; the window input has 3"):
        N["ACDC_VideoWindowCorrect"]().correct(dm, opened, torch.rand(3, 32, 32, 3), 0.5, STEPS, 7.5, "")
    with pytest.raises(InvalidInputError, match="leaves no denoising step"):
        N["ACDC_VideoWindowCorrect"]().correct(dm, opened, window, 0.01, STEPS, 7.5, "")
    with pytest.raises(InvalidInputError, match="nothing to continue"):
        N["ACDC_VideoPrompt"]().start(arm, PROMPT, 2, 2, SEED, **OWN)
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        N["ACDC_VideoPrompt"]().start(arm, "  \n# note", FRAMES, WINDOW, SEED, **OWN)
    janus = ModelHandle(load_arm(tiny_models["arm"]), None, "janus")
    with pytest.raises(InvalidInputError, match="not video"):
        N["ACDC_VideoPrompt"]().start(janus, PROMPT, FRAMES, WINDOW, SEED, **OWN)
