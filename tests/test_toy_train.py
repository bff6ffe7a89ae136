"""The one training command: the story world's three trainers and the video world's two, two one-thread lanes,
every model folder loadable."""
import sys

from acdc_core.arm import load_arm
from acdc_core.correct import load_corrector
from acdc_core.memory import load_local_llm
from acdc_core.toy import train

QUICK = {"arm": "--vq-steps 2 --lm-steps 2 --stories 8 --hidden 32 --layers 1 --eval-stories 0 --vq-eval-frames 6",
         "dm": "--steps 2 --stories 8 --eval-frames 0",
         "memory": "--steps 2 --stories 20 --hidden 32 --eval-stories 0",
         "video_arm": "--vq-steps 2 --lm-steps 2 --clips 4 --hidden 32 --layers 1 --eval-clips 0",
         "video_dm": "--image-steps 2 --steps 2 --clips 8 --batch-size 1 --eval-clips 0"}


def _args(names):
    return [a for n in names for a in (f"--{n.replace('_', '-')}-args", QUICK[n])]


def test_commands_are_the_trainers_own_with_one_thread_and_the_seed(tmp_path):
    cmds = train.commands(tmp_path, 7, {"dm": ["--steps", "5"]})
    assert set(cmds) == {"arm", "dm", "memory", "video_arm", "video_dm"}
    for name, cmd in cmds.items():
        assert cmd[:3] == [sys.executable, "-m", f"acdc_core.toy.train_{name}"]
        assert cmd[3:9] == ["--out", str(tmp_path / name), "--seed", "7", "--threads", "1"]
    assert cmds["dm"][-2:] == ["--steps", "5"] and cmds["arm"][-1] == "1"


def test_one_command_trains_all_three_story_models(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--world", "story"] + _args(("arm", "dm", "memory"))
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert all(f"{name} done" in out for name in ("arm", "dm", "memory")) and "video" not in out
    assert load_arm(tmp_path / "arm").family == "unified"
    assert load_corrector(tmp_path / "dm").native_size == (32, 32)
    assert load_local_llm(tmp_path / "memory") is not None


def test_one_command_trains_both_video_models(tmp_path, capsys):
    from acdc_core.correct.video import load_animatediff

    assert train.main(["--out", str(tmp_path), "--world", "video"] + _args(("video_arm", "video_dm"))) == 0
    out = capsys.readouterr().out
    assert "video_arm done" in out and "video_dm done" in out and "memory" not in out
    arm = load_arm(tmp_path / "video_arm")
    assert arm.family == "unified" and arm.video_capable
    assert load_animatediff(tmp_path / "video_dm", tmp_path / "video_dm" / "motion_adapter").native_size == (32, 32)


def test_a_failing_trainer_is_reported(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--world", "story", "--arm-args=--no-such-option", "--dm-args", QUICK["dm"],
            "--memory-args", QUICK["memory"]]
    assert train.main(argv) == 1
    out = capsys.readouterr().out
    assert "arm FAILED" in out and "failed: ['arm']" in out and (tmp_path / "arm.log").read_text()
