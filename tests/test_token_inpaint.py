"""Token-level inpainting by the ARM itself (Show-o's MaskGIT with known codes): the engine step
(``story.inpaint_tokens``), the ARM Token Inpaint node (wired and painted masks), and ``--token-mask`` on the CLI.
A token-by-token ARM is refused with what to use instead."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from acdc_core.arm import SamplingSettings, load_arm
from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings, new_story
from acdc_core.story import generate, inpaint_tokens, token_cells
from acdc_core.tiny.janus import build_tiny_janus
from acdc_core.tiny.showo import build_tiny_showo
from nodes.loaders import managed

PROMPTS = ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.")
SETTINGS = StorySettings(sampling=SamplingSettings(guidance_scale=2.0, maskgit_steps=4), seed=3)
NODE = nodes.NODE_CLASS_MAPPINGS["ACDC_ARMTokenInpaint"]
WIDGETS = {"cfg": 2.0, "temperature": 1.0, "maskgit_steps": 4, "paint_frame": 1, "masks": "", "image": ""}


@pytest.fixture(scope="module")
def showo_folder(tmp_path_factory):
    return build_tiny_showo(tmp_path_factory.mktemp("tiny_showo"), seed=0)


@pytest.fixture(scope="module")
def showo(showo_folder):
    return load_arm(showo_folder)


@pytest.fixture(scope="module")
def janus(tmp_path_factory):
    return load_arm(build_tiny_janus(tmp_path_factory.mktemp("tiny_janus"), seed=0))


def corner() -> torch.Tensor:
    """A mask over the top-left quarter of a 32 px frame: 4x4 of Show-o's 8x8 codes (4 px cells)."""
    mask = torch.zeros(32, 32)
    mask[:16, :16] = 1
    return mask


def test_the_masked_codes_are_filled_again_and_every_other_code_is_kept(showo):
    frame = generate(new_story(PROMPTS), showo, SETTINGS)
    cells = token_cells(corner(), showo, 0)
    assert int(cells.sum()) == 16 and bool(cells.view(8, 8)[:4, :4].all())
    again = inpaint_tokens(frame, showo, SETTINGS, cells)
    before, after = frame.tokens[0], again.tokens[0]
    assert torch.equal(after[~cells], before[~cells]) and not torch.equal(after[cells], before[cells])
    assert torch.equal(inpaint_tokens(frame, showo, SETTINGS, cells).tokens, again.tokens)      # seeded
    assert again.arm_image is None and "arm_inpaint" in dict(again.seconds)
    assert inpaint_tokens(frame, showo, SETTINGS, torch.zeros(64, dtype=torch.bool)) is frame  # empty: as it was
    half = torch.zeros(32, 32)
    half[:4, :4] = 0.4                                                                           # below half strength
    assert not token_cells(half, showo, 0).any()


def test_a_token_by_token_arm_and_a_mask_of_another_size_are_refused(showo, janus):
    frame = generate(new_story(PROMPTS), janus, SETTINGS)
    with pytest.raises(InvalidInputError, match="cannot re-generate a region.*Inpaint Physical Fix"):
        inpaint_tokens(frame, janus, SETTINGS, torch.ones(16, dtype=torch.bool))
    with pytest.raises(InvalidInputError, match="token mask of frame 2 is 64x64 but the ARM's frame is 32x32"):
        token_cells(torch.ones(64, 64), showo, 1)


def test_the_node_fills_a_wired_or_painted_region_and_passes_an_empty_one_on(showo, janus, standalone_host):
    frame = generate(new_story(PROMPTS), showo, SETTINGS)
    arm = managed(showo, "tiny-showo")
    out = NODE().inpaint(arm, frame, mask=corner()[None], **WIDGETS)
    done, image, applied = out["result"]
    expected = inpaint_tokens(frame, showo, SETTINGS, token_cells(corner(), showo, 0))
    assert torch.equal(done.tokens, expected.tokens) and torch.equal(applied, corner()[None])
    assert image.shape == (1, 32, 32, 3) and torch.equal(done.arm_image, showo.decode(done.tokens))
    assert out["ui"]["acdc_frames"] == [1] and len(out["ui"]["images"]) == 1
    # Painted on the node's enlarged preview (256 px), transparent where painted, as the mask editor saves it.
    picture = np.full((256, 256, 4), 255, np.uint8)
    picture[:128, :128, 3] = 0
    Image.fromarray(picture, "RGBA").save(standalone_host / "input" / "clipspace-token-mask.png")
    painted = NODE().inpaint(arm, frame, **{**WIDGETS, "image": "clipspace-token-mask.png [input]"})["result"]
    assert torch.equal(painted[0].tokens, done.tokens) and torch.equal(painted[2], applied)
    passed = NODE().inpaint(managed(janus, "tiny-janus"), generate(new_story(PROMPTS), janus, SETTINGS), **WIDGETS)
    assert not bool(passed["result"][2].any())                                   # nothing painted: passed on
    with pytest.raises(InvalidInputError, match="cannot re-generate a region"):
        NODE().inpaint(managed(janus, "tiny-janus"), generate(new_story(PROMPTS), janus, SETTINGS), mask=corner()[None],
                       **WIDGETS)


def test_token_masks_on_the_command_line(showo_folder, tmp_path, capsys):
    from acdc_core.cli import main
    from acdc_core.toy.defaults import DM_DIR

    prompts = tmp_path / "story.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    Image.fromarray((corner().numpy() * 255).astype(np.uint8)).save(tmp_path / "corner.png")   # white = fill
    common = ["--dm", str(DM_DIR), "--prompts", str(prompts), "--memory", "off", "--steps", "4", "--arm-cfg", "2",
              "--maskgit-steps", "4", "--token-mask", f"2:{tmp_path / 'corner.png'}"]
    assert main(["story", "--arm", str(showo_folder), "--out", str(tmp_path / "out"), *common]) == 0
    frames = json.loads((tmp_path / "out" / "run.json").read_text())["frames"]
    assert ["arm_inpaint" in f["seconds"] for f in frames] == [False, True]
    janus = build_tiny_janus(tmp_path / "janus", seed=0)
    assert main(["story", "--arm", str(janus), "--out", str(tmp_path / "j"), *common]) == 2
    assert "cannot re-generate a region" in capsys.readouterr().err
