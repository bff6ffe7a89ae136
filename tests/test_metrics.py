"""The benchmark's metrics on tiny random backbones built here (nothing downloaded): what can fail does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from acdc_core.bench.items import BenchItem
from acdc_core.errors import InvalidInputError
from acdc_core.metrics import load_metric
from acdc_core.metrics.clip import ClipMetric
from acdc_core.toy.evaluate import ToyJudgeMetric

pytestmark = pytest.mark.floors


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from acdc_core.tiny.sd import write_tiny_clip_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(folder / "tok", model_max_length=16))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_identical_frames_are_perfectly_consistent(tiny_clip):
    metric = load_metric("clip", clip=str(tiny_clip))
    frame = _frames(1)[0]
    item = BenchItem("a", ("a cat", "it jumps", "it runs"), 0)
    scores = metric.score([frame, frame.copy(), frame.copy()], item)
    assert np.isnan(scores["frame_consistency"][0])
    assert scores["frame_consistency"][1:] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert scores["consistency_first"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_order_changes_consecutive_consistency(tiny_clip):
    metric = ClipMetric.from_folder(tiny_clip)
    frames = _frames(4, seed=1)
    frames[1] = frames[0].copy()          # 1 -> 2 identical, 3 and 4 different
    item = BenchItem("a", ("x",) * 4, 0)
    ordered = metric.score(frames, item)["frame_consistency"]
    swapped = metric.score([frames[0], frames[2], frames[1], frames[3]], item)["frame_consistency"]
    assert ordered[1] == pytest.approx(1.0, abs=1e-5) and swapped[1] < 0.9999
    assert not np.allclose(ordered[1:], swapped[1:])


def test_clip_sim_is_clipscore_of_the_model(tiny_clip):
    """100 x the cosine of the model's own projected embeddings, floored at 0 (computed here by hand)."""
    from transformers import CLIPModel, CLIPProcessor

    metric = ClipMetric.from_folder(tiny_clip)
    frames = _frames(3, seed=2)
    prompts = ("a red cat on a beach", "it jumps", "a dog")
    got = metric.score(frames, BenchItem("a", prompts, 0))["clip_sim"]
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        out = model(**processor(text=list(prompts), images=frames, return_tensors="pt", padding=True))
    image = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    expected = (100 * (image * text).sum(-1)).clamp(min=0)
    assert got == pytest.approx(expected.tolist(), abs=1e-3)
    assert all(v >= 0 for v in got)


def test_a_missing_clip_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="needs a CLIP model"):
        load_metric("clip")
    with pytest.raises(InvalidInputError, match="lacks config.json, model.safetensors"):
        load_metric("clip", clip=str(tmp_path))
    with pytest.raises(InvalidInputError, match="unknown metric"):
        load_metric("fid?")


def test_the_toy_metric_reads_true_renders_as_valid_and_prompted():
    from acdc_core.toy.evaluate import toy_story
    from acdc_core.toy.evaluate import toy_items
    from acdc_core.toy.world import render_story

    item = toy_items("heldout", 1)[0]
    frames = list(render_story(toy_story(item)))
    scores = ToyJudgeMetric().score(frames, item)
    assert scores["physical_valid"] == [1.0] * 6 and scores["prompt_attributes"] == [1.0] * 6
    broken = [np.zeros_like(f) for f in frames]
    assert ToyJudgeMetric().score(broken, item)["prompt_attributes"] != [1.0] * 6
    with pytest.raises(InvalidInputError, match="not a toy-world story"):
        ToyJudgeMetric().score(frames, BenchItem("x", item.prompts, 0))
