"""Video chunks in the ARM protocol (``arm/base.py``: frames as chunks) for the unified-vocabulary family, in both of
its layouts: the default (``BOI codes EOI`` per frame, the toy video ARM) and LWM's (its prompts, ``<vision>`` in the
text, an end-of-frame id after every frame, the ``<vision>`` unconditional row). Tiny random models built here."""
from __future__ import annotations

import json

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.arm.unified import Manifest
from acdc_core.errors import InvalidInputError
from acdc_core.tiny.unified import LWM_TEXT_FORMAT, LWM_VIDEO_FORMAT, build_tiny_unified
from tests import fakes
from tests.fakes import gen

pytestmark = pytest.mark.floors

PROMPT = "a blue cat jumps on a beach"
GREEDY = SamplingSettings(guidance_scale=1.0, temperature=0.0)
SAMPLED = SamplingSettings(guidance_scale=3.0, temperature=1.0)
LAYOUTS = ("default", "lwm")


@pytest.fixture(scope="module", params=LAYOUTS)
def arm(request, tmp_path_factory):
    return load_arm(build_tiny_unified(tmp_path_factory.mktemp(f"video_{request.param}"), layout=request.param))


@pytest.fixture(scope="module")
def lwm(tmp_path_factory):
    return load_arm(build_tiny_unified(tmp_path_factory.mktemp("video_lwm"), layout="lwm"))


def video(arm, frames: int, settings: SamplingSettings = SAMPLED, seed: int = 0) -> ARMContext:
    """A video of ``frames`` frames as chunks, frame k sampled with seed ``seed + k``."""
    ctx = ARMContext()
    for k in range(frames):
        tokens = arm.sample_chunk(ctx, PROMPT, settings=settings, generator=gen(seed + k), continues=k > 0)
        ctx = ctx.append(PROMPT, tokens, continues=k > 0)
    return ctx


def codes(arm, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, arm.codebook_size, (n, arm.tokens_per_image), generator=gen(seed))


# ------------------------------------------------------------------ the layout
def test_frames_as_chunks_and_a_chunk_of_frames_are_one_sequence(arm):
    frames = codes(arm, 3)
    as_chunks = ARMContext().append(PROMPT, frames[:1])
    for k in (1, 2):
        as_chunks = as_chunks.append(PROMPT, frames[k:k + 1], continues=True)
    one_chunk = ARMContext().append(PROMPT, frames)
    for cfg in (False, True):
        assert torch.equal(arm.sequence_key(as_chunks, "next", cfg=cfg), arm.sequence_key(one_chunk, "next", cfg=cfg))
        assert torch.equal(arm.sequence_key(as_chunks, PROMPT, cfg=cfg, continues=True),
                           arm.sequence_key(one_chunk, PROMPT, cfg=cfg, continues=True))


def test_lwm_layout_is_lwms_own_sequence(lwm):
    """Frame 1 under LWM's image prompt; later frames under its video prompt, every frame's codes followed by the
    end-of-frame vision id (vision_generation.py); the unconditional row is ``<s><vision>`` and the frames."""
    m, off = lwm.manifest, lwm.offset
    ids = lambda text: list(lwm.tokenizer(text, add_special_tokens=False).input_ids)   # noqa: E731
    bos, eof = m.special_tokens["bos"], off + m.frame_end
    assert lwm.sequence_key(ARMContext(), PROMPT, cfg=False)[0].tolist() == [bos] + ids(
        LWM_TEXT_FORMAT.format(prompt=PROMPT))
    frames = codes(lwm, 2)
    ctx = ARMContext().append(PROMPT, frames[:1]).append(PROMPT, frames[1:], continues=True)
    content = [c + off for c in frames[0].tolist()] + [eof] + [c + off for c in frames[1].tolist()] + [eof]
    key = lwm.sequence_key(ctx, PROMPT, cfg=False, continues=True)[0].tolist()
    assert key == [bos] + ids(LWM_VIDEO_FORMAT.format(prompt=PROMPT)) + content
    assert lwm.uncond_key(ctx, PROMPT, continues=True)[0].tolist() == [bos] + ids("<vision>") + content
    # A new prompt after the video closes it with </vision> before its own text.
    after = lwm.sequence_key(ctx, "a red rabbit", cfg=False)[0].tolist()
    assert after == key + list(m.image_end) + ids(LWM_TEXT_FORMAT.format(prompt="a red rabbit"))
    assert lwm.default_video_sampling[0].guidance_scale == 5.0 and lwm.default_video_sampling[1].guidance_scale == 1.0


def test_default_layout_puts_each_frame_between_boi_and_eoi(tmp_path_factory):
    arm = load_arm(build_tiny_unified(tmp_path_factory.mktemp("video_default"), layout="default"))
    frames = codes(arm, 2)
    boi, eoi = arm.manifest.special_tokens["boi"], arm.manifest.special_tokens["eoi"]
    ctx = ARMContext().append(PROMPT, frames[:1]).append(PROMPT, frames[1:], continues=True)
    key = arm.sequence_key(ctx, PROMPT, cfg=False, continues=True)[0].tolist()
    body = [boi] + (frames[0] + arm.offset).tolist() + [eoi, boi] + (frames[1] + arm.offset).tolist() + [eoi, boi]
    assert key == [arm.manifest.special_tokens["bos"]] + arm.text_ids(PROMPT) + body


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_chunk_of_frames_samples_what_frames_one_by_one_sample(arm, settings):
    """After frame 1, one call for 2 more frames (the separator forced, nothing drawn for it) and two continuing calls
    drawing from the same generator give the same codes: one sequence, two spellings."""
    first = video(arm, 1, settings)
    together = arm.sample_chunk(first, PROMPT, settings=settings, generator=gen(5), images_per_chunk=2,
                                continues=True)
    g, ctx, apart = gen(5), first, []
    for _ in range(2):
        tokens = arm.sample_chunk(ctx, PROMPT, settings=settings, generator=g, continues=True)
        ctx = ctx.append(PROMPT, tokens, continues=True)
        apart.append(tokens)
    assert together.shape == (2, arm.tokens_per_image)
    assert torch.equal(together, torch.cat(apart))


def test_continuing_a_video_reuses_the_cache_and_a_window_swap_reruns_from_the_window(arm):
    ctx = video(arm, 4, GREEDY)
    with fakes.LMCalls(arm.lm, "input_ids") as calls:
        arm.sample_chunk(ctx, PROMPT, settings=GREEDY, generator=gen(9), continues=True)
    assert calls.calls[0] == (1, 2 if arm.manifest.frame_end is not None else 3)   # the last code, EOF (EOI BOI)
    # Swap frames 2..3 (a window) with other codes: only the window onward runs again.
    window = (torch.cat([ctx.chunks[k].tokens for k in (1, 2)]) + 1) % arm.codebook_size
    swapped = ctx.swap_frames(1, window)
    key = arm.sequence_key(swapped, PROMPT, cfg=False, continues=True)[0]
    first_code = int((key != arm.sequence_key(ctx, PROMPT, cfg=False, continues=True)[0]).nonzero()[0])
    with fakes.LMCalls(arm.lm, "input_ids") as calls:
        arm.sample_chunk(swapped, PROMPT, settings=GREEDY, generator=gen(9), continues=True)
    assert calls.calls[0] == (1, len(key) - first_code)
    assert [c.continues for c in swapped.chunks] == [False, True, True, True]
    assert torch.equal(swapped.chunks[1].tokens, window[:1]) and torch.equal(swapped.chunks[3].tokens,
                                                                             ctx.chunks[3].tokens)


def test_the_separate_unconditional_row_is_lwms_row(lwm):
    """Under CFG, LWM's unconditional row (``<s><vision>`` + the frames) runs as a sequence of its own: its logits
    are the LM's on exactly that sequence, and the cached path gives what a fresh forward gives."""
    ctx = video(lwm, 2, GREEDY)
    logits = lwm.next_token_logits(ctx, PROMPT, guidance_scale=3.0, continues=True)
    for row, key in ((0, lwm.sequence_key(ctx, PROMPT, cfg=False, continues=True)),
                     (1, lwm.uncond_key(ctx, PROMPT, continues=True))):
        fresh = lwm.lm(input_ids=key).logits[0, -1, lwm.offset:lwm.offset + lwm.codebook_size]
        torch.testing.assert_close(logits[row], fresh, rtol=1e-4, atol=1e-5)


def test_same_seed_same_video_and_frames_differ_by_seed(arm):
    a, b, c = video(arm, 3, seed=1), video(arm, 3, seed=1), video(arm, 3, seed=2)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.chunks, b.chunks))
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.chunks, c.chunks))


def test_a_long_video_keeps_frame_one_and_the_latest_frames(tmp_path_factory):
    arm = load_arm(build_tiny_unified(tmp_path_factory.mktemp("video_short"), layout="lwm",
                                      max_position_embeddings=300))
    ctx = ARMContext().append(PROMPT, codes(arm, 1))
    for k in range(1, 5):
        ctx = ctx.append(PROMPT, codes(arm, 1, seed=k), continues=True)
    seen = arm.fit_context(ctx, PROMPT, continues=True)
    assert seen[0] == 0 and seen[-1] == 4 and len(seen) < 5
    assert arm.sequence_key(ctx.select(seen), PROMPT, cfg=False, continues=True).shape[-1] + 65 <= 300


# ------------------------------------------------------------------ bad requests
def test_bad_video_requests_are_refused(lwm, tiny_models):
    with pytest.raises(InvalidInputError, match="first frame in the context"):
        lwm.sample_chunk(ARMContext(), PROMPT, settings=GREEDY, generator=gen(0), continues=True)
    ctx = ARMContext().append(PROMPT, codes(lwm, 1))
    with pytest.raises(InvalidInputError, match="belongs to the video"):
        lwm.sample_chunk(ctx, "another prompt", settings=GREEDY, generator=gen(0), continues=True)
    with pytest.raises(InvalidInputError, match="needs the video's first frame"):
        ARMContext().append(PROMPT, codes(lwm, 1), continues=True)
    with pytest.raises(InvalidInputError, match="cannot swap 3 frame"):
        ctx.swap_frames(0, codes(lwm, 3))
    janus = load_arm(tiny_models["arm"])
    with pytest.raises(InvalidInputError, match="not video"):
        janus.sample_chunk(ARMContext(), PROMPT, settings=GREEDY, generator=gen(0), images_per_chunk=2)
    with pytest.raises(InvalidInputError, match="not video"):
        janus.fit_context(ARMContext().append(PROMPT, torch.zeros(1, janus.tokens_per_image, dtype=torch.long)),
                          PROMPT, continues=True)


def test_manifest_video_fields_round_trip_and_bad_ones_are_named(tmp_path, lwm):
    lwm.manifest.write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again == lwm.manifest
    data = json.loads((tmp_path / "acdc_arm.json").read_text())
    for bad, message in (({"unconditional": {"mode": "noise"}}, "unconditional must be"),
                         ({"video_text_format": "no slot"}, "video_text_format must contain"),
                         ({"video_sampling": {"first": {"top_k": 3}}}, "video_sampling")):
        (tmp_path / "acdc_arm.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(InvalidInputError, match=message):
            Manifest.read(tmp_path)
    from acdc_core.arm.unified import UnifiedARM

    inside = Manifest(**{**lwm.manifest.__dict__, "frame_end": 3})
    with pytest.raises(InvalidInputError, match="frame_end 3 must be a vision id past the codebook"):
        UnifiedARM(lwm.lm, lwm.tokenizer, lwm.vq, inside)
