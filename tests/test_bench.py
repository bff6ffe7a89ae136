"""acdc bench: item sets, shards, item folders that are complete or absent, resuming after a kill, two processes
under torchrun giving the table one process gives, and the merge refusing what is not complete."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from acdc_core.bench import Shard, parse_shard, read_items, shard_from_env, variant_named, write_items
from acdc_core.bench.items import items_digest
from acdc_core.bench.store import check_item, clear_partials, item_dir, write_item
from acdc_core.bench.variants import slug
from acdc_core.cost import meter, stage
from acdc_core.errors import InvalidInputError
from acdc_core.toy import defaults
from acdc_core.toy.evaluate import toy_items

ROOT = Path(__file__).resolve().parent.parent
needs_toy = pytest.mark.skipif(not defaults.available(), reason="the trained toy models are not shipped here")
TABLES = ("per_frame_shown.md", "per_frame_context.md", "differences_shown.md", "differences_context.md")
# Two stories, the ARM alone and ACDC #2 (a corrected frame in every story, and the rest by the ARM from it)
RUN = ["bench", "run", "--toy", "heldout", "--count", "2", "--variants", "ARM only", "ACDC #2", "--threads", "1"]


# -- shards, items, variants ------------------------------------------------------------------------------------

def test_shards_partition_the_items():
    items = list(range(11))
    parts = [Shard(i, 3).take(items) for i in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    assert parse_shard("2/4") == Shard(2, 4)
    assert shard_from_env(None, {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert shard_from_env("0/3", {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(0, 3)   # explicit wins
    assert shard_from_env(None, {}) == Shard(0, 1)
    for bad in ("3/3", "1", "-1/2", "a/b"):
        with pytest.raises(InvalidInputError, match="i/N"):
            parse_shard(bad)
    with pytest.raises(InvalidInputError, match="together"):
        shard_from_env(None, {"RANK": "0"})


def test_item_sets_are_checked(tmp_path):
    items = toy_items("heldout", 3, start=2, seed_offset=5)
    assert [i.id for i in items] == ["heldout-0002", "heldout-0003", "heldout-0004"]
    assert [i.seed for i in items] == [1007, 1008, 1009]
    path = write_items(tmp_path / "set.jsonl", items)
    assert read_items(path) == items and items_digest(read_items(path)) == items_digest(items)
    good = {"id": "a", "prompts": ["x", "y"], "seed": 0}
    for bad, message in [({**good, "id": "../etc"}, "id"), ({**good, "id": ".."}, "id"),
                         ({**good, "prompts": []}, "prompts"), ({**good, "prompts": ["ok", " "]}, "prompts"),
                         ({**good, "seed": -1}, "seed"), ({**good, "seed": True}, "seed"),
                         ({**good, "extra": 1}, "unknown field"), ({**good, "toy": {"split": "train", "index": 0}}, "toy")]:
        (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
        with pytest.raises(InvalidInputError, match=message):
            read_items(tmp_path / "bad.jsonl")
    (tmp_path / "twice.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InvalidInputError, match="twice"):
        read_items(tmp_path / "twice.jsonl")
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_items(tmp_path / "none.jsonl")


def test_variant_names():
    assert variant_named("ACDC #3").correct_frames == 3 and variant_named("acdc-3").correct_frames == 3
    assert variant_named("acdc-w-o-memory").memory is False
    assert variant_named("DM alone").arm is False
    assert slug("ACDC w/o memory") == "acdc-w-o-memory"
    with pytest.raises(InvalidInputError, match="unknown variant"):
        variant_named("ACDC #0")


# -- item folders ------------------------------------------------------------------------------------------------

def test_an_item_folder_is_complete_or_it_is_redone(tmp_path):
    folder = item_dir(tmp_path, "acdc", "s1")
    assert check_item(folder) == "missing"
    frames = [torch.rand(3, 8, 8) for _ in range(2)]
    write_item(folder, {"x": 1}, frames, frames)
    assert check_item(folder) is None
    png = folder / "frames" / "shown_02.png"
    data = png.read_bytes()
    png.write_bytes(data[:-5])
    assert "changed" in check_item(folder)
    png.write_bytes(data)
    assert check_item(folder) is None
    (folder / "frames" / "shown_03.png").write_bytes(data)
    assert "not the ones" in check_item(folder)
    write_item(folder, {"x": 2}, frames)        # replaces it whole
    assert check_item(folder) is None and not (folder / "frames" / "context_01.png").exists()
    (folder / "done.json").write_text("{")
    assert "done.json" in check_item(folder)
    # what a killed writer leaves behind is cleared for the items of this shard only
    for name in (".s1.partial-123", ".s2.partial-9"):
        (folder.parent / name).mkdir()
    assert clear_partials(tmp_path, ["acdc"], ["s1"]) == 1
    assert (folder.parent / ".s2.partial-9").exists() and not (folder.parent / ".s1.partial-123").exists()


def test_the_cost_meter_sees_every_stage():
    with meter() as m:
        with stage("arm"):
            pass
        with stage("arm"):
            with stage("decode") as took:
                pass
    with stage("unseen"):
        pass
    assert took[0] >= 0 and m.stages["arm"].calls == 2 and m.stages["decode"].calls == 1
    assert set(m.summary()) == {"arm", "decode"} and m.stages["arm"].peak_bytes > 0


# -- the runs ----------------------------------------------------------------------------------------------------

def _acdc(args, env=None, **kw):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "acdc_core.cli", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600, **kw)


def _tables(out: Path) -> dict:
    return {name: (out / "merged" / name).read_text() for name in TABLES}


def _bench_run(tmp_path_factory, name: str, run: list) -> Path:
    """A benchmark folder made once per module by ``acdc bench run`` (``run``: its arguments but --out)."""
    out = tmp_path_factory.mktemp("bench") / name
    done = _acdc(run + ["--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return _bench_run(tmp_path_factory, "one", RUN)


@needs_toy
def test_one_process_runs_every_item_and_merges(one_process):
    items = read_items(one_process / "items.jsonl")
    assert [i.id for i in items] == ["heldout-0000", "heldout-0001"]
    for v in ("arm-only", "acdc-2"):
        for item in items:
            folder = item_dir(one_process, v, item.id)
            assert check_item(folder) is None
            run = json.loads((folder / "run.json").read_text())
            assert [f["corrected"] for f in run["frames"]] == ([False] * 6 if v == "arm-only" else [True] * 2 + [False] * 4)
            assert run["seed"] == item.seed and "arm" in run["cost"]
    table = json.loads((one_process / "merged" / "merged.json").read_text())
    rows = {(r["variant"], r["metric"]): r for r in table["tables"]["per_frame_shown"]}
    # ACDC #2 leaves frames 3-6 to the ARM, but from a corrected context: frame 1 of both is the ARM's own at the
    # same seed before correction, so the ARM-only frame 1 scores are what the ARM wrote
    assert set(rows) == {(v, m) for v in ("ARM only", "ACDC #2")
                         for m in ("physical_valid", "consistent", "matches_prompt", "prompt_attributes")}
    assert rows[("ARM only", "consistent")]["f1"][0] == 1.0     # frame 1 is consistent with itself
    # what the ARM only shows is what its context holds
    context = {(r["variant"], r["metric"]): r for r in table["tables"]["per_frame_context"]}
    assert context[("ARM only", "physical_valid")] == rows[("ARM only", "physical_valid")]
    assert (one_process / "merged" / "cost.md").read_text().count("| total (wall) |") == 2


@needs_toy
def test_two_processes_under_torchrun_give_the_same_tables(one_process, tmp_path):
    out = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29613",
                "-m", "acdc_core.cli"]
    done = subprocess.run(torchrun + RUN + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shard 0/2: 1 of 2 items" in done.stderr and "shard 1/2: 1 of 2 items" in done.stderr
    assert _tables(out) == _tables(one_process)
    # a shard given by hand over the same folder finds its share complete
    again = _acdc(RUN + ["--out", str(out), "--shard", "1/2"])
    assert again.returncode == 0 and "ran 0, already complete 2" in again.stderr


@needs_toy
def test_a_killed_run_resumes_to_the_same_tables(one_process, tmp_path):
    out = tmp_path / "killed"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "acdc_core.cli", *RUN, "--out", str(out)], cwd=ROOT,
                               env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = item_dir(out, "acdc-2", "heldout-0000")
    deadline = time.time() + 300
    while check_item(first) is not None and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert check_item(first) is None
    assert check_item(item_dir(out, "acdc-2", "heldout-0001")) is not None   # killed before the last
    with pytest.raises(InvalidInputError, match="not complete"):
        from acdc_core.bench.merge import collect
        collect(out)
    done = _acdc(RUN + ["--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert "already complete 2" in done.stderr          # story 0's two runs were kept, not redone
    assert _tables(out) == _tables(one_process)
    assert not list(out.glob("runs/*/.*partial*"))


@needs_toy
def test_a_damaged_item_is_refused_by_the_merge_and_redone(one_process, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(one_process, out)
    png = item_dir(out, "arm-only", "heldout-0001") / "frames" / "shown_04.png"
    picture = np.zeros((32, 32, 3), np.uint8)
    from PIL import Image
    Image.fromarray(picture).save(png)
    merged = _acdc(["bench", "merge", "--out", str(out)])
    assert merged.returncode == 2 and "ARM only / heldout-0001: frames/shown_04.png changed" in merged.stderr
    done = _acdc(RUN + ["--out", str(out)])
    assert done.returncode == 0 and "ran 1, already complete 3, redone 1" in done.stderr
    assert _tables(out) == _tables(one_process)


@needs_toy
def test_another_benchmark_in_the_same_folder_is_refused(one_process, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(one_process, out)
    done = _acdc(RUN[:-5] + ["--variants", "ARM only", "--threads", "1", "--out", str(out)])
    assert done.returncode == 2 and "holds another benchmark (different variants)" in done.stderr


@needs_toy
def test_fid_against_the_toy_truth_is_merged_and_its_reference_resumes(one_process, tiny_clip, tmp_path):
    from acdc_core.bench.reference import reference_dir
    from acdc_core.bench.store import read_frames
    from acdc_core.toy.evaluate import toy_story
    from acdc_core.toy.world import render_story

    out = tmp_path / "fid"
    shutil.copytree(one_process, out)
    made = _acdc(["bench", "reference", "--out", str(out), "--shard", "1/2"])
    assert made.returncode == 0 and "made 1, already complete 0" in made.stderr, made.stderr
    merged = _acdc(["bench", "merge", "--out", str(out), "--fid", "clip", "--fid-model", str(tiny_clip)])
    assert merged.returncode == 2 and "1 of 2 items have no complete reference frames (heldout-0000" in merged.stderr
    made = _acdc(["bench", "reference", "--out", str(out)])
    assert made.returncode == 0 and "made 1, already complete 1" in made.stderr, made.stderr
    for item in read_items(out / "items.jsonl"):
        assert np.array_equal(np.stack(read_frames(reference_dir(out, item.id))), render_story(toy_story(item)))
    merged = _acdc(["bench", "merge", "--out", str(out), "--fid", "clip", "--fid-model", str(tiny_clip),
                    "--fid-resamples", "10"])
    assert merged.returncode == 0, merged.stderr
    tables = json.loads((out / "merged" / "merged.json").read_text())["tables"]
    rows = {r["variant"]: r for r in tables["fid_shown"]}
    assert set(rows) == {"ARM only", "ACDC #2"} and all(r["features"] == "clip" and r["items"] == 2 for r in rows.values())
    assert all(r["all frames"] > 0 and r["f1"] is not None for r in rows.values())
    # what ARM only shows is what went back into its context: the same distance
    assert {r["variant"]: r["all frames"] for r in tables["fid_context"]}["ARM only"] == rows["ARM only"]["all frames"]
    assert "FD_clip, not Inception FID" in (out / "merged" / "fid_shown.md").read_text()
    assert _tables(out) == _tables(one_process)          # the other tables are unchanged by FID
    missing = _acdc(["bench", "merge", "--out", str(out), "--fid", "dino"])
    assert missing.returncode == 2 and "--fid-model" in missing.stderr


@needs_toy
def test_vbench_style_columns_merge_beside_the_judge(one_process, tiny_vit, tmp_path):
    out = tmp_path / "vbench"
    shutil.copytree(one_process, out)
    merged = _acdc(["bench", "merge", "--out", str(out), "--metrics", "toy", "vbench-style", "--dino", str(tiny_vit)])
    assert merged.returncode == 0, merged.stderr
    rows = {(r["variant"], r["metric"]): r for r in
            json.loads((out / "merged" / "merged.json").read_text())["tables"]["per_frame_shown"]}
    assert rows[("ARM only", "subject_consistency")]["f1"] is None          # no frame before frame 1
    assert 0 <= rows[("ACDC #2", "subject_consistency")]["f2"][0] <= 1
    judge_only = {(r["variant"], r["metric"]): r for r in
                  json.loads((one_process / "merged" / "merged.json").read_text())["tables"]["per_frame_shown"]}
    assert all(rows[key] == row for key, row in judge_only.items())        # the judge's columns are unchanged


def test_sdxl_lightning_pseudo_ground_truth(tmp_path):
    """SDXL base + a Lightning UNet file: the file's weights are the ones sampled with, 6 Euler steps (trailing), no
    guidance, seeded per frame; a file of another shape or a pickle is refused."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from acdc_core.bench.reference import SdxlLightning
    from acdc_core.tiny.sd import build_tiny_sdxl

    base = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    other = build_tiny_sdxl(tmp_path / "other", seed=1)
    unet_file = tmp_path / "lightning_unet.safetensors"
    save_file(UNet2DConditionModel.from_pretrained(other / "unet").state_dict(), str(unet_file))
    model = SdxlLightning.load(base, unet_file, steps=6, size=64)
    assert type(model.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert model.pipe.scheduler.config.timestep_spacing == "trailing"
    lightning_weights = UNet2DConditionModel.from_pretrained(other / "unet").state_dict()
    assert all(torch.equal(v, lightning_weights[k]) for k, v in model.pipe.unet.state_dict().items())
    calls = []
    model.pipe.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    item = read_items_from([{"id": "a", "prompts": ["a red cat", "it jumps"], "seed": 5}], tmp_path)[0]
    frames = model(item)
    assert len(frames) == 2 and frames[0].shape == (3, 64, 64) and 0 <= float(frames[0].min()) <= float(frames[0].max()) <= 1
    assert calls == [1] * 12                             # 6 steps per frame, one batch of 1: no guidance pass
    again = model(item)
    assert all(torch.equal(a, b) for a, b in zip(frames, again))
    assert not torch.equal(frames[0], frames[1])
    assert model.identity() == {"source": "sdxl-lightning", "steps": 6, "size": 64, "guidance": 0.0,
                                "scheduler": "euler, trailing"}
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(InvalidInputError, match="not a UNet of this SDXL"):
        SdxlLightning.load(base, tmp_path / "lora.safetensors", size=64)
    torch.save({"a": torch.zeros(1)}, tmp_path / "unet.pth")
    with pytest.raises(InvalidInputError, match="pickle"):
        SdxlLightning.load(base, tmp_path / "unet.pth", size=64)
    with pytest.raises(InvalidInputError, match="no SDXL-Lightning UNet"):
        SdxlLightning.load(base, tmp_path / "absent.safetensors", size=64)


def read_items_from(records, folder):
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_items(path)


VIDEO_RUN = ["bench", "run", "--toy-video", "heldout", "--count", "2", "--variants", "ARM only", "ACDC (first window)",
             "--threads", "1"]


needs_toy_video = pytest.mark.skipif(not defaults.video_available(),
                                     reason="the trained toy video models are not shipped here")


@pytest.fixture(scope="module")
def video_bench(tmp_path_factory):
    return _bench_run(tmp_path_factory, "video", VIDEO_RUN)


@needs_toy_video
def test_toy_video_clips_run_and_merge_through_acdc_bench(video_bench, tmp_path):
    from dataclasses import replace

    from acdc_core.bench.store import read_frames
    from acdc_core.bench.variants import VIDEO_VARIANTS
    from acdc_core.toy import video_judge
    from acdc_core.toy.evaluate_video import CHECKS, context_frames, run_clip, toy_clip

    out = video_bench
    items = read_items(out / "items.jsonl")
    assert [(i.id, i.frames, i.world, i.seed) for i in items] == [("clip-heldout-0000", 24, "video", 1000),
                                                                   ("clip-heldout-0001", 24, "video", 1001)]
    run = json.loads((item_dir(out, "acdc-first-window", items[0].id) / "run.json").read_text())
    assert [w["corrected"] for w in run["windows"]] == [True, False, False] and "tokens_before" not in run["windows"][0]
    assert len(run["frames"]) == 24 and "correct" in run["cost"] and "arm" in run["cost"]
    # the bench's frames are the engine's video loop's at the item's seed (as PNG: within 1/255)
    arm, corrector = defaults.load_toy_video_models()
    clip = toy_clip(items[0])
    states = run_clip(clip, arm, corrector, replace(defaults.TOY_VIDEO_SETTINGS, frames=24), VIDEO_VARIANTS[:2],
                      seed=items[0].seed)
    for variant, folder in (("ARM only", "arm-only"), ("ACDC (first window)", "acdc-first-window")):
        shown = np.stack(read_frames(item_dir(out, folder, items[0].id))).astype(float) / 255
        engine = torch.stack(states[variant].output_frames()).permute(0, 2, 3, 1).numpy()
        assert np.abs(shown - engine).max() <= 0.5 / 255 + 1e-6
        context = np.stack(read_frames(item_dir(out, folder, items[0].id), "context")).astype(float) / 255
        back = torch.stack(context_frames(states[variant], arm)).permute(0, 2, 3, 1).numpy()
        assert np.abs(context - back).max() <= 0.5 / 255 + 1e-6
    # the merged scores are the toy video judge's on those frames
    merged = json.loads((out / "merged" / "merged.json").read_text())
    verdict = video_judge.judge_clip(read_frames(item_dir(out, "acdc-first-window", items[0].id)), clip)["frames"]
    for check in CHECKS:
        expected = [np.nan if f.get(check) is None else float(f[check]) for f in verdict]
        assert np.array_equal(merged["scores"]["shown"]["ACDC (first window)"][check][0], expected, equal_nan=True)
    differences = {(r["difference"], r["metric"], r["frames"]) for r in merged["tables"]["differences_shown"]}
    assert ("ACDC (first window) - ARM only", "ok", "9-24") in differences          # the paper's frames L+1..N
    assert ("ARM only: later - earlier frames", "subject_ok", "9-24 vs 2-8") in differences
    assert ("ARM only: later - earlier frames", "subject_ok", "17-24 vs 2-8") in differences
    assert json.loads((out / "bench.json").read_text())["kind"] == "video"
    # a story variant for video items, or a mixed item set, is refused before any model loads
    wrong = _acdc(["bench", "run", "--out", str(tmp_path / "w"), "--toy-video", "heldout", "--count", "1",
                   "--variants", "ACDC #2"])
    assert wrong.returncode == 2 and "unknown video variant 'ACDC #2'" in wrong.stderr
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"id": "a", "prompts": ["x"], "seed": 0, "frames": 24}\n{"id": "b", "prompts": ["y"], "seed": 0}\n')
    wrong = _acdc(["bench", "run", "--out", str(tmp_path / "w"), "--items", str(mixed)])
    assert wrong.returncode == 2 and "mixes videos" in wrong.stderr


_FAKE_IMAGEREWARD = {
    "ImageReward/__init__.py": "",
    "ImageReward/models/__init__.py": "",
    "ImageReward/models/BLIP/__init__.py": "",
    "ImageReward/models/BLIP/blip_pretrain.py": "def init_tokenizer():\n    raise RuntimeError('the hub')\n",
    "ImageReward/ImageReward.py": (
        "import json, os\nimport numpy as np\n\n"
        "class _Loaded:\n    missing_keys, unexpected_keys = [], []\n\n"
        "class ImageReward:\n"
        "    def __init__(self, med_config, device='cpu'):\n"
        "        json.dump(sorted(os.environ), open(os.environ['HOME'] + '/seen_env.json', 'w'))\n"
        "    def load_state_dict(self, state, strict=True):\n        self.w = float(state['w'])\n        return _Loaded()\n"
        "    def to(self, device):\n        return self\n"
        "    def eval(self):\n        return self\n"
        "    def score(self, prompt, image):\n"
        "        return self.w * float(np.asarray(image).mean()) / 255 + len(prompt) / 100\n"),
    "image_reward-0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: image-reward\nVersion: 0.0\n",
}


_FAKE_INCEPTION = {
    "torchmetrics/__init__.py": "",
    "torchmetrics/image/__init__.py": "",
    "torchmetrics/image/fid.py": (
        "import torch\n\n"
        "class NoTrainInceptionV3(torch.nn.Module):\n"
        "    def __init__(self, name, features_list, feature_extractor_weights_path):\n"
        "        super().__init__()\n"
        "        self.w = float(torch.load(feature_extractor_weights_path, weights_only=True)['w'])\n"
        "    def forward(self, x):\n"
        "        x = x.double() / 255\n"
        "        return self.w * torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)\n"),
}


def _fake_env(root: Path, files: dict) -> Path:
    """A stand-in for an evaluator's environment: a Python that sees a fake of its package (the real one cannot be
    installed beside this project, which is why it is external)."""
    for name, text in files.items():
        (root / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "site" / name).write_text(text)
    (root / "home").mkdir()
    python = root / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\nHOME={root / 'home'} PYTHONPATH={root / 'site'} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    return python


@needs_toy
def test_an_external_evaluator_scores_every_frame_in_its_own_environment(one_process, tmp_path):
    from safetensors.torch import save_file

    from acdc_core.bench.store import read_frames

    out = tmp_path / "ext"
    shutil.copytree(one_process, out)
    python = _fake_env(tmp_path / "env", _FAKE_IMAGEREWARD)
    save_file({"w": torch.tensor(2.0)}, str(tmp_path / "w.safetensors"))
    (tmp_path / "med_config.json").write_text("{}")
    (tmp_path / "tok").mkdir()
    no_vocab = _acdc(["bench", "external", "--out", str(out), "--evaluator", "imagereward", "--python", str(python),
                      "--weights", str(tmp_path / "w.safetensors"), "--med-config", str(tmp_path / "med_config.json"),
                      "--tokenizer", str(tmp_path / "tok")])
    assert no_vocab.returncode == 2 and "has no vocab.txt: --tokenizer" in no_vocab.stderr
    (tmp_path / "tok" / "vocab.txt").write_text("[PAD]\n")
    args = ["bench", "external", "--out", str(out), "--evaluator", "imagereward", "--python", str(python),
            "--weights", str(tmp_path / "w.safetensors"), "--med-config", str(tmp_path / "med_config.json"),
            "--tokenizer", str(tmp_path / "tok")]
    done = _acdc(args, env={"ACDC_LLM_API_KEY": "sk-secret"})
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "env" / "home" / "seen_env.json").read_text())
    assert "ACDC_LLM_API_KEY" not in seen and "HF_HUB_OFFLINE" in seen         # no secrets, the hub offline
    merged = _acdc(["bench", "merge", "--out", str(out), "--metrics", "toy", "imagereward"])
    assert merged.returncode == 0, merged.stderr
    table = json.loads((out / "merged" / "merged.json").read_text())
    items = read_items(out / "items.jsonl")
    frames = read_frames(item_dir(out, "acdc-2", items[1].id))
    expected = [2.0 * f.mean() / 255 + len(p) / 100 for f, p in zip(frames, items[1].prompts)]
    assert table["scores"]["shown"]["ACDC #2"]["imagereward"][1] == pytest.approx(expected, abs=1e-9)
    assert "imagereward" in table["scores"]["context"]["ARM only"]
    # a frame without a score (changed, or made, after the scoring) is refused by the merge with what to do
    scores_file = out / "external" / "imagereward" / "scores.json"
    scores = json.loads(scores_file.read_text())
    from acdc_core.bench.external import frame_key
    del scores["scores"][frame_key(frames[3], items[1].prompts[3])]
    scores_file.write_text(json.dumps(scores))
    merged = _acdc(["bench", "merge", "--out", str(out), "--metrics", "imagereward"])
    assert merged.returncode == 2 and "has no imagereward score" in merged.stderr and "external` again" in merged.stderr
    # an evaluator that fails is reported, and nothing is kept
    (tmp_path / "env" / "site" / "ImageReward" / "ImageReward.py").write_text("raise SystemExit(3)\n")
    failed = _acdc(args)
    assert failed.returncode == 2 and "failed (exit 3" in failed.stderr
    absent = _acdc(args[:7] + [str(tmp_path / "nothing" / "python")] + args[8:])
    assert absent.returncode == 2 and "external-setup --evaluator imagereward" in absent.stderr


_FOLDER_FRAMES = (
    "import os\nimport numpy as np\nfrom PIL import Image\n\n"
    "def frames(path, read_frame=True):\n"
    "    folder = path[:-4].replace('videos', 'frames').replace(' ', '_') if path.endswith('.mp4') else path\n"
    "    return np.stack([np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))])\n")
_FAKE_VBENCH = {
    # vbench's functions as acdc's script calls them, asserting what they are given; each score is a weight from its
    # file times a statistic of the pixels (and the image sizes seen are recorded: the enlargement)
    "vbench/__init__.py": "", "vbench/third_party/amt/cfgs/AMT-S.yaml": "network: {}\n",
    "vbench/_frames.py": _FOLDER_FRAMES,
    "vbench/subject_consistency.py": (
        "import json, os\nfrom vbench._frames import frames\n\n"
        "def subject_consistency(model, video_list, device, read_frame):\n"
        "    assert read_frame and all(p.endswith('.mp4') for p in video_list)\n"
        "    seen = [frames(p) for p in video_list]\n"
        "    json.dump(sorted({f.shape[1:3] for f in seen}), open(os.path.join(os.environ['HOME'], 'sizes.json'), 'w'))\n"
        "    return 0.0, [{'video_path': p, 'video_results': float(model.w) * float(f.mean()) / 255}\n"
        "                 for p, f in zip(video_list, seen)]\n"),
    "vbench/background_consistency.py": (
        "from vbench._frames import frames\n\n"
        "def background_consistency(clip_model, preprocess, video_list, device, read_frame):\n"
        "    assert read_frame and preprocess == ('transform', 224)\n"
        "    return 0.0, [{'video_path': p, 'video_results': clip_model.w * float(frames(p).std()) / 255}\n"
        "                 for p in video_list]\n"),
    "vbench/aesthetic_quality.py": (
        "import os\nimport numpy as np\nimport torch\nfrom PIL import Image\n\n"
        "def get_aesthetic_model(cache_folder):\n"
        "    m = torch.nn.Module()\n"
        "    path = os.path.join(cache_folder, 'sa_0_4_vit_l_14_linear.pth')\n"
        "    m.h = float(torch.load(path, weights_only=True)['weight'])\n"
        "    return m\n\n"
        "def laion_aesthetic(aesthetic_model, clip_model, video_list, device):\n"
        "    assert all(p.endswith('.png') for p in video_list)\n"
        "    return 0.0, [{'video_path': p, 'video_results': aesthetic_model.h * clip_model.w *\n"
        "                  float(np.asarray(Image.open(p)).mean()) / 255} for p in video_list]\n"),
    "vbench/imaging_quality.py": (
        "import numpy as np\nfrom PIL import Image\n\n"
        "def technical_quality(model, video_list, device, **kw):\n"
        "    assert all(p.endswith('.png') for p in video_list)\n"
        "    return 0.0, [{'video_path': p, 'video_results': 100 * model.w * float(np.asarray(Image.open(p)).std())}\n"
        "                 for p in video_list]\n"),
    "vbench/dynamic_degree.py": (
        "import os\nimport torch\nfrom vbench._frames import frames\n\n"
        "class DynamicDegree:\n"
        "    def __init__(self, args, device):\n"
        "        ckpt = torch.load(args.model, weights_only=True)\n"
        "        assert all(k.startswith('module.') for k in ckpt) and not args.small and not args.mixed_precision\n"
        "        self.t = float(ckpt['module.t'])\n\n"
        "def dynamic_degree(dynamic, video_list):\n"
        "    assert all(os.path.isdir(p) for p in video_list)\n"
        "    return 0.0, [{'video_path': p, 'video_results': bool(frames(p).mean() / 255 > dynamic.t)}\n"
        "                 for p in video_list]\n"),
    "vbench/motion_smoothness.py": (
        "import os\nimport torch\nfrom vbench._frames import frames\n\n"
        "class MotionSmoothness:\n"
        "    def __init__(self, config, ckpt, device):\n"
        "        assert config.endswith(os.path.join('amt', 'cfgs', 'AMT-S.yaml')) and os.path.isfile(config)\n"
        "        self.m = float(torch.load(ckpt, weights_only=True)['state_dict']['m'])\n\n"
        "def motion_smoothness(motion, video_list):\n"
        "    return 0.0, [{'video_path': p, 'video_results': motion.m * len(frames(p)) / 100} for p in video_list]\n"),
    "clip/__init__.py": "", "clip/clip.py": "def _transform(n):\n    return ('transform', n)\n",
    "clip/model.py": (
        "import torch\n\nclass _Visual:\n    input_resolution = 224\n\n"
        "class _Clip(torch.nn.Module):\n"
        "    def __init__(self, w):\n        super().__init__()\n        self.w, self.visual = float(w), _Visual()\n\n"
        "def build_model(state_dict):\n    return _Clip(state_dict['w'])\n"),
    "easydict/__init__.py": "class EasyDict(dict):\n    __getattr__ = dict.__getitem__\n",
    "pyiqa/__init__.py": "", "pyiqa/archs/__init__.py": "",
    "pyiqa/archs/musiq_arch.py": (
        "import torch\n\nclass MUSIQ(torch.nn.Module):\n"
        "    def __init__(self, pretrained_model_path):\n"
        "        super().__init__()\n"
        "        self.w = float(torch.load(pretrained_model_path, weights_only=True)['w'])\n"),
}


@needs_toy_video
def test_the_official_vbench_scores_each_video_and_its_later_frames(video_bench, one_process, tmp_path):
    """The vbench evaluator (here a fake vbench: a weight from each model's file times a statistic of the pixels)
    scores every video and its frames L+1..N as videos of their own, enlarged to 128 px, with each model's file in
    the layout vbench reads; the merge's tables are those scores per item."""
    from PIL import Image
    from safetensors.torch import save_file

    from acdc_core.bench.store import read_frames

    out = tmp_path / "vbench"
    shutil.copytree(video_bench, out)
    python = _fake_env(tmp_path / "env", _FAKE_VBENCH)
    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "hubconf.py").write_text(
        "import torch\n\ndef dino_vitb16(pretrained=True, **kw):\n    assert not pretrained\n"
        "    m = torch.nn.Module()\n    m.w = torch.nn.Parameter(torch.zeros(()))\n    return m\n")
    weights = {"dino_weights": {"w": 2.0}, "musiq_weights": {"w": 0.5}, "clip_b32_weights": {"w": 3.0},
               "clip_l14_weights": {"w": 4.0}, "aesthetic_head": {"weight": 0.25}, "raft_weights": {"module.t": 0.45},
               "amt_weights": {"m": 1.5}}
    flags = ["--dino-repo", str(tmp_path / "dino")]
    for field, state in weights.items():
        save_file({k: torch.tensor(v) for k, v in state.items()}, str(tmp_path / f"{field}.safetensors"))
        flags += ["--" + field.replace("_", "-"), str(tmp_path / f"{field}.safetensors")]
    base = ["bench", "external", "--out", str(out), "--evaluator", "vbench", "--python", str(python)]
    part = _acdc(base + ["--dino-weights", str(tmp_path / "dino_weights.safetensors")])
    assert part.returncode == 2 and "subject_consistency also needs --dino-repo" in part.stderr
    no_hub = _acdc(base + flags[2:] + ["--dino-repo", str(tmp_path)])
    assert no_hub.returncode == 2 and "has no hubconf.py: --dino-repo" in no_hub.stderr
    none = _acdc(base)
    assert none.returncode == 2 and "at least one dimension" in none.stderr and "--amt-weights" in none.stderr
    story = _acdc(["bench", "external", "--out", str(one_process), "--evaluator", "vbench", "--python", str(python),
                   "--musiq-weights", str(tmp_path / "musiq_weights.safetensors")])
    assert story.returncode == 2 and "scores videos" in story.stderr
    done = _acdc(base + flags)
    assert done.returncode == 0, done.stderr
    assert "acdc bench merge --out" in done.stderr and "--vbench" in done.stderr
    assert json.loads((tmp_path / "env" / "home" / "sizes.json").read_text()) == [[128, 128]]   # 32 px x 4
    merged = _acdc(["bench", "merge", "--out", str(out), "--metrics", "toy-video", "--vbench"])
    assert merged.returncode == 0, merged.stderr
    tables = json.loads((out / "merged" / "merged.json").read_text())["tables"]

    def enlarged(frames):
        return np.stack([np.asarray(Image.fromarray(f).resize((128, 128), Image.BICUBIC)) for f in frames]
                        ).astype(np.float64)

    expected = {"subject_consistency": lambda f: 2.0 * f.mean() / 255,
                "background_consistency": lambda f: 3.0 * f.std() / 255,
                "aesthetic_quality": lambda f: np.mean([0.25 * 4.0 * x.mean() / 255 for x in f]),
                "imaging_quality": lambda f: np.mean([0.5 * x.std() for x in f]),
                "dynamic_degree": lambda f: float(f.mean() / 255 > 0.45),
                "motion_smoothness": lambda f: 1.5 * len(f) / 100}
    items = read_items(out / "items.jsonl")
    for kind in ("shown", "context"):
        for variant, folder in (("ARM only", "arm-only"), ("ACDC (first window)", "acdc-first-window")):
            frames = [enlarged(read_frames(item_dir(out, folder, i.id), kind)) for i in items]
            rows = {r["dimension"]: r for r in tables[f"vbench_{kind}"] if r["variant"] == variant}
            assert set(rows) == set(expected)
            for dimension, rule in expected.items():
                for span, start in (("all frames", 0), ("frames 9-N", 8)):
                    assert rows[dimension][span][0] == pytest.approx(np.mean([rule(f[start:]) for f in frames]),
                                                                     abs=1e-4), (kind, variant, dimension, span)
    assert {(r["difference"], r["metric"], r["frames"]) for r in tables["vbench_differences_shown"]} >= {
        ("ACDC (first window) - ARM only", "subject_consistency", "frames 9-N")}
    assert "Official VBench" in (out / "merged" / "vbench_shown.md").read_text()
    # a video without a score (changed, or made, after the scoring) is refused by the merge with what to do
    from acdc_core.bench.external import video_key

    scores_file = out / "external" / "vbench" / "scores.json"
    scores = json.loads(scores_file.read_text())
    del scores["scores"][video_key(read_frames(item_dir(out, "arm-only", items[1].id))[8:])]
    scores_file.write_text(json.dumps(scores))
    stale = _acdc(["bench", "merge", "--out", str(out), "--metrics", "toy-video", "--vbench"])
    assert stale.returncode == 2 and "frames 9-24) has no vbench score" in stale.stderr and "again" in stale.stderr


@needs_toy
def test_inception_fid_from_an_external_environment(one_process, tmp_path):
    """The inception evaluator's features (here a fake torchmetrics Inception: per-channel means and deviations)
    come back keyed by frame, and the merge's FID is the Frechet distance of exactly those features."""
    from safetensors.torch import save_file

    from acdc_core.bench.reference import reference_dir
    from acdc_core.bench.store import read_frames
    from acdc_core.stats import frechet_distance

    out = tmp_path / "inception"
    shutil.copytree(one_process, out)
    python = _fake_env(tmp_path / "env", _FAKE_INCEPTION)
    save_file({"w": torch.tensor(3.0)}, str(tmp_path / "inception.safetensors"))
    args = ["bench", "external", "--out", str(out), "--evaluator", "inception", "--python", str(python),
            "--weights", str(tmp_path / "inception.safetensors")]
    early = _acdc(args)
    assert early.returncode == 2 and "no reference frames" in early.stderr           # FID needs them first
    assert _acdc(["bench", "reference", "--out", str(out)]).returncode == 0
    done = _acdc(args)
    assert done.returncode == 0, done.stderr
    merged = _acdc(["bench", "merge", "--out", str(out), "--fid", "inception", "--fid-resamples", "0"])
    assert merged.returncode == 0, merged.stderr
    items = read_items(out / "items.jsonl")

    def features(folder):
        x = np.stack(read_frames(folder)).astype(np.float64) / 255
        return 3.0 * np.concatenate([x.mean((1, 2)), x.std((1, 2), ddof=1)], 1)

    ours = frechet_distance(np.concatenate([features(item_dir(out, "acdc-2", i.id)) for i in items]),
                            np.concatenate([features(reference_dir(out, i.id)) for i in items]))
    rows = {r["variant"]: r for r in json.loads((out / "merged" / "merged.json").read_text())["tables"]["fid_shown"]}
    assert rows["ACDC #2"]["all frames"] == pytest.approx(ours, abs=1e-4) and rows["ACDC #2"]["features"] == "inception"
    assert "torch-fidelity" in (out / "merged" / "fid_shown.md").read_text()


def test_each_frame_is_scored_against_its_own_prompt():
    from acdc_core.bench.external import frame_prompt
    from acdc_core.bench.items import BenchItem

    story = BenchItem("s", ("a", "b", "c"), 0)
    assert [frame_prompt(story, k) for k in range(3)] == ["a", "b", "c"]
    one = BenchItem("v", ("x",), 0, frames=32)
    assert {frame_prompt(one, k, 12) for k in range(32)} == {"x"}
    # 32 frames in windows of 12: windows 1-12, 13-24, 25-32, one prompt each
    per_window = BenchItem("w", ("p", "q", "r"), 0, frames=32)
    assert [frame_prompt(per_window, k, 12) for k in (0, 11, 12, 23, 24, 31)] == ["p", "p", "q", "q", "r", "r"]


def test_external_setup_makes_a_new_environment_with_pinned_packages(tmp_path):
    from acdc_core.bench.external import EVALUATORS, setup_environment

    ran = []

    class Done:
        returncode = 0

    python = setup_environment(EVALUATORS["imagereward"], tmp_path / "env", run=lambda c: ran.append(c) or Done())
    assert python == tmp_path / "env" / "bin" / "python"
    assert ran[0][1:] == ["-m", "venv", str(tmp_path / "env")]
    assert ran[1][-2:] == ["torch==2.14.1", "torchvision==0.29.1"]     # a matching pair, never an unpinned torch
    assert "image-reward==1.5" in ran[2] and all(("==" in p or "<" in p) for p in ran[2][4:])
    for evaluator in EVALUATORS.values():                                # every evaluator's packages pinned
        assert all("==" in package for package in evaluator.packages), evaluator.name
    # the vbench script reads every dimension and file the driver can give it, by the same names
    script = (Path(__file__).resolve().parents[1] / "acdc_core" / "bench" / "external" / "vbench_eval.py").read_text()
    for dimension, fields in EVALUATORS["vbench"].dimensions:
        assert f'"{dimension}" in dims' in script and all(f'["{field}"]' in script for field in fields)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(InvalidInputError, match="not a virtual environment"):
        setup_environment(EVALUATORS["imagereward"], tmp_path / "full", run=lambda c: Done())


def test_bad_bench_input_is_refused_before_models_load(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"id": "a b", "prompts": ["x"], "seed": 0}\n')
    done = _acdc(["bench", "run", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "items.jsonl")])
    assert done.returncode == 2 and "id 'a b'" in done.stderr and "Traceback" not in done.stderr
    done = _acdc(["bench", "run", "--out", str(tmp_path / "o"), "--toy", "heldout", "--shard", "2/2"])
    assert done.returncode == 2 and "--shard" in done.stderr
    done = _acdc(["bench", "merge", "--out", str(tmp_path / "nothing")])
    assert done.returncode == 2 and "holds no benchmark" in done.stderr
    (tmp_path / "videos.jsonl").write_text('{"id": "v1", "prompts": ["a", "b"], "seed": 0, "frames": 24}\n')
    done = _acdc(["bench", "run", "--out", str(tmp_path / "o"), "--items", str(tmp_path / "videos.jsonl")])
    assert done.returncode == 2 and "item v1: give one prompt for the video or one per window" in done.stderr
    assert not (tmp_path / "o").exists()



# -- the story set ------------------------------------------------------------------------------------------------

class ScriptedLLM:
    """Answers from a script, recording what it was asked."""

    def __init__(self, answers):
        self.answers, self.asked = list(answers), []

    def chat(self, messages, *, max_new_tokens, temperature, seed):
        self.asked.append((messages, temperature, seed))
        return self.answers[(len(self.asked) - 1) % len(self.answers)]


GOOD = ["1. Meet Rex, a green dinosaur who lives in a steamy jungle by a volcano.", "2. He stomps to a river.",
        "3. He drinks the cool water.", "4. A bird lands on his head.", "5. The volcano rumbles loudly.",
        "6. He runs into a cave."]


def _story(name):
    return "\n".join([GOOD[0].replace("Rex", name)] + GOOD[1:])


def test_the_story_set_keeps_valid_new_stories_and_is_seeded(tmp_path):
    from acdc_core.bench.storyset import SHOWN, generate_stories, load_examples, parse_story

    examples = load_examples()
    assert len(examples) == 10 and all(len(s) == 6 for s in examples)
    assert parse_story("\n".join(GOOD))[0].startswith("Meet Rex")
    assert parse_story("\n".join(GOOD[:5])) is None                      # five lines
    assert parse_story("\n".join(["1. Rex."] + GOOD[1:])) is None         # the first line too short
    assert parse_story("\n".join(GOOD[:5] + [GOOD[1]])) is None           # a repeated line
    answers = [_story("Rex"), "I cannot write stories.", _story("Rex"), _story("Ana")]
    llm = ScriptedLLM(answers)
    items = generate_stories(llm, tmp_path / "s.jsonl", 2, seed=3, log=lambda line: None)
    assert [i.prompts[0] for i in items] == [GOOD[0][3:], GOOD[0][3:].replace("Rex", "Ana")]
    assert [i.id for i in items] == ["story-0000", "story-0001"] and [i.seed for i in items] == [1000, 1001]
    assert len(llm.asked) == 4 and all(t == 1.0 for _, t, _ in llm.asked)
    shots = [m[1]["content"] for m, _, _ in llm.asked]
    assert all(s.count("Example ") == SHOWN for s in shots) and len(set(shots)) > 1   # 3 examples, drawn anew
    assert read_items(tmp_path / "s.jsonl") == items
    again = ScriptedLLM(answers)
    assert generate_stories(again, tmp_path / "t.jsonl", 2, seed=3, log=lambda line: None) == items
    assert [a[0] for a in again.asked] == [a[0] for a in llm.asked] and [a[2] for a in again.asked] == [
        a[2] for a in llm.asked]
    other = ScriptedLLM(answers)
    generate_stories(other, tmp_path / "u.jsonl", 2, seed=4, log=lambda line: None)
    assert [a[0] for a in other.asked] != [a[0] for a in llm.asked]


def test_the_story_set_continues_where_it_stopped_and_gives_up_clearly(tmp_path):
    from acdc_core.bench.storyset import generate_stories

    class Stops(ScriptedLLM):
        def chat(self, messages, **kw):
            if len(self.asked) == 2:
                raise KeyboardInterrupt
            return super().chat(messages, **kw)

    out = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_stories(Stops([_story("Rex"), _story("Ana"), _story("Bo")]), out, 3, seed=0, log=lambda line: None)
    rest = ScriptedLLM([_story("Bo")])
    items = generate_stories(rest, out, 3, seed=0, log=lambda line: None)
    assert [i.prompts[0].split(",")[0] for i in items] == ["Meet Rex", "Meet Ana", "Meet Bo"] and len(rest.asked) == 1
    with pytest.raises(InvalidInputError, match="another run"):
        generate_stories(rest, out, 4, seed=0, log=lambda line: None)
    with pytest.raises(InvalidInputError, match="not six-line stories often enough"):
        generate_stories(ScriptedLLM(["no"]), tmp_path / "x.jsonl", 2, max_requests=5, log=lambda line: None)


def test_ctrl_c_in_a_benchmark_says_how_to_continue(monkeypatch, capsys, tmp_path):
    import acdc_core.cli_bench as cli_bench
    from acdc_core import cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench, "run_bench_command", stop)
    assert cli.main(["bench", "merge", "--out", str(tmp_path)]) == 130
    assert "run the same command again to continue" in capsys.readouterr().err


def test_an_external_evaluators_weights_are_checked_before_it_starts(tmp_path):
    import pickle

    from acdc_core.bench.external import EVALUATORS, _check_files

    (tmp_path / "raft.safetensors").write_bytes(pickle.dumps({"w": 1}))      # a pickle under a safetensors name
    with pytest.raises(InvalidInputError, match="--raft-weights: .*could not be read as a .safetensors file"):
        _check_files(EVALUATORS["vbench"], {"raft_weights": str(tmp_path / "raft.safetensors")})
    with pytest.raises(InvalidInputError, match="is a folder: --raft-weights is a file"):
        _check_files(EVALUATORS["vbench"], {"raft_weights": str(tmp_path)})
    with pytest.raises(InvalidInputError, match="does not exist: --amt-weights is AMT-S"):
        _check_files(EVALUATORS["vbench"], {"amt_weights": str(tmp_path / "amt.safetensors")})
    (tmp_path / "dino").mkdir()                                               # a folder, not weights: not read
    (tmp_path / "dino" / "hubconf.py").write_text("")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "dino.safetensors"))
    fields = _check_files(EVALUATORS["vbench"], {"dino_weights": str(tmp_path / "dino.safetensors"),
                                                 "dino_repo": str(tmp_path / "dino")})
    assert list(fields["dimensions"]) == ["subject_consistency"]
