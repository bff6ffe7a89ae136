"""The per-frame chain between Loop Frame (open) and (close), run on the built-in tiny models.

The loop's expansion is checked as data, then whole prompts run through the executor stand-in in
test_nodes_executor.py: the story matches the headless engine's ``run_story``, preview nodes inside the
loop see every frame, re-runs reuse exactly what a change does not reach (t', a painted mask), Cancel
leaves nothing stale, and --cache-none works.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from acdc_core.arm.base import SamplingSettings
from acdc_core.errors import InvalidInputError
from acdc_core.images import resize_to
from acdc_core.state import StorySettings
from acdc_core.story import run_story
from nodes import bridge
from nodes.graph import CLOSE, OPEN, clone_id, copy_of, expand_story_loop, loop_body
from nodes.loop import rewrite_for_frame
from nodes.wires import BUILTIN
from tests.test_nodes_executor import MiniComfy

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

STORY = "Benny, a golden retriever, in a sunny meadow.\nHe jumps over a log.\nHe sleeps under the moon."
SEED, DM_SEED, STEPS = 7, 11, 10     # different seeds per stage: a mix-up of the two shows


class PreviewImage:
    """Stand-in for ComfyUI's PreviewImage (an output node)."""
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    shown: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images):
        PreviewImage.shown.append(images)
        return {"ui": {"images": [{"filename": f"{len(PreviewImage.shown)}.png"}]}, "result": ()}


CLASSES = {**nodes.NODE_CLASS_MAPPINGS, "PreviewImage": PreviewImage}


@pytest.fixture(scope="module", autouse=True)
def host(standalone_host, tiny_builtin):
    """The reduced host: models built once per session, input and temp folders per module."""
    return standalone_host


def chain_prompt(story=STORY, correct_frames="all", mode="per-frame") -> dict:
    """The ACDC story as an API-format prompt: loaders, Story Prompts, the per-frame chain, previews."""
    arm, dm, mem = ["1", 0], ["2", 0], ["3", 0]
    return {
        "1": {"class_type": "ACDC_LoadARM", "inputs": {"arm": BUILTIN, "dtype": "auto", "live_preview": False,
                                                       "trust_remote_code": False}},
        "2": {"class_type": "ACDC_LoadDiffusionModel", "inputs": {"model": BUILTIN, "dtype": "auto"}},
        "3": {"class_type": "ACDC_LoadMemoryLLM", "inputs": {
            "llm": BUILTIN, "mode": mode, "max_new_tokens": 12, "temperature": 0.0, "seed": 0, "system_prompt": "",
            "dtype": "auto", "trust_remote_code": False}},
        "4": {"class_type": "ACDC_StoryPrompts", "inputs": {"text": story}},
        "5": {"class_type": OPEN, "inputs": {"prompts": ["4", 0]}},
        "6": {"class_type": "ACDC_ARMTokenGenerator", "inputs": {
            "arm": arm, "story": ["5", 1], "seed": SEED, "cfg": 5.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}},
        "7": {"class_type": "ACDC_VQDetokenize", "inputs": {"arm": arm, "frame": ["6", 0]}},
        "8": {"class_type": "ACDC_LLMMemoryPrompt", "inputs": {"memory": mem, "story": ["5", 1], "dm": dm}},
        "9": {"class_type": "ACDC_SDEditCorrect", "inputs": {
            "dm": dm, "image": ["7", 0], "prompt": ["8", 0], "t_prime": 0.5, "steps": STEPS, "cfg": 7.5,
            "seed": DM_SEED, "negative_prompt": "", "correct_frames": correct_frames, "correction_size": 0,
            "sampler_name": "ddim", "frame": ["7", 1]}},
        "10": {"class_type": "ACDC_InpaintFix", "inputs": {
            "dm": dm, "pixels": ["9", 0], "fix_prompt": "a clear night sky", "t_prime": 0.8, "steps": STEPS,
            "cfg": 7.5, "seed": -1, "grow": 2, "feather": 2, "paint_frame": 1, "masks": "", "image": "",
            "sampler_name": "ddim", "prompt": ["8", 0], "frame": ["9", 1]}},
        "11": {"class_type": "ACDC_ReTokenize", "inputs": {"arm": arm, "frame": ["10", 2], "image": ["10", 0],
                                                           "prompt": ["8", 0]}},
        "12": {"class_type": CLOSE, "inputs": {"loop": ["5", 0], "story": ["11", 0]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},     # inside the loop
        "14": {"class_type": "PreviewImage", "inputs": {"images": ["12", 1]}},    # after it
    }


def frame_of(run, node_id):
    """The 1-based frame of an executed copy ``{close}.{frame}.{node}`` (0 for the user's own node)."""
    parts = node_id.split(".")
    return int(parts[1]) if len(parts) == 3 else 0


def frames_ran(run, class_type):
    return sorted(frame_of(run, n) for n in run.ran(class_type))


# -- the expansion as data -----------------------------------------------------------------------------------

def test_expansion_copies_the_body_once_per_frame_with_unique_deterministic_ids():
    graph = chain_prompt()
    body = loop_body(graph, "5", "12")
    assert set(body) == {"6", "7", "8", "9", "10", "11", "13"}   # the preview inside the loop too, not 14
    first, result = expand_story_loop(graph, open_id="5", close_id="12", first=0, total=3, outputs=4)
    again, _ = expand_story_loop(copy.deepcopy(graph), open_id="5", close_id="12", first=0, total=3, outputs=4)
    assert first == again                                         # deterministic
    assert copy_of("6") is None and copy_of("5:12.2.6") == ("5:12", 2, "6")   # (ids inside a subgraph too)
    assert len(first) == 3 * (len(body) + 1) + 1 and not set(first) & set(graph)
    assert result == tuple(["12.3.12", k] for k in range(4))
    for frame in (1, 2, 3):
        gen = first[clone_id("12", frame, "6")]
        assert gen["inputs"]["story"] == [clone_id("12", frame, "5"), 1]    # links stay inside the frame
        assert gen["inputs"]["arm"] == ["1", 0]                             # loaders are shared
        assert gen["override_display_id"] == "6"
        assert copy_of(clone_id("12", frame, "6")) == ("12", frame, "6")   # an error names the node placed
        opened = first[clone_id("12", frame, "5")]["inputs"]
        # The body is re-emitted with the story the previous frame's Re-Tokenize made.
        assert opened.get("resume") == (None if frame == 1 else [clone_id("12", frame - 1, "11"), 0])
    end = first["12.3.12"]["inputs"]
    assert end == {"loop": ["12.3.5", 0], "story": ["12.3.11", 0], "acdc_frame": 3}
    assert first["12.2.5"]["inputs"]["acdc_frame"] == 2          # copies are marked (a hidden input)
    assert graph == chain_prompt()                                # the graph itself is untouched


def test_expansion_can_start_after_frames_already_made():
    expansion, _ = expand_story_loop(chain_prompt(), open_id="5", close_id="12", first=2, total=3, outputs=4)
    assert {frame_of(None, n) for n in expansion} == {3}


def test_each_fix_copy_gets_only_its_own_frames_painted_mask():
    graph = chain_prompt()
    graph["10"]["inputs"].update(masks='{"1":"m1.png [input]"}', image="m3.png [input]", paint_frame=3)
    expansion, _ = expand_story_loop(graph, open_id="5", close_id="12", first=0, total=3, outputs=4,
                                     rewrite=rewrite_for_frame)
    fixes = {f: expansion[clone_id("12", f, "10")]["inputs"] for f in (1, 2, 3)}
    assert fixes[1]["masks"] == '{"1":"m1.png [input]"}' and fixes[2]["masks"] == ""
    assert fixes[3]["masks"] == '{"3":"m3.png [input]"}'
    assert all(fixes[f]["image"] == "" and fixes[f]["paint_frame"] == f for f in fixes)
    # Browsing to another frame (the web extension moves the painted file into masks) changes no copy.
    graph["10"]["inputs"].update(masks='{"1":"m1.png [input]","3":"m3.png [input]"}',
                                 image="frame_abc.png [temp]", paint_frame=2)
    moved, _ = expand_story_loop(graph, open_id="5", close_id="12", first=0, total=3, outputs=4,
                                 rewrite=rewrite_for_frame)
    assert moved == expansion


@pytest.mark.parametrize("change, message", [
    (lambda g: g["12"]["inputs"].update(story=["5", 1]), "inside the loop"),
    (lambda g: g["12"]["inputs"].update(loop=["4", 0]), "straight from Loop Frame"),
])
def test_miswired_loops_are_explained(change, message):
    graph = chain_prompt()
    change(graph)
    with pytest.raises(InvalidInputError, match=message):
        expand_story_loop(graph, open_id="5", close_id="12", first=0, total=3, outputs=4)


# -- whole stories through the executor stand-in --------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    """The story the loop must make, computed by the engine's own run_story on the same loaded models."""
    comfy = MiniComfy(CLASSES)
    run = comfy.run(chain_prompt())
    arm, dm, memory = (run.values[n][0] for n in ("1", "2", "3"))
    settings = StorySettings(sampling=SamplingSettings(guidance_scale=5.0, temperature=1.0), strength=0.5,
                             steps=STEPS, guidance_scale=7.5, seed=SEED, dm_seed=DM_SEED)
    state = run_story(STORY.splitlines(), arm.engine, dm.engine, memory.engine, settings)
    return comfy, run, state


def test_one_run_makes_the_whole_story_exactly_as_the_engine_does(reference):
    comfy, run, expected = reference
    story, frames, arm_frames, prompts = run.values["12"]
    assert story.done and len(story.records) == 3
    for i, (got, want) in enumerate(zip(story.records, expected.records)):
        assert torch.equal(got.tokens_before, want.tokens_before)
        assert torch.equal(got.tokens_after, want.tokens_after)
        assert got.memory_prompt == want.memory_prompt and got.corrected and got.fixed == want.fixed is False
        assert (got.arm_seed, got.dm_seed) == (want.arm_seed, want.dm_seed) == (SEED + i, DM_SEED + i)
        torch.testing.assert_close(got.corrected_image, want.corrected_image)
    assert frames.shape == (3, 64, 64, 3) and arm_frames.shape == (3, 32, 32, 3)   # IMAGE is [B, H, W, C]
    assert prompts.splitlines() == [r.memory_prompt for r in expected.records]
    # Every stage ran once per frame, in the frame's own copy; the template chain itself never ran.
    for class_type in ("ACDC_ARMTokenGenerator", "ACDC_VQDetokenize", "ACDC_LLMMemoryPrompt",
                       "ACDC_SDEditCorrect", "ACDC_InpaintFix", "ACDC_ReTokenize"):
        assert frames_ran(run, class_type) == [1, 2, 3], class_type
    assert run.ran("ACDC_LoadARM") == ["1"]
    # The preview inside the loop showed every frame (on its own node); the close node shows the strip.
    assert len(run.ui["13"]) == 3 and len(run.ui["12"]) == 1
    # The fix node shows every frame so far, numbered, for the mask editor.
    assert run.ui["10"][-1]["acdc_frames"] == [1, 2, 3]


def test_a_rerun_comes_from_the_cache_and_a_new_t_prime_reruns_only_what_it_reaches(reference):
    comfy, _, _ = reference
    again = comfy.run(chain_prompt())
    # Only the loop's own planning runs again (the close node first, then the open node, which just blocks
    # the wired chain) and the node after the loop; no frame is made again.
    assert again.executed[0] == "12" and set(again.executed) == {"12", "5", "14"}
    prompt = chain_prompt()
    prompt["9"]["inputs"]["t_prime"] = 0.6
    run = comfy.run(prompt)
    assert frames_ran(run, "ACDC_ARMTokenGenerator") == [2, 3]   # frame 1's tokens do not depend on t'
    assert frames_ran(run, "ACDC_LLMMemoryPrompt") == [2, 3]
    assert frames_ran(run, "ACDC_VQDetokenize") == [2, 3]
    assert frames_ran(run, "ACDC_SDEditCorrect") == [1, 2, 3]
    assert frames_ran(run, "ACDC_ReTokenize") == [1, 2, 3]


def write_mask(host, name, size, box):
    """A file as ComfyUI's mask editor saves it: the frame with alpha 0 where the user painted."""
    picture = np.full((size, size, 4), 255, np.uint8)
    top, left, bottom, right = box
    picture[top:bottom, left:right, 3] = 0
    Image.fromarray(picture, "RGBA").save(host / "input" / name)
    return f"{name} [input]"


def test_a_mask_painted_on_frame_2_fixes_it_there_only_and_the_story_resumes_from_it(reference, host):
    comfy, before, _ = reference
    comfy.run(chain_prompt())
    prompt = chain_prompt()
    prompt["10"]["inputs"].update(image=write_mask(host, "clipspace-painted-masked-2.png", 64, (8, 8, 24, 24)),
                                  paint_frame=2)
    run = comfy.run(prompt)
    # Frame 1 entirely from the cache, frame 2 from its fix on, frame 3 regenerated from the fixed frame.
    assert frames_ran(run, "ACDC_ARMTokenGenerator") == [3]
    assert frames_ran(run, "ACDC_SDEditCorrect") == [3]
    assert frames_ran(run, "ACDC_InpaintFix") == [2, 3]
    assert frames_ran(run, "ACDC_ReTokenize") == [2, 3]
    old, new = before.values["12"][0].records, run.values["12"][0].records
    assert torch.equal(old[0].tokens_after, new[0].tokens_after)
    assert [r.fixed for r in new] == [False, True, False]              # the frame value said so
    changed = (old[1].corrected_image - new[1].corrected_image).abs().amax(0) > 0   # [H, W]
    assert changed.any()
    reach = 2 + 2  # grow + feather around the painted 16x16 square
    outside = torch.ones_like(changed)
    outside[8 - reach:24 + reach, 8 - reach:24 + reach] = False
    assert not changed[outside].any()                                  # not one pixel outside the mask moved
    # The fixed frame, re-encoded, is what frame 3 was generated after.
    arm = run.values["1"][0].engine
    assert torch.equal(new[1].tokens_after, arm.encode(resize_to(new[1].corrected_image[None], arm.image_size)))
    assert torch.equal(run.values["12"][0].context.chunks[1].tokens, new[1].tokens_after)
    # Switching to paint another frame (the extension keeps frame 2's file in `masks`) makes no frame again:
    # only the close node re-plans (its template inputs changed) and finds every copy in the cache.
    browse = copy.deepcopy(prompt)
    browse["10"]["inputs"].update(masks=f'{{"2":"{prompt["10"]["inputs"]["image"]}"}}',
                                  image=run.ui["10"][-1]["images"][0]["filename"] + " [temp]", paint_frame=3)
    assert set(comfy.run(browse).executed) == {"12", "5", "14"}


def test_the_fix_node_shows_frames_enlarged_and_a_mask_painted_there_is_the_frame_s_mask(reference, host):
    comfy, _, _ = reference
    small, large = chain_prompt(), chain_prompt()
    small["10"]["inputs"].update(image=write_mask(host, "painted-64.png", 64, (8, 8, 24, 24)), paint_frame=2)
    # The same square painted on the 256 px preview, plus one stroke covering a quarter of a frame pixel.
    picture = np.full((256, 256, 4), 255, np.uint8)
    picture[32:96, 32:96, 3] = 0
    picture[200:202, 200:202, 3] = 0
    Image.fromarray(picture, "RGBA").save(host / "input" / "painted-256.png")
    large["10"]["inputs"].update(image="painted-256.png [input]", paint_frame=2)
    expected_mask = torch.zeros(64, 64)
    expected_mask[8:24, 8:24] = 1
    expected_mask[50, 50] = 1                                  # any painted pixel over a frame pixel masks it
    got = comfy.run(large)
    shown = got.ui["10"][-1]["images"]
    with Image.open(host / "temp" / shown[0]["subfolder"] / shown[0]["filename"]) as preview:
        assert preview.size == (256, 256)                      # the 64 px frame, 4x, sharp squares
    assert torch.equal(got.values[clone_id("12", 2, "10")][1][0], expected_mask)   # the fix node's mask output
    # Without the extra stroke the two masks are the same, and so are the fixed frames.
    picture[200:202, 200:202, 3] = 255
    Image.fromarray(picture, "RGBA").save(host / "input" / "painted-256.png")
    from_preview = comfy.run(large).values["12"][0].records[1].corrected_image
    from_frame = comfy.run(small).values["12"][0].records[1].corrected_image
    assert torch.equal(from_preview, from_frame)


def test_a_mask_of_the_wrong_size_is_refused_with_both_sizes_on_the_node_that_failed(reference, host, monkeypatch):
    comfy, _, _ = reference
    sent = []
    monkeypatch.setattr(bridge, "send", lambda event, data: sent.append((event, data)))
    prompt = chain_prompt()
    prompt["10"]["inputs"].update(image=write_mask(host, "small.png", 32, (0, 0, 8, 8)), paint_frame=2)
    with pytest.raises(InvalidInputError, match="frame 2: the mask painted for it is 32x32, which is neither the "
                                                "frame's 64x64 nor its preview's"):
        comfy.run(prompt)
    # ComfyUI reports it on Loop Frame (close); the web extension is told which node the user placed failed.
    failed = [data for event, data in sent if event == "acdc.failed"]
    assert [(d["node"], d["frame"], d["loop"]) for d in failed] == [("10", 2, "12")]
    assert failed[0]["message"].startswith("Inpaint Physical Fix (ACDC), frame 2: the mask painted")


def test_acdc_k_leaves_later_frames_to_the_arm_and_skips_their_memory(reference):
    comfy, _, _ = reference
    run = comfy.run(chain_prompt(correct_frames="1"))
    records = run.values["12"][0].records
    assert [r.corrected for r in records] == [True, False, False]
    assert torch.equal(records[2].tokens_before, records[2].tokens_after)
    assert frames_ran(run, "ACDC_SDEditCorrect") == [1, 2, 3]      # (passing frames 2-3 through)
    assert frames_ran(run, "ACDC_LLMMemoryPrompt") in ([], [1])    # lazy: frames 2-3 never query the LLM


def test_cancel_stops_the_loop_and_a_rerun_finishes_the_same_story(reference, monkeypatch):
    comfy, _, expected = reference
    fresh = MiniComfy(CLASSES)
    generator = CLASSES["ACDC_ARMTokenGenerator"]
    calls = {"n": 0}
    real = generator.generate

    def cancel_at_frame_2(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            bridge.interrupt()  # the user presses Cancel while frame 2 is being made
        return real(self, *args, **kwargs)

    monkeypatch.setattr(generator, "generate", cancel_at_frame_2)
    with pytest.raises(bridge.Interrupted):
        fresh.run(chain_prompt())
    monkeypatch.setattr(generator, "generate", real)
    run = fresh.run(chain_prompt())
    assert frames_ran(run, "ACDC_ARMTokenGenerator") == [2, 3]    # frame 1, finished before Cancel, is reused
    got = run.values["12"][0].records
    assert [torch.equal(a.tokens_after, b.tokens_after) for a, b in zip(got, expected.records)] == [True] * 3


@pytest.mark.parametrize("cache", [True, False, "none"], ids=["classic", "within-a-run", "cache-none"])
def test_a_story_costs_one_run_of_each_node_per_frame_in_every_cache_mode(reference, cache):
    from collections import Counter

    _, _, expected = reference
    run = MiniComfy(CLASSES, cache=cache).run(chain_prompt())
    counts = Counter(run.dyn.get_node(n)["class_type"] for n in run.executed)
    frames = len(expected.records)
    per_frame = {"ACDC_ARMTokenGenerator", "ACDC_VQDetokenize", "ACDC_LLMMemoryPrompt", "ACDC_SDEditCorrect",
                 "ACDC_InpaintFix", "ACDC_ReTokenize"}
    assert {c: counts[c] for c in per_frame} == {c: frames for c in per_frame}
    assert counts["ACDC_LoopOpen"] == frames + 1         # and the open node as wired, which blocks that chain
    assert counts["ACDC_LoadARM"] == counts["ACDC_LoadDiffusionModel"] == counts["ACDC_LoadMemoryLLM"] == 1
    assert [torch.equal(a.tokens_after, b.tokens_after) for a, b in zip(run.values["12"][0].records,
                                                                         expected.records)] == [True] * frames


def test_under_cache_none_a_lazy_input_would_redo_every_earlier_frame(reference, monkeypatch):
    """Why the pack's lazy inputs turn eager under --cache-none (``bridge.lazy_inputs``): kept lazy, each frame's
    late prompt request runs the frames before it again (in ComfyUI 0.33 the six-frame story made 63 ARM frames
    instead of 6, 2^6 - 1; the stand-in, which re-adds less than ComfyUI does, at least redoes earlier frames)."""
    from nodes import bridge

    monkeypatch.setattr(bridge, "lazy_inputs", lambda: True)
    run = MiniComfy(CLASSES, cache="none").run(chain_prompt())
    made = [n for n in run.executed if run.dyn.get_node(n)["class_type"] == "ACDC_ARMTokenGenerator"]
    assert len(made) > 3 and len(set(made)) == 3          # frames made again


def test_an_error_inside_the_loop_names_the_node_and_the_frame(reference):
    """ComfyUI reports a copy's error on Loop Frame (close); the message says which step of which frame failed."""
    prompt = chain_prompt()
    prompt["9"]["inputs"]["sampler_name"] = "plms"          # a sampler this DM does not have
    with pytest.raises(InvalidInputError, match=r"^SDEdit Correct \(ACDC\), frame 1: scheduler 'plms'"):
        MiniComfy(CLASSES).run(prompt)


def test_acdc_k_under_cache_none_asks_no_memory_for_frames_it_leaves_alone(reference):
    """Under --cache-none the prompts are eager, so the memory node runs for frames past k too: it answers with the
    story line without a query (the frame is not corrected), and the story is the one ACDC #k makes."""
    from collections import Counter

    run = MiniComfy(CLASSES, cache="none").run(chain_prompt(correct_frames="1"))
    records = run.values["12"][0].records
    assert [r.corrected for r in records] == [True, False, False]
    assert Counter(run.dyn.get_node(n)["class_type"] for n in run.executed)["ACDC_LLMMemoryPrompt"] == 3


def test_without_a_cache_the_loop_still_runs(reference):
    _, _, expected = reference
    run = MiniComfy(CLASSES, cache=False).run(chain_prompt(story="A red fox in the snow.\nShe naps."))
    assert len(run.values["12"][0].records) == 2


def test_an_open_node_without_a_close_node_says_what_is_missing(reference):
    prompt = chain_prompt()
    del prompt["12"], prompt["14"]
    with pytest.raises(InvalidInputError, match="needs a Loop Frame \\(close\\)"):
        MiniComfy(CLASSES).run(prompt)


def test_a_close_node_that_failed_validation_stops_the_story_instead_of_a_run_that_makes_nothing(reference):
    """ComfyUI runs the outputs that validate: with the close node invalid (a removed story link), only the Preview
    and Save nodes inside the loop are left, and they would make nothing. The wired open node says why."""
    prompt = chain_prompt()
    del prompt["12"]["inputs"]["story"]
    with pytest.raises(InvalidInputError, match=r"Loop Frame \(close\) \(node 12\) is not part of this run.*failed validation"):
        MiniComfy(CLASSES).run(prompt, outputs=["13"])   # 12 and the preview after it (14) did not validate


def test_the_close_node_plans_from_the_prompt_alone_so_it_runs_first():
    """Under ComfyUI's default cache, entries the current run has not touched yet are dropped after every
    node; the close node must re-plan (and so touch every frame's copy) before any other node runs."""
    from nodes.loop import LoopClose, LoopOpen, plan_from_graph
    graph = chain_prompt()
    assert plan_from_graph(graph, "12") == ("5", 0, 3)
    dyn = __import__("tests.test_nodes_executor", fromlist=["DynPrompt"]).DynPrompt(graph)
    assert LoopClose().check_lazy_status(unique_id="12", dynprompt=dyn) == []
    assert LoopOpen.IS_CHANGED() != LoopOpen.IS_CHANGED()              # NaN: the wired open node never caches
    assert LoopOpen.IS_CHANGED(acdc_frame=2) == 2                      # its copies do
    graph["5"]["inputs"]["resume"] = ["99", 0]                          # resuming: wait for the open node
    assert plan_from_graph(graph, "12") is None


def test_a_finished_story_can_be_resumed_with_more_lines(reference):
    """Resuming: the close node cannot plan from the prompt alone, so it waits for the open node's plan."""
    comfy, _, _ = reference
    prompt = chain_prompt()
    prompt["20"] = {"class_type": "ACDC_Story", "inputs": {
        "arm": ["1", 0], "story": "\n".join(STORY.splitlines()[:2]), "seed": SEED, "t_prime": 0.5, "steps": STEPS,
        "cfg": 7.5, "correct_frames": "all", "arm_cfg": 5.0, "temperature": 1.0, "fix_frame": 0,
        "fix_t_prime": 0.8, "negative_prompt": "", "dm_seed": DM_SEED, "fix_seed": -1, "sampler_name": "ddim",
        "dm": ["2", 0], "memory": ["3", 0]}}
    prompt["5"]["inputs"]["resume"] = ["20", 0]
    run = comfy.run(prompt)
    story = run.values["12"][0]
    assert len(story.records) == 3 and frames_ran(run, "ACDC_ARMTokenGenerator") == [3]
    assert story.records[:2] == run.values["20"][0].records        # the first two frames are the resumed ones


# -- what the frame value carries, whatever sits between the stages --------------------------------------------

class Brighten:
    """An image node a user might put in the chain (a colour fix): it changes every pixel a little."""
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def apply(self, image):
        return ((image * 0.9 + 0.05).clamp(0, 1),)


def with_node_before_retokenize(prompt: dict, class_type: str = "Brighten") -> dict:
    prompt = copy.deepcopy(prompt)
    prompt["30"] = {"class_type": class_type, "inputs": {"image": prompt["11"]["inputs"]["image"]}}
    prompt["11"]["inputs"]["image"] = ["30", 0]
    return prompt


@pytest.mark.parametrize("correct_frames", ["all", "1"])
def test_an_image_node_before_re_tokenize_changes_nothing_that_is_recorded(reference, correct_frames):
    classes = {**CLASSES, "Brighten": Brighten}
    plain = MiniComfy(classes).run(chain_prompt(correct_frames=correct_frames)).values["12"][0].records
    brightened = MiniComfy(classes).run(with_node_before_retokenize(chain_prompt(correct_frames=correct_frames)))
    records = brightened.values["12"][0].records
    fields = ("corrected", "fixed", "arm_seed", "dm_seed", "memory_prompt")
    assert [[getattr(r, f) for f in fields] for r in records] == [[getattr(r, f) for f in fields] for r in plain]
    # What the node did reaches the pixels re-encoded (of corrected frames only: frames ACDC #k leaves alone
    # keep the ARM's own tokens, whatever image arrives).
    arm = brightened.values["1"][0].engine
    first = records[0]
    assert torch.equal(first.tokens_after, arm.encode(resize_to(first.corrected_image[None], arm.image_size)))
    for r in records[1:]:
        assert r.corrected == (correct_frames == "all")
        if not r.corrected:
            assert torch.equal(r.tokens_after, r.tokens_before) and r.dm_seed is None


def test_a_fix_mask_past_acdc_k_is_refused_in_the_wired_chain_as_in_the_engine(reference, host):
    comfy, run, _ = reference
    prompt = chain_prompt(correct_frames="1")
    prompt["10"]["inputs"].update(image=write_mask(host, "past-k.png", 32, (0, 0, 8, 8)), paint_frame=2)
    with pytest.raises(InvalidInputError, match="frame 2 has a fix mask but is not corrected"):
        comfy.run(prompt)
    arm, dm, memory = (run.values[n][0] for n in ("1", "2", "3"))
    with pytest.raises(InvalidInputError, match="frame 2 has a fix mask but is not corrected"):
        run_story(STORY.splitlines(), arm.engine, dm.engine, memory.engine,
                  StorySettings(steps=STEPS, correct_frames=1), fix_masks={1: torch.ones(32, 32)})


def test_a_fix_with_its_own_seed_equals_the_engine_with_fix_seed(reference, host):
    comfy, run, _ = reference
    mask_file = write_mask(host, "seeded.png", 64, (8, 8, 24, 24))
    prompt = chain_prompt()
    prompt["10"]["inputs"].update(image=mask_file, paint_frame=2, seed=5)
    records = comfy.run(prompt).values["12"][0].records
    arm, dm, memory = (run.values[n][0] for n in ("1", "2", "3"))
    from nodes.masks import load_mask
    settings = StorySettings(sampling=SamplingSettings(guidance_scale=5.0, temperature=1.0), steps=STEPS,
                             seed=SEED, dm_seed=DM_SEED, fix_seed=5, fix_prompt="a clear night sky", mask_dilate=2,
                             mask_feather=2)
    expected = run_story(STORY.splitlines(), arm.engine, dm.engine, memory.engine, settings,
                         fix_masks={1: load_mask(mask_file)}).records
    assert [r.fixed for r in records] == [r.fixed for r in expected] == [False, True, False]
    assert all(torch.equal(a.tokens_after, b.tokens_after) for a, b in zip(records, expected))


def test_a_workflow_saved_when_correct_frames_0_meant_every_frame_is_refused_saying_what_changed(reference):
    for name in ("ACDC_SDEditCorrect", "ACDC_Story"):
        answer = nodes.NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(correct_frames=0)
        assert isinstance(answer, str) and "0 meant 'every frame'" in answer and "'all'" in answer
        assert nodes.NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(correct_frames=2) is True   # same meaning as before
        assert nodes.NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(correct_frames="none") is True
    comfy, _, _ = reference
    with pytest.raises(InvalidInputError, match="0 meant 'every frame'"):
        comfy.run(chain_prompt(correct_frames=0))     # even past validation it never runs the opposite way


# -- ComfyUI's own nodes inside the loop body ------------------------------------------------------------------

class VAEEncode:
    """Stand-ins of ComfyUI's VAE Encode / KSampler / VAE Decode with their sockets: a 'latent' is the image
    at half size, and the 'sampler' pulls it towards grey by denoise. What matters here is the wiring."""
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",)}}

    def encode(self, pixels):
        return ({"samples": torch.nn.functional.avg_pool2d(pixels.permute(0, 3, 1, 2), 2)},)


class KSampler:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    prompts: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent_image": ("LATENT",), "positive": ("STRING", {"forceInput": True}),
                             "seed": ("INT", {}), "denoise": ("FLOAT", {})}}

    def sample(self, latent_image, positive, seed, denoise):
        KSampler.prompts.append(positive)
        x = latent_image["samples"]
        return ({"samples": x * (1 - denoise) + 0.5 * denoise},)


class VAEDecode:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def decode(self, samples):
        return (torch.nn.functional.interpolate(samples["samples"], scale_factor=2).permute(0, 2, 3, 1),)


def native_chain_prompt() -> dict:
    """VQ Detokenize -> VAE Encode -> KSampler (denoise 0.5, the memory's prompt) -> VAE Decode -> Re-Tokenize."""
    prompt = chain_prompt()
    for node_id in ("9", "10", "13"):
        del prompt[node_id]
    prompt.update({
        "20": {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0]}},
        "21": {"class_type": "KSampler", "inputs": {"latent_image": ["20", 0], "positive": ["8", 0], "seed": 0,
                                                    "denoise": 0.5}},
        "22": {"class_type": "VAEDecode", "inputs": {"samples": ["21", 0]}},
    })
    prompt["11"]["inputs"] = {"arm": ["1", 0], "frame": ["7", 1], "image": ["22", 0], "prompt": ["8", 0]}
    return prompt


def test_comfyuis_own_sampler_in_the_loop_body_corrects_every_frame_and_the_story_continues_from_it(reference):
    KSampler.prompts.clear()
    classes = {**CLASSES, "VAEEncode": VAEEncode, "KSampler": KSampler, "VAEDecode": VAEDecode}
    run = MiniComfy(classes).run(native_chain_prompt())
    story = run.values["12"][0]
    assert len(story.records) == 3 and frames_ran(run, "KSampler") == [1, 2, 3]
    arm = run.values["1"][0].engine
    for i, record in enumerate(story.records):
        assert record.corrected and not record.fixed and record.dm_seed is None     # no ACDC corrector saw it
        assert record.memory_prompt == KSampler.prompts[i]                          # recorded from Re-Tokenize
        sampled = torch.nn.functional.avg_pool2d(record.arm_image[None], 2) * 0.5 + 0.25
        torch.testing.assert_close(record.corrected_image[None], torch.nn.functional.interpolate(sampled, scale_factor=2))
        assert torch.equal(record.tokens_after, arm.encode(resize_to(record.corrected_image[None], arm.image_size)))
        assert torch.equal(story.context.chunks[i].tokens, record.tokens_after)  # the next frame read these
    # Per-frame memory read the earlier frames' recorded prompts: frame 2 and 3 are not frame 1's prompt again.
    assert len(set(KSampler.prompts)) == 3
