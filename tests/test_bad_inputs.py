"""Bad inputs through the CLI, as a table: each one ends with exit code 2 and a message that names the input, no
traceback, no model loaded where the check needs none, and no file of an earlier run changed.
(The nodes' table is tests/test_bad_inputs_nodes.py; the hostile endpoint is tests/test_endpoint_security.py.)"""
import json
import pickle
import shutil

import pytest

import acdc_core.arm as arm_package
import acdc_core.correct as correct_package
import acdc_core.memory as memory_package
from acdc_core.cli import main

pytestmark = pytest.mark.floors

STORY = "Benny the dog plays in a meadow\nHe jumps over a log\nHe sleeps\n"


@pytest.fixture(scope="module")
def world(tiny_models, tmp_path_factory):
    """The tiny models, an earlier complete run (the folder every row writes to) and the bad files of the rows."""
    root = tmp_path_factory.mktemp("bad-inputs")
    files = root / "files"
    files.mkdir()
    (files / "story.txt").write_text(STORY)
    (files / "latin1.txt").write_bytes("Benny le chien joue dans un pr\xe9\n".encode("latin-1"))
    (files / "mixed.json").write_text(json.dumps([None, 3, {"a": 1}]))
    (files / "broken.json").write_text("[\"a dog\", ")
    (files / "empty.txt").write_text("\n# only a comment\n")
    (files / "long.txt").write_text(STORY + "He eats\nHe runs\n" + "dog " * 5000 + "\n")
    (files / "not_image.png").write_text("this is not a picture")
    from PIL import Image
    Image.new("L", (32, 32), 255).save(files / "mask.png")
    (files / "weights.ckpt").write_bytes(pickle.dumps({"a": 1}))
    (files / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (files / "a_file").write_text("not a folder")
    (files / "no_config").mkdir()
    pickled_arm = files / "pickled_arm"
    shutil.copytree(tiny_models["arm"], pickled_arm)
    (pickled_arm / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    remote_llm = files / "remote_llm"
    shutil.copytree(tiny_models["llm"], remote_llm)
    config = json.loads((remote_llm / "config.json").read_text())
    config.update(model_type="my_own_llm", auto_map={"AutoModelForCausalLM": "modeling_mine.MyLLM"})
    (remote_llm / "config.json").write_text(json.dumps(config))

    earlier = root / "earlier"
    assert main(base_argv(tiny_models, files, earlier)) == 0
    return {"models": tiny_models, "files": files, "earlier": earlier}


def base_argv(models, files, out):
    return ["story", "--arm", str(models["arm"]), "--dm", str(models["dm"]), "--memory", "off",
            "--prompts", str(files / "story.txt"), "--out", str(out), "--steps", "4"]


def with_option(argv, option, *values):
    """``argv`` with ``option`` set to ``values`` (replacing it if present; no values: a flag)."""
    out = list(argv)
    if option in out:
        at = out.index(option)
        del out[at:at + 2]
    return out + [option, *values]


# (id, how the command line changes, the phrase the message must hold, whether a model may load first)
ROWS = [
    ("strength-0", [("--strength", "0")], "strength (t') must be in (0, 1]", False),
    ("strength-1.5", [("--strength", "1.5")], "strength (t') must be in (0, 1]", False),
    ("strength-nan", [("--strength", "nan")], "strength (t')", False),
    ("fix-strength-nan", [("--fix-strength", "nan")], "fix_strength", False),
    ("steps-0", [("--steps", "0")], "steps must be a whole number >= 1", False),
    ("cfg-inf", [("--cfg", "inf")], "guidance_scale (the DM's CFG) must be a finite number", False),
    ("cfg-nan", [("--cfg", "nan")], "guidance_scale (the DM's CFG) must be a finite number", False),
    ("cfg-negative", [("--cfg", "-1")], "guidance_scale (the DM's CFG) must be >= 0", False),
    ("arm-cfg-nan", [("--arm-cfg", "nan")], "the ARM's guidance_scale must be a finite number", False),
    ("temperature-nan", [("--temperature", "nan")], "temperature must be a finite number", False),
    ("temperature-negative", [("--temperature", "-0.5")], "temperature must be >= 0", False),
    ("top-p-0", [("--top-p", "0")], "top_p must be in (0, 1]", False),
    ("top-p-nan", [("--top-p", "nan")], "top_p must be in (0, 1]", False),
    ("top-k-negative", [("--top-k", "-1")], "top_k must be a whole number >= 0", False),
    ("seed-2^64", [("--seed", str(2**64))], "seed must be a whole number in [0, 2^64 - 1]", False),
    ("seed-offset-overflows", [("--seed", str(2**64 - 2))], "seed 18446744073709551614 is too large for a story "
                                                              "of 3 frames", False),
    ("dm-seed-negative", [("--dm-seed", "-1")], "dm_seed must be a whole number", False),
    ("correction-size-0", [("--correction-size", "0")], "--correction-size must be a positive number", False),
    ("correction-size-not-multiple", [("--correction-size", "60")], "correction_size 60x60 does not suit this "
                                                                   "diffusion model", True),
    ("correct-frames-abc", [("--correct-frames", "abc")], "correct_frames must be 'all'", False),
    ("device-bogus", [("--device", "bogus")], "--device 'bogus' is not a device name", False),
    ("device-cuda-absent", [("--device", "cuda")], "no CUDA GPU", False),
    ("dtype-bogus", [("--dtype", "float8")], "unknown dtype 'float8'", False),
    ("scheduler-bogus", [("--scheduler", "plms")], "--scheduler: invalid choice: 'plms'", False),
    ("prompts-missing", [("--prompts", "{files}/missing.txt")], "prompts file", False),
    ("prompts-not-utf8", [("--prompts", "{files}/latin1.txt")], "is not UTF-8 text", False),
    ("prompts-json-not-strings", [("--prompts", "{files}/mixed.json")], "must hold a JSON list of strings", False),
    ("prompts-json-broken", [("--prompts", "{files}/broken.json")], "is not valid JSON", False),
    ("prompts-empty", [("--prompts", "{files}/empty.txt")], "the story is empty", False),
    ("prompt-too-long-at-frame-6", [("--prompts", "{files}/long.txt")], "frame 6: the prompt 'dog dog", True),
    ("system-prompt-missing", [("--memory", "per-frame"), ("--llm", "{llm}"),
                               ("--system-prompt", "{files}/missing.txt")], "--system-prompt file", False),
    ("mask-beyond-story", [("--mask", "9:{files}/mask.png")], "--mask names frame 9 but the story has 3", False),
    ("mask-not-an-image", [("--mask", "1:{files}/not_image.png")], "could not be read as an image", False),
    ("mask-missing", [("--mask", "1:{files}/missing.png")], "mask file", False),
    ("mask-bad-spec", [("--mask", "one")], "--mask takes FRAME:PATH", False),
    ("mask-on-uncorrected-frame", [("--correct-frames", "1"), ("--mask", "2:{files}/mask.png")],
     "leaves uncorrected", False),
    ("arm-missing", [("--arm", "{files}/nowhere")], "does not exist", False),
    ("arm-no-config", [("--arm", "{files}/no_config")], "has neither config.json nor acdc_arm.json", False),
    ("arm-pickle-renamed", [("--arm", "{files}/pickled_arm")], "pickle", False),
    ("dm-missing", [("--dm", "{files}/nowhere")], "diffusion model not found", False),
    ("dm-pickle", [("--dm", "{files}/weights.ckpt")], "pickle checkpoint", False),
    ("dm-truncated", [("--dm", "{files}/truncated.safetensors")], "could not be read as a .safetensors", False),
    ("llm-missing", [("--memory", "per-frame"), ("--llm", "{files}/nowhere")], "LLM folder not found", False),
    ("llm-remote-code", [("--memory", "per-frame"), ("--llm", "{files}/remote_llm")], "trust_remote_code", False),
    ("memory-without-llm", [("--memory", "per-frame")], "needs a language model", False),
    ("out-is-a-file", [("--out", "{files}/a_file")], "is a file, not a folder", False),
    ("out-not-creatable", [("--out", "{files}/a_file/inside")], "cannot write the output folder", False),
    ("endpoint-not-http", [("--memory", "per-frame"), ("--endpoint", "ftp://example.com/v1")],
     "must start with http:// or https://", False),
    ("endpoint-key-variable-not-allowed", [("--memory", "per-frame"), ("--endpoint", "http://127.0.0.1:9/v1"),
                                           ("--api-key-env", "AWS_SECRET_ACCESS_KEY")], "ACDC_LLM_API_KEY", False),
    ("endpoint-timeout-0", [("--memory", "per-frame"), ("--endpoint", "http://127.0.0.1:9/v1"),
                            ("--endpoint-timeout", "0")], "timeout", False),
]


@pytest.mark.parametrize("changes, phrase, loads", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_cli_input(world, changes, phrase, loads, monkeypatch, capsys):
    files, models, earlier = world["files"], world["models"], world["earlier"]
    if not loads:
        for package, name in ((arm_package, "load_arm"), (correct_package, "load_corrector"),
                              (memory_package, "load_local_llm")):
            monkeypatch.setattr(package, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran for a cheap check"))
    argv = base_argv(models, files, earlier) + ["--overwrite"]
    for option, value in changes:
        argv = with_option(argv, option, value.format(files=files, llm=models["llm"]))
    before = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    try:
        code = main(argv)
    except SystemExit as stop:          # argparse's own refusals (usage + message)
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert phrase in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before


def test_demo_refuses_options_it_does_not_use(capsys, tmp_path):
    for option in (["--mask", "1:m.png"], ["--correct-frames", "2"], ["--resume"], ["--arm", "x"]):
        with pytest.raises(SystemExit) as stop:
            main(["demo", "--out", str(tmp_path), *option])
        assert stop.value.code == 2
        assert f"unrecognized arguments: {option[0]}" in capsys.readouterr().err


def test_demo_never_replaces_a_story_run(world, capsys):
    before = {p: p.read_bytes() for p in world["earlier"].rglob("*") if p.is_file()}
    assert main(["demo", "--out", str(world["earlier"])]) == 2
    assert "holds an `acdc story` run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in world["earlier"].rglob("*") if p.is_file()} == before


def test_a_text_story_may_start_with_a_bracket_and_json_is_chosen_by_the_file_name(tmp_path):
    from acdc_core.cli import read_prompts

    (tmp_path / "story.txt").write_text("[Scene 1] Benny the dog plays\n[Scene 2] He sleeps\n")
    assert read_prompts(tmp_path / "story.txt") == ["[Scene 1] Benny the dog plays", "[Scene 2] He sleeps"]
    (tmp_path / "story.json").write_text(json.dumps(["Benny the dog plays", "He sleeps"]))
    assert read_prompts(tmp_path / "story.json") == ["Benny the dog plays", "He sleeps"]


def test_a_run_record_that_is_not_an_object_is_refused_not_a_traceback(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("[]")
    assert main(base_argv(world["models"], world["files"], out)) == 2
    err = capsys.readouterr().err
    assert "is not a readable run record (not a JSON object)" in err and "Traceback" not in err


def test_the_table_is_at_least_forty_inputs():
    assert len(ROWS) >= 40
