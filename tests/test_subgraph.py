"""The subgraph blueprint in subgraphs/: one node holding the per-frame chain of the example workflows.

ComfyUI (0.33) lists ``<pack>/subgraphs/*.json`` in its node library; a user drops the blueprint between Loop
Frame (open) and Loop Frame (close) and can open it. The frontend flattens a subgraph into the prompt it queues,
its nodes as ``<instance id>:<inner id>``; ``flatten`` below does the same, so the blueprint is checked here as the
server sees it. A real ComfyUI ran a story through it (README, "Subgraph blueprint").
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tests.test_workflows import FAST, VIRTUAL, check_node, comfy, host, widget_inputs  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
BLUEPRINTS = sorted((ROOT / "subgraphs").glob("*.json"))
STORY = json.loads((ROOT / "workflows" / "acdc_story.json").read_text())
INPUT, OUTPUT = -10, -20   # the subgraph's input and output nodes, as the frontend numbers them


def definition_of(blueprint: dict) -> dict:
    (sub,) = blueprint["definitions"]["subgraphs"]
    return sub


def flatten(workflow: dict) -> dict:
    """A UI workflow whose nodes may be subgraph instances -> the API prompt the frontend queues for it."""
    subgraphs = {s["id"]: s for s in workflow.get("definitions", {}).get("subgraphs", [])}
    outer_links = {link[0]: link for link in workflow["links"]}
    nodes_by_id = {n["id"]: n for n in workflow["nodes"]}

    def source(node_id: int, slot: int) -> list:
        """The API link for output ``slot`` of outer node ``node_id`` (into the subgraph when it is an instance)."""
        node = nodes_by_id[node_id]
        if node["type"] in subgraphs:
            inner = next(link for link in subgraphs[node["type"]]["links"] if link["target_id"] == OUTPUT
                         and link["target_slot"] == slot)
            return [f"{node_id}:{inner['origin_id']}", inner["origin_slot"]]
        return [str(node_id), slot]

    def fill(node: dict, api_id: str, link_of) -> dict:
        inputs = dict(zip([name for name, _ in widget_inputs(node["type"])], node.get("widgets_values", [])))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                inputs[slot["name"]] = link_of(slot["link"])
        return {"class_type": node["type"], "inputs": inputs}

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL or node.get("mode", 0) != 0:
            continue
        if node["type"] not in subgraphs:
            prompt[str(node["id"])] = fill(node, str(node["id"]),
                                           lambda lid: source(outer_links[lid][1], outer_links[lid][2]))
            continue
        sub = subgraphs[node["type"]]
        inner_links = {link["id"]: link for link in sub["links"]}

        def inner_source(lid, instance=node, inner_links=inner_links):
            link = inner_links[lid]
            if link["origin_id"] == INPUT:   # from outside: what is wired into the instance's input
                outer = outer_links[instance["inputs"][link["origin_slot"]]["link"]]
                return source(outer[1], outer[2])
            return [f"{instance['id']}:{link['origin_id']}", link["origin_slot"]]

        for inner in sub["nodes"]:
            prompt[f"{node['id']}:{inner['id']}"] = fill(inner, f"{node['id']}:{inner['id']}", inner_source)
    return prompt


def with_blueprint(workflow: dict, blueprint: dict) -> dict:
    """``workflow`` (acdc_story.json) with its chain replaced by one instance of ``blueprint``, wired as a user
    wires it: loaders into the instance, Loop Frame (open)'s story in, the instance's story into the close node
    and its image into the saved frame."""
    sub = definition_of(blueprint)
    chain = {n["id"] for n in sub["nodes"]}
    out = copy.deepcopy(workflow)
    by_type = {n["type"]: n for n in out["nodes"]}
    out["nodes"] = [n for n in out["nodes"] if n["id"] not in chain]
    instance = copy.deepcopy(blueprint["nodes"][0])
    instance["id"] = 99
    out["nodes"].append(instance)
    out["links"] = [link for link in out["links"] if link[1] not in chain and link[3] not in chain]
    out["definitions"] = copy.deepcopy(blueprint["definitions"])
    wires = {"arm": ("ACDC_LoadARM", 0), "memory": ("ACDC_LoadMemoryLLM", 0), "dm": ("ACDC_LoadDiffusionModel", 0),
             "story": ("ACDC_LoopOpen", 1)}
    next_id = max(link[0] for link in out["links"]) + 1
    for slot, entry in enumerate(instance["inputs"]):
        kind, source_slot = wires[entry["name"]]
        out["links"].append([next_id, by_type[kind]["id"], source_slot, 99, slot, entry["type"]])
        entry["link"] = next_id
        next_id += 1
    names = [o["name"] for o in instance["outputs"]]
    for target, (name, target_slot) in ((by_type["ACDC_LoopClose"], ("story", 1)), (by_type["SaveImage"], ("image", 0))):
        out["links"].append([next_id, 99, names.index(name), target["id"], target_slot, instance["outputs"][names.index(name)]["type"]])
        target["inputs"][target_slot]["link"] = next_id
        next_id += 1
    return out


def test_the_pack_ships_one_blueprint():
    assert [p.name for p in BLUEPRINTS] == ["ACDC frame.json"]


@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda p: p.stem)
def test_the_blueprint_is_a_valid_subgraph_of_the_pack_s_nodes(path):
    blueprint = json.loads(path.read_text())
    sub = definition_of(blueprint)
    (instance,) = blueprint["nodes"]
    assert instance["type"] == sub["id"] and blueprint["version"] == 0.4
    inner = {n["id"]: n for n in sub["nodes"]}
    for node in sub["nodes"]:
        check_node(node)
    # Links: both ends exist (or are the input/output nodes), types agree, each end records the link.
    for link in sub["links"]:
        if link["origin_id"] == INPUT:
            assert sub["inputs"][link["origin_slot"]]["type"] == link["type"]
            assert link["id"] in sub["inputs"][link["origin_slot"]]["linkIds"]
        else:
            out = inner[link["origin_id"]]["outputs"][link["origin_slot"]]
            assert out["type"] == link["type"] and link["id"] in out["links"]
        if link["target_id"] == OUTPUT:
            assert sub["outputs"][link["target_slot"]]["type"] == link["type"]
            assert sub["outputs"][link["target_slot"]]["linkIds"] == [link["id"]]
        else:
            slot = inner[link["target_id"]]["inputs"][link["target_slot"]]
            assert slot["type"] == link["type"] and slot["link"] == link["id"]
    assert [(i["name"], i["type"]) for i in instance["inputs"]] == [(i["name"], i["type"]) for i in sub["inputs"]]
    assert [(o["name"], o["type"]) for o in instance["outputs"]] == [(o["name"], o["type"]) for o in sub["outputs"]]
    # The widgets shown on the closed node are real widgets of the nodes inside.
    for node_id, name in instance["properties"]["proxyWidgets"]:
        assert name in [n for n, _ in widget_inputs(inner[int(node_id)]["type"])]


def test_the_blueprint_is_the_chain_of_the_story_workflow():
    """The same nodes, settings and wiring as acdc_story.json between its loop nodes, so the two cannot drift."""
    sub = definition_of(json.loads(BLUEPRINTS[0].read_text()))
    story_nodes = {n["id"]: n for n in STORY["nodes"]}
    assert [(n["type"], n["widgets_values"]) for n in sub["nodes"]] == \
        [(story_nodes[n["id"]]["type"], story_nodes[n["id"]]["widgets_values"]) for n in sub["nodes"]]
    chain = {n["id"] for n in sub["nodes"]}
    inside = {(link[1], link[2], link[3], link[4]) for link in STORY["links"] if link[1] in chain and link[3] in chain}
    assert {(link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"]) for link in sub["links"]
            if link["origin_id"] in chain and link["target_id"] in chain} == inside
    assert {n["type"] for n in sub["nodes"]} == {
        "ACDC_ARMTokenGenerator", "ACDC_VQDetokenize", "ACDC_LLMMemoryPrompt", "ACDC_SDEditCorrect",
        "ACDC_InpaintFix", "ACDC_ReTokenize"}


def test_a_story_through_the_blueprint_is_the_story_of_the_workflow(comfy):  # noqa: F811
    blueprint = json.loads(BLUEPRINTS[0].read_text())
    plain, nested = flatten(STORY), flatten(with_blueprint(STORY, blueprint))
    assert any(":" in node_id for node_id in nested)                   # ids as the frontend makes them
    runs = []
    for prompt in (plain, nested):
        for node in prompt.values():
            node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
        close = next(i for i, n in prompt.items() if n["class_type"] == "ACDC_LoopClose")
        runs.append(comfy.run(prompt).values[close])
    (story_a, frames_a, *_), (story_b, frames_b, *_) = runs
    assert story_b.done and len(story_b.records) == len(story_a.records) == 6
    assert torch.equal(frames_a, frames_b)
    assert [torch.equal(a.tokens_after, b.tokens_after) for a, b in zip(story_a.records, story_b.records)] == [True] * 6


def test_flatten_gives_the_shipped_workflows_their_plain_prompt():
    from tests.test_workflows import WORKFLOWS, to_api
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        assert flatten(workflow) == to_api(workflow), path.stem
