"""The three hosts of the engine — the CLI, the all-in-one ACDC Story node and the wired per-frame chain — make
the same story from the same settings: the same tokens, the same ARM and DM seeds recorded per frame (given
apart, so a mix-up shows), and the same meaning of correct_frames ("all", k, "none"). Tiny random models."""
from __future__ import annotations

import json

import pytest

import nodes
from acdc_core.cli import main
from nodes.wires import BUILTIN
from tests.test_nodes_executor import MiniComfy
from tests.test_nodes_loop import CLASSES, DM_SEED, SEED, STEPS, STORY, chain_prompt

pytestmark = pytest.mark.floors


@pytest.fixture(scope="module", autouse=True)
def host(standalone_host, tiny_builtin):
    return standalone_host


def records_of(state) -> list[dict]:
    return [{"corrected": r.corrected, "arm_seed": r.arm_seed, "dm_seed": r.dm_seed,
             "tokens_before": r.tokens_before.tolist(), "tokens_after": r.tokens_after.tolist()} for r in state.records]


def cli_records(tiny_models, tmp_path, correct_frames: str) -> list[dict]:
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    out = tmp_path / f"cli-{correct_frames}"
    assert main(["story", "--arm", str(tiny_models["arm"]), "--dm", str(tiny_models["dm"]), "--memory", "off",
                 "--prompts", str(story), "--out", str(out), "--steps", str(STEPS), "--seed", str(SEED),
                 "--dm-seed", str(DM_SEED), "--correct-frames", correct_frames]) == 0
    frames = json.loads((out / "run.json").read_text())["frames"]
    return [{k: f[k] for k in ("corrected", "arm_seed", "dm_seed", "tokens_before", "tokens_after")} for f in frames]


def node_records(correct_frames: str) -> list[dict]:
    loaders = nodes.NODE_CLASS_MAPPINGS
    arm = loaders["ACDC_LoadARM"]().load(BUILTIN, "auto", False, False)[0]
    dm = loaders["ACDC_LoadDiffusionModel"]().load(BUILTIN, "auto")[0]
    memory = loaders["ACDC_LoadMemoryLLM"]().load(BUILTIN, "off", 12, 0.0, 0, "", "auto", False)[0]
    out = loaders["ACDC_Story"]().run(
        arm=arm, story=STORY, seed=SEED, t_prime=0.5, steps=STEPS, cfg=7.5, correct_frames=correct_frames, arm_cfg=5.0,
        temperature=1.0, fix_frame=0, fix_t_prime=0.8, negative_prompt="", dm_seed=DM_SEED, fix_seed=-1,
        sampler_name="ddim", dm=dm, memory=memory)
    return records_of(out["result"][0])


def chain_records(correct_frames: str) -> list[dict]:
    run = MiniComfy(CLASSES).run(chain_prompt(correct_frames=correct_frames, mode="off"))
    return records_of(run.values["12"][0])


@pytest.mark.parametrize("correct_frames, corrected", [("all", [True, True, True]), ("2", [True, True, False]),
                                                       ("none", [False, False, False])])
def test_cli_all_in_one_and_wired_chain_make_the_same_story(tiny_models, tmp_path, correct_frames, corrected):
    cli, node, chain = cli_records(tiny_models, tmp_path, correct_frames), node_records(correct_frames), \
        chain_records(correct_frames)
    assert [r["corrected"] for r in cli] == corrected
    assert [r["arm_seed"] for r in cli] == [SEED, SEED + 1, SEED + 2]
    # The DM seed of frame k is dm_seed + k - 1 where the DM ran; a frame it never touched records none.
    assert [r["dm_seed"] for r in cli] == [DM_SEED + i if c else None for i, c in enumerate(corrected)]
    assert cli == node == chain
