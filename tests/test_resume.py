"""Nothing finished is lost: the CLI writes each frame as it is done, and --resume continues an interrupted run
with the results an uninterrupted run gives (the same seeds, the same corrected tokens in the ARM's context)."""
import json

import pytest

import acdc_core.story as story_module
from acdc_core.cli import main
from acdc_core.tiny import build_default_models

STORY = "Benny the dog plays in a meadow\nHe jumps over a log\nHe chases a ball\nHe drinks water\nHe sleeps\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_default_models(tmp_path_factory.mktemp("models"))


def argv(models, out, prompts, *extra):
    return ["story", "--arm", str(models["arm"]), "--dm", str(models["dm"]), "--llm", str(models["llm"]),
            "--prompts", str(prompts), "--out", str(out), "--steps", "4", "--seed", "3", "--baseline", *extra]


def stop_after(monkeypatch, frames: int, error: BaseException):
    """Make the story stop as frame ``frames + 1`` starts (counting the baseline's frames too)."""
    real, calls = story_module.step_frame, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > frames:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(story_module, "step_frame", step)


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def frames_of(out):
    record = json.loads((out / "run.json").read_text())
    drop = ("seconds",)
    return [{k: v for k, v in f.items() if k not in drop} for f in record["frames"] + record["baseline"]]


def test_an_interrupted_story_resumes_to_the_uninterrupted_result(models, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "story.txt"
    prompts.write_text(STORY)
    assert main(argv(models, tmp_path / "whole", prompts)) == 0

    out = tmp_path / "cut"
    with monkeypatch.context() as patch:
        stop_after(patch, 5 + 3, KeyboardInterrupt())    # the 5 baseline frames, then ACDC frames 1-3
        assert main(argv(models, out, prompts)) == 130
    err = capsys.readouterr().err
    assert "frame 4 of 5 interrupted" in err and "frames 1-3 are saved" in err and "--resume" in err
    record = json.loads((out / "run.json").read_text())
    assert not record["complete"] and len(record["frames"]) == 3 and len(record["baseline"]) == 5
    assert sorted(p.name for p in (out / "frames").glob("acdc_*.png")) == ["acdc_01.png", "acdc_02.png", "acdc_03.png"]
    before = files(out)

    assert main(argv(models, out, prompts)) == 2          # the folder holds a run: refused without --resume
    assert "--resume" in capsys.readouterr().err
    assert files(out) == before

    assert main(argv(models, out, prompts, "--resume")) == 0
    assert "resuming after frame 3 of 5" in capsys.readouterr().err
    assert frames_of(out) == frames_of(tmp_path / "whole")
    assert files(out) == files(tmp_path / "whole")        # every frame and the strip, byte for byte


def test_a_failure_part_way_keeps_the_finished_frames_and_says_how_to_go_on(models, tmp_path, monkeypatch, capsys):
    from acdc_core.errors import EndpointUnreachableError

    prompts = tmp_path / "story.txt"
    prompts.write_text(STORY)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        stop_after(patch, 5 + 2, EndpointUnreachableError("Could not reach the LLM endpoint http://127.0.0.1:9/v1"))
        assert main(argv(models, out, prompts)) == 1
    err = capsys.readouterr().err
    assert "frame 3 of 5 stopped: Could not reach the LLM endpoint" in err and "frames 1-2 are saved" in err
    assert "Traceback" not in err
    assert len(json.loads((out / "run.json").read_text())["frames"]) == 2


def test_resume_refuses_another_run_and_overwrite_replaces_it(models, tmp_path, capsys):
    prompts = tmp_path / "story.txt"
    prompts.write_text(STORY)
    out = tmp_path / "out"
    assert main(argv(models, out, prompts, "--memory", "off")) == 0
    short = tmp_path / "short.txt"
    short.write_text("A cat sleeps\nIt wakes up\n")
    before = files(out)
    assert main(argv(models, out, short, "--memory", "off", "--resume")) == 2
    err = capsys.readouterr().err
    assert "not this one" in err and "prompts" in err
    assert files(out) == before
    assert main(argv(models, out, short, "--memory", "off", "--overwrite")) == 0
    record = json.loads((out / "run.json").read_text())
    assert len(record["frames"]) == 2
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == [
        f"{kind}_{k:02d}.png" for kind in ("acdc", "arm", "base") for k in (1, 2)]   # no frame 3-5 of the old run


def test_resume_with_a_correction_size_is_the_same_run(models, tmp_path, monkeypatch, capsys):
    """Settings held as tuples (correction_size) compare equal to run.json's lists."""
    prompts = tmp_path / "story.txt"
    prompts.write_text(STORY)
    out, extra = tmp_path / "out", ("--memory", "off", "--correction-size", "64")
    with monkeypatch.context() as patch:
        stop_after(patch, 5 + 1, KeyboardInterrupt())
        assert main(argv(models, out, prompts, *extra)) == 130
    assert "frame 1 is saved" in capsys.readouterr().err
    assert main(argv(models, out, prompts, *extra, "--resume")) == 0
    assert "resuming after frame 1 of 5" in capsys.readouterr().err
