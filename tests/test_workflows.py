"""The example workflows in workflows/: checked statically against the node definitions, then run as shipped
on the built-in default models through the executor stand-in (tests/test_nodes_executor.py).

What a real ComfyUI adds (its frontend's own UI -> API conversion, its cache) was tried in a real ComfyUI
(README, "Installing into ComfyUI").
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import nodes
from nodes import bridge
from tests.test_nodes_executor import MiniComfy

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
VIDEO_WORKFLOWS = [p for p in WORKFLOWS if p.stem.startswith("acdc_video")]
STORY_WORKFLOWS = [p for p in WORKFLOWS if p not in VIDEO_WORKFLOWS]

# The core ComfyUI nodes the workflows use, as ComfyUI 0.33 declares them (compared with a real server's
# /object_info when the pack was tried), and the frontend-only nodes (never sent to the server).
CORE = {
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": (), "output_node": True},
    "SaveImage": {"input": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
                  "output": (), "output_node": True},
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": (["v1-5-pruned-emaonly.safetensors"], {})}},
                               "output": ("MODEL", "CLIP", "VAE")},
    "SaveAnimatedWEBP": {"input": {"required": {
        "images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
        "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0}), "lossless": ("BOOLEAN", {"default": True}),
        "quality": ("INT", {"default": 80, "min": 0, "max": 100}), "method": (["default", "fastest", "slowest"], {})}},
        "output": ("IMAGE",), "output_node": True},
}
VIRTUAL = {"Note", "MarkdownNote"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def definition(node_type):
    if node_type in nodes.NODE_CLASS_MAPPINGS:
        cls = nodes.NODE_CLASS_MAPPINGS[node_type]
        return {"input": cls.INPUT_TYPES(), "output": cls.RETURN_TYPES}
    return CORE[node_type]


def is_widget(entry) -> bool:
    kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
    return isinstance(kind, list) or (kind in WIDGET_TYPES and not options.get("forceInput"))


def widget_inputs(node_type):
    spec = definition(node_type)["input"]
    return [(name, entry) for group in ("required", "optional") for name, entry in spec.get(group, {}).items()
            if is_widget(entry)]


def socket_inputs(node_type):
    spec = definition(node_type)["input"]
    return {name: (group, entry) for group in ("required", "optional") for name, entry in spec.get(group, {}).items()
            if not is_widget(entry)}


def to_api(workflow) -> dict:
    """The UI workflow as the prompt the frontend queues: widget values by name, links as [node, slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL or node.get("mode", 0) != 0:
            continue
        inputs = dict(zip([name for name, _ in widget_inputs(node["type"])], node.get("widgets_values", [])))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# The workflows for models that need real weights name the folders and files the README says to put in models/;
# here tiny random stand-ins go under those very names, so each workflow is checked and run as shipped.
STAND_INS = {"acdc_arm/show-o": "showo", "acdc_arm/Emu3-Gen-hf": "emu3", "diffusers/stable-diffusion-v1-5": "sd15",
             "LLM/Qwen2.5-1.5B-Instruct": "llm"}


def build_stand_in(kind: str, path: Path) -> None:
    from acdc_core.tiny.emu3 import build_tiny_emu3
    from acdc_core.tiny.llm import build_tiny_llm
    from acdc_core.tiny.sd import build_tiny_sd
    from acdc_core.tiny.showo import build_tiny_showo

    {"showo": build_tiny_showo, "emu3": build_tiny_emu3, "sd15": build_tiny_sd,
     "llm": lambda folder, seed: build_tiny_llm(folder, seed, model_type="qwen2")}[kind](path, seed=0)


@pytest.fixture(scope="module", autouse=True)
def host(standalone_host):
    import shutil

    made = [Path(bridge.HOST.models_dir) / name for name in STAND_INS]
    for path, kind in zip(made, STAND_INS.values()):
        build_stand_in(kind, path)
    yield standalone_host
    for path in made:                  # the session's model folders are shared with other test modules
        shutil.rmtree(path)


def test_the_example_workflows_ship_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    assert names == {"acdc_story", "acdc_story_no_memory", "acdc_2_first_two_frames", "physical_fix_painted_mask",
                     "bring_your_own_checkpoint", "showo_story", "emu3_story", "acdc_video"}
    for path in WORKFLOWS:
        # PNG as the pack's convention; JPEG because ComfyUI's template browser (frontend 1.49) asks for
        # /workflow_templates/<pack>/<name>.jpg.
        for suffix, kind in ((".png", "PNG"), (".jpg", "JPEG")):
            with Image.open(path.with_suffix(suffix)) as thumbnail:
                assert thumbnail.format == kind and min(thumbnail.size) >= 128


def check_node(node: dict) -> None:
    """One node of a UI workflow (or of a subgraph) against its definition: sockets, outputs, widget values."""
    kind = node["type"]
    assert kind in nodes.NODE_CLASS_MAPPINGS or kind in CORE or kind in VIRTUAL, f"unknown node type {kind}"
    if kind in VIRTUAL:
        return
    sockets = socket_inputs(kind)
    assert [i["name"] for i in node["inputs"]] == list(sockets), f"{kind} inputs"
    for slot in node["inputs"]:
        group, entry = sockets[slot["name"]]
        assert slot["type"] == entry[0]
        if group == "required":
            assert slot["link"] is not None, f"{kind}.{slot['name']} is not connected"
    outputs = definition(kind)["output"]
    assert [o["type"] for o in node.get("outputs", [])] == list(outputs)
    # Widget values: one per widget, in order, each valid for its input.
    widgets = widget_inputs(kind)
    assert len(node["widgets_values"]) == len(widgets), f"{kind} widgets_values"
    for (name, entry), value in zip(widgets, node["widgets_values"]):
        kind_of, options = entry[0], (entry[1] if len(entry) > 1 else {})
        if isinstance(kind_of, list):
            assert value in kind_of, f"{kind}.{name}={value!r}"
        elif kind_of == "INT":
            assert isinstance(value, int) and options.get("min", value) <= value <= options.get("max", value)
        elif kind_of == "FLOAT":
            assert isinstance(value, (int, float)) and options.get("min", value) <= value <= options.get("max",
                                                                                                        value)
        elif kind_of == "STRING":
            assert isinstance(value, str)
        else:
            assert isinstance(value, bool)
    if hasattr(nodes.NODE_CLASS_MAPPINGS.get(kind), "VALIDATE_INPUTS"):
        cls = nodes.NODE_CLASS_MAPPINGS[kind]
        values = dict(zip([n for n, _ in widgets], node["widgets_values"]))
        names = cls.VALIDATE_INPUTS.__code__.co_varnames[1:cls.VALIDATE_INPUTS.__code__.co_argcount]
        assert cls.VALIDATE_INPUTS(**{n: values.get(n) for n in names}) is True


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_the_node_definitions(path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    by_id = {node["id"]: node for node in workflow["nodes"]}
    assert len(by_id) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(by_id)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for node in workflow["nodes"]:
        check_node(node)
    # Links: both ends exist, slots and types agree, and each end records the link.
    for link_id, source, out_slot, target, in_slot, link_type in workflow["links"]:
        src, dst = by_id[source], by_id[target]
        assert src["outputs"][out_slot]["type"] == link_type and link_id in src["outputs"][out_slot]["links"]
        assert dst["inputs"][in_slot]["type"] == link_type and dst["inputs"][in_slot]["link"] == link_id
    linked = {i["link"] for n in workflow["nodes"] for i in n.get("inputs", []) if i.get("link") is not None}
    assert linked == {link[0] for link in workflow["links"]}                   # no broken or dangling links


class PreviewImage:
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images, filename_prefix="ComfyUI"):
        assert images.ndim == 4 and images.shape[-1] == 3 and 0 <= float(images.min()) <= float(images.max()) <= 1
        return {"ui": {"images": [{"shape": list(images.shape)}]}, "result": ()}


class SaveImage(PreviewImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}


class CheckpointLoaderSimple:
    """Stand-in of ComfyUI's Load Checkpoint: opaque MODEL, CLIP and VAE that only the host samples with."""
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (["v1-5-pruned-emaonly.safetensors"],)}}

    def load_checkpoint(self, ckpt_name):
        return (f"MODEL of {ckpt_name}", "CLIP", "VAE")


class SaveAnimatedWEBP(PreviewImage):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {}), "fps": ("FLOAT", {}),
                             "lossless": ("BOOLEAN", {}), "quality": ("INT", {}), "method": (["default"], {})}}

    def save_images(self, images, filename_prefix="ComfyUI", fps=6.0, lossless=True, quality=80, method="default"):
        return {**super().save_images(images), "result": (images,)}


@pytest.fixture(scope="module")
def comfy():
    return MiniComfy({**nodes.NODE_CLASS_MAPPINGS, "PreviewImage": PreviewImage, "SaveImage": SaveImage,
                      "CheckpointLoaderSimple": CheckpointLoaderSimple, "SaveAnimatedWEBP": SaveAnimatedWEBP})


FAST = {"steps": 8, "max_new_tokens": 16}  # CI only: fewer denoising steps and LLM tokens, same wiring


@pytest.mark.parametrize("path", STORY_WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_the_built_in_models(path, comfy, monkeypatch):
    """Each workflow as shipped (wiring, models, widgets), with FAST's knobs turned down to keep CI quick; a real
    ComfyUI ran them exactly as shipped (the checkpoint one with a small SD1.5-layout checkpoint)."""
    from tests.test_comfy_corrector import StandInComfy
    sampling = StandInComfy()                       # ComfyUI's own sampling, for the checkpoint workflow
    sampling.models_dir, sampling.dirs = bridge.HOST.models_dir, dict(bridge.HOST.dirs)   # the same folders
    monkeypatch.setattr(bridge, "HOST", sampling)
    workflow = json.loads(path.read_text())
    prompt = to_api(workflow)
    for node in prompt.values():
        node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
    close = next(i for i, n in prompt.items() if n["class_type"] == "ACDC_LoopClose")
    story_text = next(n for n in prompt.values() if n["class_type"] == "ACDC_StoryPrompts")["inputs"]["text"]
    frames = len([line for line in story_text.splitlines() if line.strip()])
    run = comfy.run(prompt)
    story, images, arm_images, dm_prompts = run.values[close]
    assert story.done and len(story.records) == frames and images.shape[0] == frames
    corrected = [r.corrected for r in story.records]
    if path.stem == "acdc_2_first_two_frames":
        assert corrected == [True, True] + [False] * (frames - 2)
    else:
        assert all(corrected)
    if path.stem == "bring_your_own_checkpoint":           # ComfyUI's KSampler corrected every frame
        assert [c["steps"] for c in sampling.samples] == [FAST["steps"] // 2] * frames
    else:
        assert sampling.samples == []
    if path.stem == "acdc_story_no_memory":                 # the ablation: the DM got the raw story lines
        assert dm_prompts.splitlines() == [r.story_prompt for r in story.records]
    # Preview and Save nodes inside the loop saw every frame.
    inside = [i for i, n in prompt.items() if n["class_type"] in ("PreviewImage", "SaveImage")
              and n["inputs"]["images"][0] != close]
    for node_id in inside:
        assert len(run.ui[node_id]) == frames


OUTPUT_TYPES = {"PreviewImage", "SaveImage"} | {name for name, cls in nodes.NODE_CLASS_MAPPINGS.items()
                                                if getattr(cls, "OUTPUT_NODE", False)}


def upstream(prompt: dict, node_id: str) -> set:
    """Every node ``node_id`` needs, through its links (itself excluded)."""
    seen, todo = set(), [node_id]
    while todo:
        for value in prompt[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return seen


def outputs_comfyui_would_run(prompt: dict, invalid: str) -> list:
    """ComfyUI's rule (execution.validate_prompt): a prompt is queued with every output node whose inputs, all the
    way up, validate; it is refused only when no output is left."""
    return [i for i, n in prompt.items() if n["class_type"] in OUTPUT_TYPES and invalid not in upstream(prompt, i)
            and invalid != i]


@pytest.mark.parametrize("path", STORY_WORKFLOWS, ids=[p.stem for p in STORY_WORKFLOWS])
def test_one_invalid_node_anywhere_in_the_chain_refuses_the_whole_story(path):
    """Every output waits for the whole chain, so a bad t', a missing model or a removed link in any node of the
    story leaves ComfyUI nothing to run: the prompt is refused before anything runs (no half-run "success")."""
    prompt = to_api(json.loads(path.read_text()))
    close = next(i for i, n in prompt.items() if n["class_type"] == "ACDC_LoopClose")
    chain = upstream(prompt, close) | {close}
    assert {prompt[i]["class_type"] for i in chain} >= {"ACDC_LoadARM", "ACDC_ARMTokenGenerator", "ACDC_VQDetokenize",
                                                         "ACDC_SDEditCorrect", "ACDC_InpaintFix", "ACDC_ReTokenize"}
    opener = next(i for i, n in prompt.items() if n["class_type"] == "ACDC_LoopOpen")
    for node_id in sorted(chain - {close}):
        assert outputs_comfyui_would_run(prompt, node_id) == [], (node_id, prompt[node_id]["class_type"])
    # Without the close node only outputs inside the loop are left, and each waits on the wired open node, which
    # stops the run with the reason before any frame is made (test_nodes_loop.py).
    assert all(opener in upstream(prompt, i) for i in outputs_comfyui_would_run(prompt, close))


@pytest.mark.parametrize("path", STORY_WORKFLOWS, ids=[p.stem for p in STORY_WORKFLOWS])
def test_the_saved_frame_is_the_frame_that_went_back_into_the_story(path):
    prompt = to_api(json.loads(path.read_text()))
    saves = [n for n in prompt.values() if n["class_type"] == "SaveImage"]
    assert saves
    for save in saves:
        source, slot = save["inputs"]["images"]
        assert prompt[source]["class_type"] == "ACDC_ReTokenize" and slot == 2     # its "image" output
        fed, _ = prompt[source]["inputs"]["image"]
        assert prompt[fed]["class_type"] == "ACDC_InpaintFix"                    # the fixed frame went back


@pytest.mark.parametrize("path", VIDEO_WORKFLOWS, ids=lambda p: p.stem)
def test_video_workflow_runs_on_the_built_in_models_and_matches_the_engine(path, comfy):
    """The video chain as shipped: every window written, window 1 corrected and swapped back, the animation saved
    with every frame; the same tokens as the engine's run_video with the workflow's settings."""
    from acdc_core.arm import load_arm
    from acdc_core.correct.video import load_animatediff
    from acdc_core.memory import MemoryModule, MemorySettings
    from acdc_core.video import run_video
    from nodes.loaders import builtin_video_paths

    workflow = json.loads(path.read_text())
    prompt = to_api(workflow)
    for node in prompt.values():
        node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
    run = comfy.run(prompt)
    last = max((i for i, n in prompt.items() if n["class_type"] == "ACDC_VideoReTokenize"), key=int)
    video, frames, arm_frames, _ = run.values[last]
    assert video.done and frames.shape[0] == video.settings.frames == arm_frames.shape[0]
    assert [r.corrected for r in video.windows] == [True] + [False] * (len(video.windows) - 1)
    save = next(i for i, n in prompt.items() if n["class_type"] == "SaveAnimatedWEBP")
    assert run.ui[save][0]["images"][0]["shape"][0] == video.settings.frames
    paths = builtin_video_paths()
    correct = next(n for n in prompt.values() if n["class_type"] == "ACDC_VideoWindowCorrect")["inputs"]
    settings = replace(video.settings, correct="first", strength=correct["t_prime"], steps=correct["steps"],
                       guidance_scale=correct["cfg"])
    engine = run_video(video.prompts, load_arm(paths["arm"]), load_animatediff(paths["dm"], paths["motion_adapter"]),
                       MemoryModule(None, MemorySettings(mode="off")), settings)
    assert [r.tokens_after.tolist() for r in engine.windows] == [r.tokens_after.tolist() for r in video.windows]
