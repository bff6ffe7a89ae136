"""The one training command: three trainers, two one-thread lanes, every model folder loadable."""
import sys

from acdc_core.arm import load_arm
from acdc_core.correct import load_corrector
from acdc_core.memory import load_local_llm
from acdc_core.toy import train

QUICK = {"arm": "--vq-steps 2 --lm-steps 2 --stories 8 --hidden 32 --layers 1 --eval-stories 0 --vq-eval-frames 6",
         "dm": "--steps 2 --stories 8 --eval-frames 0",
         "memory": "--steps 2 --stories 20 --hidden 32 --eval-stories 0"}


def test_commands_are_the_trainers_own_with_one_thread_and_the_seed(tmp_path):
    cmds = train.commands(tmp_path, 7, {"dm": ["--steps", "5"]})
    assert set(cmds) == {"arm", "dm", "memory"}
    for name, cmd in cmds.items():
        assert cmd[:3] == [sys.executable, "-m", f"acdc_core.toy.train_{name}"]
        assert cmd[3:9] == ["--out", str(tmp_path / name), "--seed", "7", "--threads", "1"]
    assert cmds["dm"][-2:] == ["--steps", "5"] and cmds["arm"][-1] == "1"


def test_one_command_trains_all_three_models(tmp_path, capsys):
    argv = ["--out", str(tmp_path)] + [a for n, extra in QUICK.items() for a in (f"--{n}-args", extra)]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert all(f"{name} done" in out for name in train.TRAINERS)
    assert load_arm(tmp_path / "arm").family == "unified"
    assert load_corrector(tmp_path / "dm").native_size == (32, 32)
    assert load_local_llm(tmp_path / "memory") is not None


def test_a_failing_trainer_is_reported(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--arm-args=--no-such-option", "--dm-args", QUICK["dm"],
            "--memory-args", QUICK["memory"]]
    assert train.main(argv) == 1
    out = capsys.readouterr().out
    assert "arm FAILED" in out and "failed: ['arm']" in out and (tmp_path / "arm.log").read_text()
