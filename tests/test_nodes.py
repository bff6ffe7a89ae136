"""The node pack's contract with ComfyUI, and every node function on the built-in tiny models (no ComfyUI)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from acdc_core.errors import InvalidInputError
from acdc_core.state import new_story
from nodes import bridge, loaders
from acdc_core.state import Frame
from nodes.wires import BUILTIN, BUILTIN_VIDEO

SHIPPED_BUILTIN = loaders.builtin_model_paths   # before conftest's tiny_builtin patches it

ROOT = Path(__file__).resolve().parent.parent
CORE_TYPES = {"IMAGE", "MASK", "STRING", "INT", "FLOAT", "BOOLEAN", "MODEL", "CLIP", "VAE"}   # ComfyUI's own
HIDDEN_KINDS = {"UNIQUE_ID", "DYNPROMPT", "PROMPT", "EXTRA_PNGINFO"}
NODES = sorted(nodes.NODE_CLASS_MAPPINGS.items())


@pytest.fixture(scope="module", autouse=True)
def host(standalone_host, tiny_builtin):
    return standalone_host


def load_builtin():
    arm = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadARM"]().load(BUILTIN, "auto", False, False)[0]
    dm = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadDiffusionModel"]().load(BUILTIN, "auto")[0]
    memory = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadMemoryLLM"]().load(BUILTIN, "per-frame", 8, 0.0, 0, "", "auto",
                                                                     False)[0]
    return arm, dm, memory


@pytest.fixture(scope="module")
def models():
    """The tiny models (see conftest's ``tiny_builtin``): a 32 px Janus and a 64 px SD."""
    return load_builtin()


def run(name, *args, **kwargs):
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)


# -- the contract ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cls", NODES)
def test_every_node_declares_a_complete_classic_contract(name, cls):
    assert name.startswith("ACDC_") and nodes.NODE_DISPLAY_NAME_MAPPINGS[name]
    assert cls.CATEGORY.split("/")[0] == "ACDC" and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    for kind in cls.RETURN_TYPES:
        assert kind in CORE_TYPES or kind.startswith("ACDC_"), kind
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    lazy = False
    for group in ("required", "optional"):
        for input_name, entry in spec.get(group, {}).items():
            kind, options = entry[0], entry[1]
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(kind, list):  # a combo
                assert kind and options.get("default", kind[0]) in kind
                continue
            assert kind in CORE_TYPES or kind.startswith("ACDC_"), kind
            lazy = lazy or bool(options.get("lazy"))
            if kind in ("INT", "FLOAT") and "default" in options:
                assert options.get("min", -np.inf) <= options["default"] <= options.get("max", np.inf)
                assert isinstance(options["default"], int if kind == "INT" else float)
            if input_name == "seed":
                assert options["control_after_generate"] is False  # a seed that changes itself defeats the cache
    for hidden_name, kind in spec.get("hidden", {}).items():
        assert kind in HIDDEN_KINDS or hidden_name == "acdc_frame"
    if lazy:
        assert hasattr(cls, "check_lazy_status")


def test_the_pack_imports_as_comfyui_imports_it():
    spec = importlib.util.spec_from_file_location("acdc_pack_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    try:
        spec.loader.exec_module(pack)
        assert set(pack.NODE_CLASS_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
        assert pack.WEB_DIRECTORY == "./web" and (ROOT / "web" / "acdc.js").is_file()
        assert (ROOT / "web" / "icon.svg").is_file()
    finally:
        for key in [k for k in sys.modules if k.startswith(spec.name)]:
            del sys.modules[key]


def test_no_pack_code_computes_model_paths_from_its_location_or_calls_cuda():
    for path in (ROOT / "nodes").glob("*.py"):
        text = path.read_text()
        assert ".cuda(" not in text and "__file__" not in text, path.name


# -- the bridge inside ComfyUI (its modules stubbed) ---------------------------------------------------------

@pytest.fixture
def comfy_bridge(monkeypatch, tmp_path):
    """``nodes/bridge.py`` loaded as inside ComfyUI, with recording stand-ins for ComfyUI's modules."""
    calls = {"bar": [], "interrupt": 0, "load": [], "folders": {}, "sent": []}

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.node_id = total, node_id

        def update_absolute(self, value, total=None, preview=None):
            calls["bar"].append((value, total, preview, self.node_id))

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    class ExecutionBlocker:
        def __init__(self, message):
            self.message = message

    class InterruptProcessingException(Exception):
        pass

    def interrupted():
        calls["interrupt"] += 1
        if calls.get("cancel"):
            raise InterruptProcessingException()

    folder_paths = types.SimpleNamespace(
        models_dir=str(tmp_path / "models"),
        add_model_folder_path=lambda name, path: calls["folders"].setdefault(name, []).append(path),
        get_folder_paths=lambda name: calls["folders"].get(name, []),
        get_filename_list=lambda name: [],
        get_input_directory=lambda: str(tmp_path / "input"),
        get_output_directory=lambda: str(tmp_path / "output"),
        get_temp_directory=lambda: str(tmp_path / "temp"),
    )
    mm = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"), unet_offload_device=lambda: torch.device("cpu"),
        load_models_gpu=lambda models, force_full_load=False: calls["load"].append((models, force_full_load)),
        throw_exception_if_processing_interrupted=interrupted, soft_empty_cache=lambda: None)
    stubs = {
        "folder_paths": folder_paths,
        "comfy": types.ModuleType("comfy"),
        "comfy.model_management": mm,
        "comfy.model_patcher": types.SimpleNamespace(ModelPatcher=ModelPatcher),
        "comfy.utils": types.SimpleNamespace(ProgressBar=ProgressBar),
        "comfy_execution": types.ModuleType("comfy_execution"),
        "comfy_execution.graph": types.SimpleNamespace(ExecutionBlocker=ExecutionBlocker),
        "server": types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=types.SimpleNamespace(
            send_sync=lambda event, data: calls["sent"].append((event, data))))),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("bridge_inside_comfy", ROOT / "nodes" / "bridge.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.HOST.in_comfy and isinstance(module.HOST, module.ComfyHost)
    return module, calls


def test_inside_comfyui_the_bridge_registers_folders_and_reports_progress_previews_and_cancel(comfy_bridge):
    bridge_in, calls = comfy_bridge
    bridge_in.register_model_folders()
    assert set(calls["folders"]) == {"acdc_arm", "LLM", "acdc", "animatediff_models"}
    assert calls["folders"]["acdc_arm"][0].endswith("acdc_arm")
    progress = bridge_in.progress()
    progress("arm", 1, 4)
    progress("arm", 4, 4, torch.rand(3, 8, 8))
    assert calls["interrupt"] == 2                                     # Cancel checked on every report
    assert calls["bar"][0][:3] == (1, 4, None)
    kind, picture, size = calls["bar"][1][2]
    assert kind == "JPEG" and picture.size == (256, 256) and size == 512   # an 8 px frame shown 32x, sharp
    # Cancel while a frame is half drawn: its last preview comes back dimmed, marked "cancelled", then it stops.
    frame = torch.full((3, 8, 8), 0.9)
    progress("arm", 2, 4, frame)
    calls["cancel"] = True
    with pytest.raises(Exception) as stopped:
        progress("arm", 3, 4)
    assert type(stopped.value).__name__ == "InterruptProcessingException"
    value, total, (_, marked, _), _ = calls["bar"][-1]
    assert (value, total) == (2, 4) and marked.size == (256, 256)
    pixels = np.asarray(marked, dtype=np.float32)
    assert pixels[:8, :8].mean() < 0.5 * 0.9 * 255                     # dimmed
    assert (pixels > 250).all(-1).any()                                # the caption, in white
    calls["cancel"] = False
    frames = bridge_in.progress(frames=3)
    frames("frame", 1, 3)
    frames("sdedit", 5, 10)
    assert calls["bar"][-1][:2] == (1499, 3000)                        # frame 2 of 3, half its steps
    bridge_in.frame_progress(2, 6, "12")
    assert calls["bar"][-1] == (2, 6, None, "12") and calls["sent"][-1] == ("acdc.frame", {"node": "12", "done": 2,
                                                                                        "total": 6})
    assert type(bridge_in.blocker()).__name__ == "ExecutionBlocker"


def test_inside_comfyui_models_are_handed_to_model_management_in_a_plain_container(comfy_bridge):
    bridge_in, calls = comfy_bridge

    class Engine:
        def __init__(self):
            self.unet = torch.nn.Linear(2, 2)
            self.moved = []

        def to(self, device):
            self.moved.append(device)
            return self

    engine = Engine()
    engine.modules = lambda: {"unet": engine.unet}
    managed = bridge_in.ManagedModel(engine, "tiny")
    container = managed.handle.model
    assert isinstance(container, torch.nn.Module) and container.device == torch.device("cpu")
    assert container.unet is engine.unet                                 # the same weights, not a copy
    assert managed.use() is engine
    assert calls["load"] == [([managed.handle], True)] and engine.moved == [torch.device("cpu")]
    placement = bridge_in.ComfyModels([managed])
    placement.use(engine)
    assert len(calls["load"]) == 2 and placement.use("not managed") == "not managed"


# -- loaders -------------------------------------------------------------------------------------------------

def test_loaders_list_what_is_on_disk_and_the_built_in_models(host):
    models = bridge.HOST.models()
    (models / "acdc_arm" / "Janus-Pro-1B").mkdir(parents=True, exist_ok=True)
    (models / "acdc_arm" / "Janus-Pro-1B" / "config.json").write_text('{"model_type": "janus"}')
    (models / "acdc_arm" / "not-a-model").mkdir(exist_ok=True)
    (models / "checkpoints").mkdir(exist_ok=True)
    (models / "checkpoints" / "sd15.safetensors").write_bytes(b"")
    (models / "diffusers" / "sd-turbo").mkdir(parents=True, exist_ok=True)
    (models / "diffusers" / "sd-turbo" / "model_index.json").write_text("{}")
    (models / "LLM" / "Qwen2.5-1.5B-Instruct").mkdir(parents=True, exist_ok=True)
    (models / "LLM" / "Qwen2.5-1.5B-Instruct" / "config.json").write_text("{}")
    (models / "animatediff_models" / "v1-5-2").mkdir(parents=True, exist_ok=True)
    (models / "animatediff_models" / "v1-5-2" / "config.json").write_text("{}")
    (models / "animatediff_models" / "mm_sd_v15_v2.safetensors").write_bytes(b"")
    (models / "animatediff_models" / "mm_sd_v15_v2.ckpt").write_bytes(b"")
    arm = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadARM"].INPUT_TYPES()["required"]["arm"][0]
    dm = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadDiffusionModel"].INPUT_TYPES()["required"]["model"][0]
    llm = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadMemoryLLM"].INPUT_TYPES()["required"]["llm"][0]
    video = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadVideoDM"].INPUT_TYPES()["required"]
    assert arm == [BUILTIN, BUILTIN_VIDEO, "Janus-Pro-1B"]
    assert dm == [BUILTIN, "diffusers/sd-turbo", "checkpoints/sd15.safetensors"]
    assert llm == [BUILTIN, "Qwen2.5-1.5B-Instruct"]
    assert video["model"][0] == [BUILTIN_VIDEO, "diffusers/sd-turbo", "checkpoints/sd15.safetensors"]
    assert video["motion_adapter"][0] == [BUILTIN_VIDEO, "mm_sd_v15_v2.safetensors", "v1-5-2"]   # no .ckpt


def test_a_unified_arm_folder_is_listed_validated_and_loaded(host):
    from acdc_core.tiny.unified import build_tiny_unified

    folder = bridge.HOST.models() / "acdc_arm" / "toy-like"
    if not folder.exists():
        build_tiny_unified(folder, seed=0)
    cls = nodes.NODE_CLASS_MAPPINGS["ACDC_LoadARM"]
    try:
        assert "toy-like" in cls.INPUT_TYPES()["required"]["arm"][0]     # found by its acdc_arm.json
        assert cls.VALIDATE_INPUTS(arm="toy-like") is True                # weights in lm/ and vq/
        assert cls().load("toy-like", "auto", False, False)[0].engine.family == "unified"
    finally:
        shutil.rmtree(folder)     # the other loader tests list the folder exactly


def test_built_in_models_load_and_are_managed(monkeypatch):
    """Unpatched, "(built-in)" is the shipped toy world: the unified ARM, the pixel-space DM, the memory LLM."""
    from acdc_core.toy import defaults

    monkeypatch.setattr(loaders, "builtin_model_paths", SHIPPED_BUILTIN)
    assert defaults.available()
    assert loaders.builtin_model_paths() == {"arm": defaults.ARM_DIR, "dm": defaults.DM_DIR, "llm": defaults.MEMORY_DIR}
    arm, dm, memory = load_builtin()
    assert arm.engine.family == "unified" and arm.engine.image_size == (32, 32) and dm.engine.native_size == (32, 32)
    assert memory.engine.settings.mode == "per-frame" and memory.managed.engine is memory.engine
    assert set(dict(dm.managed.engine.unet.named_children())) and arm.managed.engine is arm.engine


@pytest.mark.parametrize("name, inputs, message", [
    ("ACDC_LoadARM", {"arm": "Janus-Pro-7B"}, "was not found in"),
    ("ACDC_LoadARM", {"arm": "Janus-Pro-1B"}, "lacks file\\(s\\) the janus backend needs"),
    ("ACDC_LoadDiffusionModel", {"model": "checkpoints/missing.safetensors"}, "was not found"),
    ("ACDC_LoadDiffusionModel", {"model": "somewhere/else"}, "not a diffusion model choice"),
    ("ACDC_LoadMemoryLLM", {"llm": "Llama-9B", "mode": "per-frame"}, "was not found"),
    ("ACDC_LoadMemoryLLM", {"llm": BUILTIN, "mode": "sometimes"}, "mode must be one of"),
    ("ACDC_MemoryEndpoint", {"base_url": "localhost:11434", "model": "m", "api_key_env": "K"}, "http://"),
    ("ACDC_StoryPrompts", {"text": " \n# only a comment\n"}, "the story text is empty"),
    ("ACDC_Story", {"story": ""}, "the story text is empty"),
    ("ACDC_InpaintFix", {"masks": "", "image": "gone.png [input]"}, "not in ComfyUI's input folder"),
    ("ACDC_InpaintFix", {"masks": "{nope", "image": ""}, "not valid JSON"),
])
def test_bad_inputs_are_comfyui_validation_errors_before_anything_runs(name, inputs, message):
    test_loaders_list_what_is_on_disk_and_the_built_in_models(None)  # the folders the cases refer to
    answer = nodes.NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(**inputs)
    assert isinstance(answer, str)
    assert __import__("re").search(message, answer), answer


def test_good_inputs_pass_validation():
    classes = nodes.NODE_CLASS_MAPPINGS
    assert classes["ACDC_LoadARM"].VALIDATE_INPUTS(arm=BUILTIN) is True
    assert classes["ACDC_LoadARM"].VALIDATE_INPUTS(arm=None) is True          # a linked value: checked later
    assert classes["ACDC_StoryPrompts"].VALIDATE_INPUTS(text="One.\n\nTwo.") is True
    assert classes["ACDC_InpaintFix"].VALIDATE_INPUTS(masks="", image="acdc/frame_1.png [temp]") is True
    assert classes["ACDC_MemoryEndpoint"].VALIDATE_INPUTS(base_url="http://127.0.0.1:11434/v1", model="m",
                                                          api_key_env="ACDC_LLM_API_KEY") is True


def test_memory_off_and_endpoint_loaders_need_no_weights():
    off = run("ACDC_LoadMemoryLLM", "Anything", "off", 8, 0.0, 0, "", "auto", False)[0]
    assert off.engine.settings.mode == "off" and off.engine.backend is None
    endpoint = run("ACDC_MemoryEndpoint", "http://127.0.0.1:1/v1", "m", "ACDC_LLM_API_KEY", "whole-story", 8, 0.0, 0,
                   "Rewrite the story.")[0]
    assert endpoint.engine.settings.whole_story_system_prompt == "Rewrite the story."


# -- the stages, one by one ----------------------------------------------------------------------------------

def test_story_prompts_are_one_per_line():
    assert run("ACDC_StoryPrompts", "A dog.\n\n# a note\n  He runs.  \n") == ("A dog.\nHe runs.", 2)
    with pytest.raises(InvalidInputError):
        run("ACDC_StoryPrompts", "\n")


SDEDIT = dict(t_prime=0.5, steps=10, cfg=7.5, seed=3, negative_prompt="", correct_frames="all", correction_size=0,
              sampler_name="ddim")
FIX = dict(fix_prompt="", t_prime=0.8, steps=10, cfg=7.5, seed=-1, grow=2, feather=2, paint_frame=1, masks="",
           image="", sampler_name="ddim")


def frame_one(models, story=None):
    arm, _, _ = models
    state = story or new_story(["Benny the dog in a meadow.", "He jumps."])
    frame = run("ACDC_ARMTokenGenerator", arm, state, 3, 5.0, 1.0, 0, 1.0)[0]
    return state, frame


def sdedit(dm, image, frame, prompt=None, **changes):
    return run("ACDC_SDEditCorrect", dm=dm, image=image, frame=frame, prompt=prompt, **{**SDEDIT, **changes})


def inpaint(dm, pixels, frame, prompt=None, mask=None, **changes):
    return run("ACDC_InpaintFix", dm=dm, pixels=pixels, frame=frame, prompt=prompt, mask=mask, **{**FIX, **changes})


def decoded_frame(models, pixels):
    """A frame of a story whose pixels are ``pixels`` (IMAGE [1, H, W, 3]), as if SDEdit Correct made them."""
    from dataclasses import replace
    arm, _, _ = models
    _, frame = frame_one(models)
    frame = run("ACDC_VQDetokenize", arm, frame)["result"][1]
    return replace(frame, image=pixels.permute(0, 3, 1, 2), corrected=True, dm_seed=3)


def test_each_stage_returns_new_values_in_comfyui_layouts_and_changes_no_input(models):
    arm, dm, memory = models
    state, frame = frame_one(models)
    assert isinstance(frame, Frame) and frame.index == 0 and frame.tokens.shape == (1, 16)
    assert frame.arm_seed == 3 and state.records == ()
    shown = run("ACDC_VQDetokenize", arm, frame)
    image, decoded = shown["result"]
    assert [entry["type"] for entry in shown["ui"]["images"]] == ["temp"]      # the ARM's frame, shown on the node
    assert image.shape == (1, 32, 32, 3) and 0 <= float(image.min()) and float(image.max()) <= 1   # [B, H, W, C]
    assert frame.arm_image is None and decoded.arm_image is not None          # a new frame; the input is untouched
    kept = image.clone()
    prompt = run("ACDC_LLMMemoryPrompt", memory, state, dm)[0]
    assert isinstance(prompt, str) and prompt
    corrected, corrected_frame = sdedit(dm, image, decoded, prompt)
    assert corrected.shape == (1, 64, 64, 3) and torch.equal(image, kept)                        # the DM's size
    assert corrected_frame.corrected and corrected_frame.dm_seed == 3 and corrected_frame.memory_prompt == prompt
    fixed = inpaint(dm, corrected, corrected_frame, prompt)
    assert fixed["result"][0] is corrected and not fixed["result"][1].any()  # no mask: passed through as is
    assert not fixed["result"][2].fixed
    assert fixed["ui"]["acdc_frames"] == [1] and fixed["ui"]["images"][0]["type"] == "temp"
    story, arm_view, saved = run("ACDC_ReTokenize", arm, fixed["result"][2], corrected, prompt=prompt)
    assert saved is corrected                        # what a Save Image after it writes: the frame re-encoded
    assert len(story.records) == 1 and story.records[0].memory_prompt == prompt and story.records[0].corrected
    assert arm_view.shape == (1, 32, 32, 3)
    assert state.records == () and len(state.context) == 0                 # the input story is untouched
    assert torch.equal(story.context.chunks[0].tokens, story.records[0].tokens_after)


def test_acdc_k_passes_later_frames_through_and_re_tokenize_keeps_their_tokens(models):
    arm, dm, _ = models
    first = new_story(["A cat.", "It sleeps."])
    _, frame = frame_one(models, first)
    image, frame = run("ACDC_VQDetokenize", arm, frame)["result"]
    corrected, frame = sdedit(dm, image, frame, "A cat.", correct_frames="1")
    state = run("ACDC_ReTokenize", arm, frame, corrected)[0]
    second = run("ACDC_ARMTokenGenerator", arm, state, 3, 5.0, 1.0, 0, 1.0)[0]
    image2, second = run("ACDC_VQDetokenize", arm, second)["result"]
    node = nodes.NODE_CLASS_MAPPINGS["ACDC_SDEditCorrect"]()
    assert node.check_lazy_status(correct_frames="1", frame=second) == []   # no prompt needed: no LLM query
    passed, left = sdedit(dm, image2, second, correct_frames="1")
    assert passed is image2 and left.corrected is False
    retok = nodes.NODE_CLASS_MAPPINGS["ACDC_ReTokenize"]()
    assert retok.check_lazy_status(frame=left) == []
    done = run("ACDC_ReTokenize", arm, left, image2)[0]
    assert not done.records[1].corrected and torch.equal(done.records[1].tokens_after, second.tokens)


def test_the_fix_repaints_only_the_masked_region(models, host):
    _, dm, _ = models
    pixels = torch.rand(1, 64, 64, 3)
    frame = decoded_frame(models, pixels)
    mask = torch.zeros(1, 64, 64)
    mask[:, 40:56, 40:56] = 1
    out, applied, fixed = inpaint(dm, pixels, frame, fix_prompt="a full moon", t_prime=0.9, grow=0, feather=0,
                                  mask=mask)["result"]
    changed = (out - pixels).abs().amax(-1)[0] > 0
    assert changed[40:56, 40:56].any() and not changed[:32].any() and torch.equal(applied, mask) and fixed.fixed
    # The same through a painted file: alpha 0 where the user painted, as ComfyUI's mask editor saves it.
    picture = np.full((64, 64, 4), 255, np.uint8)
    picture[40:56, 40:56, 3] = 0
    Image.fromarray(picture, "RGBA").save(host / "input" / "clipspace-painted-masked-5.png")
    painted = inpaint(dm, pixels, frame, fix_prompt="a full moon", t_prime=0.9, grow=0, feather=0,
                      image="clipspace-painted-masked-5.png [input]")["result"]
    assert torch.equal(painted[1], mask) and torch.equal(painted[0], out)
    # Painted for frame 2 only: frame 1 passes through.
    elsewhere = inpaint(dm, pixels, frame, fix_prompt="x", t_prime=0.9, paint_frame=2,
                        image="clipspace-painted-masked-5.png [input]")["result"]
    assert elsewhere[0] is pixels and not elsewhere[2].fixed


@pytest.mark.parametrize("mask_shape", [(1, 32, 32), (2, 64, 64)])
def test_a_mask_that_does_not_fit_the_frame_is_refused_naming_both_sizes(models, mask_shape):
    _, dm, _ = models
    pixels = torch.rand(1, 64, 64, 3)
    with pytest.raises(InvalidInputError, match="64x64"):
        inpaint(dm, pixels, decoded_frame(models, pixels), fix_prompt="x", mask=torch.ones(mask_shape))


def test_a_masked_fix_without_any_prompt_says_what_to_connect(models):
    from dataclasses import replace
    _, dm, _ = models
    pixels = torch.rand(1, 64, 64, 3)
    frame = replace(decoded_frame(models, pixels), memory_prompt=None)
    with pytest.raises(InvalidInputError, match="fix prompt"):
        inpaint(dm, pixels, frame, mask=torch.ones(1, 64, 64))


def test_a_fix_mask_on_a_frame_acdc_k_leaves_alone_is_refused_as_the_engine_refuses_it(models):
    arm, dm, _ = models
    _, frame = frame_one(models)
    image, frame = run("ACDC_VQDetokenize", arm, frame)["result"]
    passed, left = sdedit(dm, image, frame, correct_frames="none")
    with pytest.raises(InvalidInputError, match="frame 1 has a fix mask but is not corrected"):
        inpaint(dm, passed, left, fix_prompt="x", mask=torch.ones(1, 32, 32))


def test_the_fix_copy_for_a_frame_keeps_only_that_frames_mask():
    from nodes.masks import frame_inputs
    inputs = {"masks": '{"2":"b.png [input]"}', "image": "c.png [input]", "paint_frame": 3, "seed": 1}
    assert frame_inputs(inputs, 3) == {"masks": '{"3":"c.png [input]"}', "image": "", "paint_frame": 3, "seed": 1}
    assert frame_inputs(inputs, 1)["masks"] == ""
    assert inputs["image"] == "c.png [input]"                                # not changed in place
    linked = dict(inputs, masks=["9", 0])
    assert frame_inputs(linked, 1) == linked                                 # a linked widget is left alone


def test_a_batch_reaching_re_tokenize_is_refused_clearly(models):
    arm, _, _ = models
    _, frame = frame_one(models)
    with pytest.raises(InvalidInputError, match="one frame"):
        run("ACDC_ReTokenize", arm, frame, torch.rand(2, 32, 32, 3))


def test_cancel_is_checked_between_tokens(models):
    bridge.interrupt()
    with pytest.raises(bridge.Interrupted):
        frame_one(models)
    frame_one(models)  # the next run is not affected


STORY_NODE = dict(seed=1, t_prime=0.5, steps=10, cfg=7.5, correct_frames="all", arm_cfg=5.0, temperature=1.0,
                  fix_frame=0, fix_t_prime=0.8, negative_prompt="", dm_seed=-1, fix_seed=-1, sampler_name="ddim")


def story_node(arm, story, **changes):
    inputs = {**STORY_NODE, **changes}
    return run("ACDC_Story", arm=arm, story=story, **inputs)


def test_the_all_in_one_story_node_runs_the_engine_and_shows_arm_and_corrected_frames(models, host):
    arm, dm, memory = models
    mask = torch.zeros(1, 64, 64)
    mask[:, :16, :16] = 1
    out = story_node(arm, "A red fox in the snow.\nShe naps.", fix_frame=2, dm=dm, memory=memory, mask=mask)
    story, frames, arm_frames, prompts = out["result"]
    assert [r.corrected for r in story.records] == [True, True] and story.records[1].fixed
    assert frames.shape == (2, 64, 64, 3) and arm_frames.shape == (2, 32, 32, 3)
    assert len(prompts.splitlines()) == 2
    with Image.open(host / "temp" / out["ui"]["images"][0]["subfolder"] / out["ui"]["images"][0]["filename"]) as strip:
        assert strip.width > strip.height                                   # frames side by side, two rows
    arm_only = story_node(arm, "A red fox in the snow.\nShe naps.")
    assert not any(r.corrected for r in arm_only["result"][0].records)     # no diffusion model: the ARM alone
    assert torch.equal(arm_only["result"][0].records[0].tokens_before, story.records[0].tokens_before)
    with pytest.raises(InvalidInputError, match="fix_frame is 3"):
        story_node(arm, "One.\nTwo.", fix_frame=3, dm=dm, mask=mask)


def test_painted_mask_files_are_read_as_comfyui_does():
    from nodes.masks import effective_masks, load_mask, parse_masks
    assert effective_masks('{"1":"a.png [input]"}', "b.png [temp]", 2) == {1: "a.png [input]"}
    assert effective_masks("", "b.png", 2) == {2: "b.png"}
    assert parse_masks(json.dumps({"3": "c.png [input]", "4": ""})) == {3: "c.png [input]"}
    with pytest.raises(InvalidInputError, match="paint it again"):
        load_mask("missing.png [input]")
