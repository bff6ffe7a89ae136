"""``acdc video`` end to end on the built-in video models (the toy video world's, or the tiny ones without them): the frames, the side-by-side animation and run.json it writes,
the ARM-only video sharing the first window, and bad input refused before anything is written."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from acdc_core.cli import main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("video_models")


@pytest.fixture(scope="module")
def run(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run")
    code = main(["video", "--prompt", "a blue cat jumps on a beach", "--frames", "5", "--window", "2",
                 "--steps", "10", "--seed", "7", "--out", str(out), "--models", str(models), "--fps", "4"])
    assert code == 0
    return out


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_writes_frames_animation_strip_and_record(run, models):
    frames = sorted(p.name for p in (run / "frames").iterdir())
    assert frames == [f"{w}_{k:02d}.png" for w in ("acdc", "arm") for k in range(1, 6)]
    webp = Image.open(run / "side_by_side.webp")
    assert webp.format == "WEBP" and webp.n_frames == 5 and getattr(webp, "is_animated", False)
    assert (run / "strip.png").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["complete"] and record["identity"]["command"] == "video"
    windows = record["acdc"]["windows"]
    assert [w["frames"] for w in windows] == [[1, 2], [3, 4], [5, 5]]
    assert [w["corrected"] for w in windows] == [True, False, False]
    assert [f["arm_seed"] for f in record["acdc"]["frames"]] == [7, 8, 9, 10, 11]
    assert set(windows[0]["seconds"]) == {"decode", "memory", "correct", "encode"}
    assert record["cost"]["acdc_overhead"] > 0
    # frame 1 sampled as the ARM folder says (the tiny ARM's video_sampling: CFG 5; the toy video ARM's own: 1)
    from acdc_core.arm import load_arm
    from acdc_core.cli_video import builtin_models
    from acdc_core.video import VideoSettings

    arm = load_arm(builtin_models(models)[0])
    first = VideoSettings(frames=5, window=2).resolve_sampling(arm).first_sampling
    assert record["settings"]["first_sampling"]["guidance_scale"] == first.guidance_scale


def test_the_arm_only_video_shares_the_first_window_and_then_differs(run):
    record = json.loads((run / "run.json").read_text())
    acdc, arm = record["acdc"]["windows"], record["arm"]["windows"]
    assert acdc[0]["tokens_before"] == arm[0]["tokens_before"]          # one first window, written once
    assert acdc[0]["tokens_after"] != acdc[0]["tokens_before"]          # corrected and swapped in
    assert acdc[1]["tokens_before"] != arm[1]["tokens_before"]          # so what follows differs
    assert not np.array_equal(pixels(run / "frames" / "acdc_03.png"), pixels(run / "frames" / "arm_03.png"))


@pytest.mark.parametrize("args, message", [
    (["--frames", "4", "--window", "4"], "nothing to continue after the window"),
    (["--arm", "nowhere"], "needs --dm \\(SD1.5\\) and --motion-adapter"),
    (["--arm", "nowhere", "--correct", "none"], "nowhere"),
    (["--correct", "some"], None),
    (["--fps", "0"], "--fps must be > 0"),
    (["--prompts", "PROMPTS3", "--frames", "8"], "one per window \\(4 windows of 2 for 8 frames\\); got 3"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, models, capsys, args, message):
    out = tmp_path / "out"
    if message is None:
        with pytest.raises(SystemExit):
            main(["video", "--out", str(out), *args])
        return
    story = tmp_path / "prompts.txt"
    story.write_text("a blue cat on a beach\nshe jumps\nshe lies down\n")
    args = [str(story) if a == "PROMPTS3" else a for a in args]
    assert main(["video", "--out", str(out), "--models", str(tmp_path / "unbuilt"), "--window", "2", *args]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (out / "run.json").exists() and not (tmp_path / "unbuilt").exists()     # before any model


def test_an_earlier_run_is_kept_unless_overwrite(run, models, capsys):
    before = (run / "run.json").read_text()
    assert main(["video", "--frames", "3", "--window", "2", "--out", str(run), "--models", str(models)]) == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "run.json").read_text() == before
