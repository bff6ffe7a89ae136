"""The video loop (``acdc_core/video.py``, the paper's Eq. 4-6) on a tiny random LWM-layout ARM and a stand-in video
DM: exact windows and calls, the corrected window swapped into the ARM's context, frame 1 and later frames sampled
apart, seeds, Cancel, immutability and the bad inputs refused before any model runs."""
from __future__ import annotations

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.errors import InvalidInputError
from acdc_core.images import resize_to
from acdc_core.memory import MemoryModule, MemorySettings
from acdc_core.state import frame_seed
from acdc_core.tiny.unified import build_tiny_unified
from acdc_core.video import VideoSettings, close_window, generate_frame, new_video, run_video
from tests.fakes import FakeCorrector, FakeMemory, FakeVideoCorrector, gen

pytestmark = pytest.mark.floors

PROMPT = "a blue cat jumps on a beach"
FIRST = SamplingSettings(guidance_scale=3.0, temperature=1.0, top_k=16)
LATER = SamplingSettings(guidance_scale=1.0, temperature=1.0, top_k=8)
SETTINGS = VideoSettings(frames=5, window=2, correct="first", first_sampling=FIRST, later_sampling=LATER,
                         strength=0.5, steps=10, seed=3)
OFF = MemoryModule(None, MemorySettings(mode="off"))


@pytest.fixture(scope="module")
def arm(tmp_path_factory):
    return load_arm(build_tiny_unified(tmp_path_factory.mktemp("video_loop"), layout="lwm"))


def by_hand(arm, corrector, settings: VideoSettings, prompt: str = PROMPT) -> list[torch.Tensor]:
    """The loop written out with the protocol's own calls: the tokens every frame ends with in the context."""
    ctx = ARMContext()
    for k in range(settings.frames):
        sampling = settings.first_sampling if k == 0 else settings.later_sampling
        tokens = arm.sample_chunk(ctx, prompt, settings=sampling, generator=gen(frame_seed(settings.seed, k)),
                                  continues=k > 0)
        ctx = ctx.append(prompt, tokens, continues=k > 0)
        for w, (start, stop) in enumerate(settings.windows):
            if stop == k + 1 and settings.corrects(w):
                frames = arm.decode(torch.cat([c.tokens for c in ctx.chunks[start:stop]]))
                fixed = corrector.correct_video(resize_to(frames, corrector.native_size), prompt,
                                                strength=settings.strength, seed=settings.dm_seed_of(w))
                ctx = ctx.swap_frames(start, arm.encode(resize_to(fixed, arm.image_size)))
    return [c.tokens for c in ctx.chunks]


@pytest.mark.parametrize("correct", ["first", "all", "none"])
def test_the_loop_is_the_protocol_written_out(arm, correct):
    settings = VideoSettings(**{**SETTINGS.__dict__, "correct": correct})
    corrector = FakeVideoCorrector()
    state = run_video(PROMPT, arm, corrector, OFF, settings)
    expected = by_hand(arm, FakeVideoCorrector(), settings)
    assert [c.continues for c in state.context.chunks] == [False, True, True, True, True]
    assert all(torch.equal(a.tokens, b) for a, b in zip(state.context.chunks, expected))
    assert [(r.start, r.stop) for r in state.windows] == [(0, 2), (2, 4), (4, 5)]
    corrected = {"first": [0], "all": [0, 1, 2], "none": []}[correct]
    assert [r.index for r in state.windows if r.corrected] == corrected
    assert [c["shape"] for c in corrector.calls] == [(stop - start, 3, 16, 16) for start, stop in settings.windows
                                                     if settings.corrects(settings.windows.index((start, stop)))]
    assert [c["seed"] for c in corrector.calls] == [frame_seed(3, w) for w in corrected]
    for r in state.windows:
        if not r.corrected:
            assert torch.equal(r.tokens_before, r.tokens_after) and r.memory_prompt is None and r.dm_seed is None
            assert set(r.seconds) == {"decode"}
        else:
            assert set(r.seconds) == {"decode", "memory", "correct", "encode"} and r.memory_prompt == PROMPT
            assert torch.equal(torch.cat([c.tokens for c in state.context.chunks[r.start:r.stop]]), r.tokens_after)
    assert len(state.output_frames()) == 5 and len(state.arm_frames()) == 5
    assert tuple(state.output_frames()[0].shape) == ((3, 16, 16) if correct != "none" else (3, 32, 32))


def test_frame_one_and_later_frames_are_sampled_apart(arm, monkeypatch):
    seen = []
    original = type(arm).sample_chunk

    def spy(self, context, prompt, **kwargs):
        seen.append((kwargs["settings"], kwargs["generator"].initial_seed(), kwargs["continues"]))
        return original(self, context, prompt, **kwargs)

    monkeypatch.setattr(type(arm), "sample_chunk", spy)
    run_video(PROMPT, arm, FakeVideoCorrector(), OFF, SETTINGS)
    assert [s for s, _, _ in seen] == [FIRST] + [LATER] * 4
    assert [g for _, g, _ in seen] == [frame_seed(3, k) for k in range(5)]
    assert [c for _, _, c in seen] == [False, True, True, True, True]


def test_the_arms_own_video_sampling_is_the_default(arm):
    settings = VideoSettings(frames=3, window=2)
    assert settings.sampling(arm, 0) == arm.default_video_sampling[0]
    assert settings.sampling(arm, 2) == arm.default_video_sampling[1]


def test_same_seed_same_video_and_the_state_given_is_never_changed(arm):
    a = run_video(PROMPT, arm, FakeVideoCorrector(), OFF, SETTINGS)
    b = run_video(PROMPT, arm, FakeVideoCorrector(), OFF, SETTINGS)
    c = run_video(PROMPT, arm, FakeVideoCorrector(), OFF, VideoSettings(**{**SETTINGS.__dict__, "seed": 4}))
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.context.chunks, b.context.chunks))
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.context.chunks, c.context.chunks))
    # Branch before the first correction: the state before it still holds what the ARM wrote.
    state = new_video(PROMPT, SETTINGS)
    for _ in range(2):
        state = generate_frame(state, arm)
    kept = [ch.tokens.clone() for ch in state.context.chunks]
    closed = close_window(state, arm, FakeVideoCorrector(), OFF)
    assert all(torch.equal(ch.tokens, k) for ch, k in zip(state.context.chunks, kept)) and not state.windows
    assert not all(torch.equal(ch.tokens, k) for ch, k in zip(closed.context.chunks, kept))
    with pytest.raises(InvalidInputError, match="close it"):
        generate_frame(state, arm)


def test_one_dm_prompt_per_video_and_one_per_window(arm):
    memory = FakeMemory()
    state = run_video(PROMPT, arm, FakeVideoCorrector(), memory, VideoSettings(**{**SETTINGS.__dict__,
                                                                                 "correct": "all"}))
    assert memory.calls == 1 and {r.memory_prompt for r in state.windows} == {PROMPT}
    prompts = ["a blue cat on a beach", "she jumps", "she lies down"]
    corrector, memory = FakeVideoCorrector(), FakeMemory()
    state = run_video(prompts, arm, corrector, memory, VideoSettings(**{**SETTINGS.__dict__, "correct": "all"}))
    assert [r.memory_prompt for r in state.windows] == [prompts[0], f"{prompts[0]} she jumps",
                                                        f"{prompts[0]} she lies down"]
    assert [r.prompt for r in state.windows] == prompts
    # A new window prompt starts a chunk of its own (its text); the same prompt continues the video.
    assert [c.continues for c in state.context.chunks] == [False, True, False, True, False]


def test_cancel_stops_between_frames_and_keeps_what_was_written(arm):
    written = []

    def progress(stage, step, total, preview=None):
        if stage == "frame" and step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_video(PROMPT, arm, FakeVideoCorrector(), OFF, SETTINGS, progress=progress,
                  on_window=lambda s: written.append(len(s.windows)), on_frame=lambda s: written.append(s.next_index))
    assert written == [1, 2, 1, 3]

    def cancel_in_dm(stage, step, total, preview=None):
        if stage == "correct" and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_video(PROMPT, arm, FakeVideoCorrector(), OFF, SETTINGS, progress=cancel_in_dm)


def test_bad_input_is_refused_before_any_model_runs(arm, tiny_models):
    corrector = FakeVideoCorrector(max_frames=2)
    cases = [
        (VideoSettings(frames=4, window=4), "nothing to continue"),
        (VideoSettings(frames=5, window=3), "longer than this video DM takes \\(2\\)"),
        (VideoSettings(frames=5, window=2, correct="some"), "correct must be one of"),
        (VideoSettings(frames=5, window=2, strength=0.01, steps=10), "strength"),
        (VideoSettings(frames=5, window=2, scheduler="lms"), "scheduler 'lms'"),
    ]
    for settings, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            run_video(PROMPT, arm, corrector, OFF, settings)
    assert corrector.calls == []
    with pytest.raises(InvalidInputError, match="one per window \\(3 windows"):
        run_video(["a", "b"], arm, corrector, OFF, SETTINGS)
    with pytest.raises(InvalidInputError, match="still images, not video"):
        run_video(PROMPT, arm, FakeCorrector(), OFF, SETTINGS)
    with pytest.raises(InvalidInputError, match="no video diffusion model"):
        run_video(PROMPT, arm, None, OFF, SETTINGS)
    with pytest.raises(InvalidInputError, match="not video"):
        run_video(PROMPT, load_arm(tiny_models["arm"]), corrector, OFF, SETTINGS)
    odd = FakeVideoCorrector()
    odd.image_multiple = 8
    with pytest.raises(InvalidInputError, match="multiples of 8"):
        run_video(PROMPT, arm, odd, OFF, VideoSettings(**{**SETTINGS.__dict__, "correction_size": (20, 16)}))
    run_video(PROMPT, arm, None, None, VideoSettings(**{**SETTINGS.__dict__, "correct": "none"}))   # ARM alone
