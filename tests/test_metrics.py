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


# -- FID: the Frechet distance, its feature backbones, the reference frames ---------------------------------------

from acdc_core.metrics.features import ClipImageFeatures, ClsFeatures, load_backbone  # noqa: E402
from acdc_core.stats import fid_table, frechet_distance  # noqa: E402


def test_frechet_distance_is_torchmetrics_fid_on_the_same_features():
    """torchmetrics' FrechetInceptionDistance with a custom feature module gives our number on its features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Flat(torch.nn.Module):
        num_features = 12

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 8 * 8, 12)

        def forward(self, x):                    # uint8 [N, 3, 8, 8]
            return self.proj(x.float().flatten(1) / 255)

    torch.manual_seed(0)
    extractor = Flat()
    real = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    fake = (real.float() * 0.7 + 30).to(torch.uint8)[:30]
    metric = FrechetInceptionDistance(feature=extractor)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.no_grad():
        ours = frechet_distance(extractor(fake).double().numpy(), extractor(real).double().numpy())
    assert ours == pytest.approx(float(metric.compute()), rel=1e-4)
    assert ours > 0.01


def test_frechet_distance_analytic_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 3])
    assert frechet_distance(a + shift, a) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)  # same covariance
    # scaled copy: covariances S and s^2 S commute, so d^2 = |mu|^2 (1 - s)^2 + tr(S) (1 - s)^2
    s = 3.0
    centred = a - a.mean(0)
    expected = (1 - s) ** 2 * (np.cov(centred.T).trace())
    assert frechet_distance(s * centred, centred) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(InvalidInputError, match="one width"):
        frechet_distance(a, a[:, :3])
    with pytest.raises(InvalidInputError, match="at least 2"):
        frechet_distance(a[:1], a)


def test_fid_table_is_zero_for_the_reference_itself_and_orders_variants():
    rng = np.random.default_rng(1)
    reference = [rng.normal(size=(3, 5)) for _ in range(20)]
    near = [r + 0.1 for r in reference]
    far = [r + 1.0 for r in reference]
    rows = {r["variant"]: r for r in fid_table({"same": reference, "near": near, "far": far}, reference,
                                               resamples=20, backbone="test")}
    assert rows["same"]["all frames"] == pytest.approx(0.0, abs=1e-6)
    assert rows["same"]["f2"] == pytest.approx(0.0, abs=1e-6)
    assert rows["near"]["all frames"] == pytest.approx(5 * 0.1 ** 2, rel=1e-3)
    assert rows["far"]["all frames"] == pytest.approx(5.0, rel=1e-3)
    low, high = rows["far"]["ci95_low"], rows["far"]["ci95_high"]
    assert low <= 5.0 + 1e-6 and high >= 5.0 - 1e-6 and set(rows["far"]) >= {"f1", "f2", "f3"}
    with pytest.raises(InvalidInputError, match="19 items' features but 20"):
        fid_table({"short": reference[:19]}, reference, resamples=0)


def test_backbones_give_the_models_own_features_and_follow_the_frames(tiny_clip, tiny_vit):
    from transformers import CLIPModel, CLIPProcessor, ViTModel

    frames = _frames(5, seed=3)
    dino = load_backbone("dino", tiny_vit)
    assert isinstance(dino, ClsFeatures)
    got = dino.features(frames)
    assert got.shape == (5, 32) and got.dtype == np.float64
    order = [4, 2, 0, 1, 3]
    assert np.allclose(dino.features([frames[i] for i in order]), got[order], atol=1e-6)
    assert np.allclose(dino.features([frames[0], frames[0]])[1], got[0], atol=1e-6)
    model = ViTModel.from_pretrained(tiny_vit).eval()
    pixels = dino.processor(images=frames, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert np.allclose(got, model(pixel_values=pixels).last_hidden_state[:, 0].double().numpy(), atol=1e-5)

    clip = load_backbone("clip", tiny_clip)
    assert isinstance(clip, ClipImageFeatures)
    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    with torch.no_grad():
        expected = reference(**CLIPProcessor.from_pretrained(tiny_clip)(text=["x"] * 5, images=frames,
                                                                          return_tensors="pt")).image_embeds
    ours = clip.features(frames)             # unnormalised; the model's forward gives it unit length
    assert np.allclose(ours / np.linalg.norm(ours, axis=1, keepdims=True), expected.double().numpy(), atol=1e-5)
    with pytest.raises(InvalidInputError, match="DINO folder .* lacks config.json"):
        load_backbone("dino", tiny_vit.parent / "nothing")
    with pytest.raises(InvalidInputError, match="unknown feature backbone"):
        load_backbone("inception", tiny_vit)


# -- VBench-style video metrics -------------------------------------------------------------------------------------

from acdc_core.metrics.video import Aesthetic, RaftFlow, consistency, dynamic_degree, moving_steps  # noqa: E402


def test_consistency_is_vbench_formula():
    f = np.eye(4)[[0, 0, 0]]                                 # identical frames
    per_frame, video = consistency(f * 3.0)
    assert np.isnan(per_frame[0]) and per_frame[1:] == pytest.approx([1.0, 1.0]) and video == pytest.approx(1.0)
    # frame 2 orthogonal to frame 1, frame 3 back to frame 1: (0 + 0) / 2, then (0 + 1) / 2
    per_frame, video = consistency(np.eye(4)[[0, 1, 0]])
    assert per_frame[1:] == pytest.approx([0.0, 0.5]) and video == pytest.approx(0.25)
    # negative cosines count as 0, not below
    per_frame, _ = consistency(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert per_frame[1] == 0.0
    # order matters
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 8))
    assert consistency(g)[1] != pytest.approx(consistency(g[[0, 3, 1, 4, 2]])[1])
    with pytest.raises(InvalidInputError, match="2 or more frames"):
        consistency(g[:1])


def test_subject_consistency_of_a_still_video_is_one(tiny_vit):
    frames = _frames(1, seed=4) * 4
    features = ClsFeatures.from_folder(tiny_vit).features(frames)
    assert consistency(features)[1] == pytest.approx(1.0, abs=1e-6)
    assert consistency(ClsFeatures.from_folder(tiny_vit).features(_frames(4, seed=5)))[1] < 0.9999


def test_aesthetic_is_the_linear_head_on_unit_clip_embeddings(tiny_clip, tmp_path):
    from safetensors.torch import save_file
    from transformers import CLIPModel, CLIPProcessor

    torch.manual_seed(1)
    head = {"weight": torch.randn(1, 16), "bias": torch.randn(1)}
    save_file(head, str(tmp_path / "head.safetensors"))
    metric = Aesthetic.load(tiny_clip, tmp_path / "head.safetensors")
    frames = _frames(3, seed=6)
    per_frame, video = metric.score(frames)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    with torch.no_grad():
        embeds = model(**CLIPProcessor.from_pretrained(tiny_clip)(text=["x"] * 3, images=frames,
                                                                   return_tensors="pt")).image_embeds
    expected = ((embeds @ head["weight"].T).squeeze(-1) + head["bias"]) / 10
    assert per_frame == pytest.approx(expected.tolist(), abs=1e-5) and video == pytest.approx(float(expected.mean()), abs=1e-5)
    save_file({"weight": torch.randn(1, 768), "bias": torch.randn(1)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(InvalidInputError, match="768-wide embeddings but the CLIP"):
        Aesthetic.load(tiny_clip, tmp_path / "wide.safetensors")
    torch.save(head, tmp_path / "head.pth")
    with pytest.raises(InvalidInputError, match="pickle"):
        Aesthetic.load(tiny_clip, tmp_path / "head.pth")
    with pytest.raises(InvalidInputError, match="no aesthetic head"):
        Aesthetic.load(tiny_clip, tmp_path / "none.safetensors")


def _phase_correlation_flow(a, b):
    """A rigid-shift flow estimator (phase correlation): the one shift that maps a onto b, everywhere."""
    fa, fb = np.fft.fft2(a.mean(-1)), np.fft.fft2(b.mean(-1))
    r = np.fft.ifft2(fb * np.conj(fa) / np.maximum(np.abs(fb * np.conj(fa)), 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(r), r.shape)
    h, w = r.shape
    dy, dx = (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)
    return np.stack([np.full((h, w), float(dx)), np.full((h, w), float(dy))])


def test_dynamic_degree_counts_moving_steps_against_vbench_threshold():
    base = _frames(1, seed=7)[0].repeat(2, 0).repeat(2, 1)    # 64 px: the threshold is 6 x 64 / 256 = 1.5 px
    moving = [np.roll(base, 3 * t, axis=1) for t in range(16)]
    per_frame, video = dynamic_degree(moving, _phase_correlation_flow)
    assert np.isnan(per_frame[0]) and per_frame[1:] == [1.0] * 15 and video == 1.0
    still = [base.copy() for _ in range(16)]
    assert dynamic_degree(still, _phase_correlation_flow)[1] == 0.0
    slow = [np.roll(base, t, axis=1) for t in range(16)]        # 1 px per step: under the threshold
    assert moving_steps(slow, _phase_correlation_flow) == [False] * 15
    # 16 frames need round(4 x 16 / 16) = 4 moving steps: 3 are not enough, 4 are
    three = still[:13] + [np.roll(base, 3 * t, axis=1) for t in range(1, 4)]
    four = still[:12] + [np.roll(base, 3 * t, axis=1) for t in range(1, 5)]
    assert dynamic_degree(three, _phase_correlation_flow)[1] == 0.0
    assert dynamic_degree(four, _phase_correlation_flow)[1] == 1.0
    with pytest.raises(InvalidInputError, match=r"expected \[2, 64, 64\]"):
        moving_steps(still[:2], lambda a, b: np.zeros((2, 8, 8)))


def _torchvision_imports() -> bool:
    try:
        import torchvision.models.optical_flow  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(_torchvision_imports(), reason="torchvision imports here")
def test_raft_without_torchvision_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="torchvision's RAFT"):
        RaftFlow.load(tmp_path / "raft.safetensors")


@pytest.mark.skipif(not _torchvision_imports(), reason="torchvision does not import beside this torch")
def test_raft_flow_gives_a_field_per_pixel(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    save_file(raft_large(weights=None).state_dict(), str(tmp_path / "raft.safetensors"))
    flow = RaftFlow.load(tmp_path / "raft.safetensors")
    frames = _frames(2, seed=8)
    assert flow(frames[0], frames[1]).shape == (2, 32, 32)


def test_vbench_style_metric_scores_the_dimensions_it_has_models_for(tiny_clip, tiny_vit):
    metric = load_metric("vbench-style", dino=str(tiny_vit), clip_b32=str(tiny_clip))
    assert metric.columns == ("subject_consistency", "background_consistency")
    still = _frames(1, seed=9) * 3
    scores = metric.score(still, BenchItem("v", ("x",) * 3, 0))
    for column in metric.columns:
        assert np.isnan(scores[column][0]) and scores[column][1:] == pytest.approx([1.0, 1.0], abs=1e-6)
    with pytest.raises(InvalidInputError, match="needs at least one model"):
        load_metric("vbench-style")
    with pytest.raises(InvalidInputError, match="needs both --clip-l14"):
        load_metric("vbench-style", clip_l14=str(tiny_clip))
