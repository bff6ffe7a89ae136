"""Several stories decoded in one batch (``CachedDecoder.sample_chunks``, ``story.run_stories``): each story gets
the codes it gets alone with the same seed, its padding never reaches its attention, the batch's cache is reused from
frame to frame (recomputing only from a swapped frame's first changed code), and a cancelled batch keeps no cache
that claims more than it holds."""
from __future__ import annotations

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.arm.cache import PaddedBatch
from acdc_core.errors import InvalidInputError
from acdc_core.state import StorySettings
from acdc_core.story import generate_many, new_story, run_stories, run_story
from acdc_core.tiny.showo import build_tiny_showo
from tests.fakes import FakeCorrector, FakeMemory, LMCalls, gen, other_tokens

pytestmark = pytest.mark.floors

from tests.test_arm_static import BUILDERS as FAMILIES  # noqa: E402  (builder, CFG, LM module, its input keyword)

# Prompts of different lengths, so rows are padded differently at every frame.
STORIES = (
    ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.", "She hops to the right."),
    ("A cat.", "It sleeps on a long sunny windowsill all afternoon.", "It wakes."),
    ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.", "She hops to the right."),
)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    build, guidance, lm, key = FAMILIES[request.param]
    arm = load_arm(build(tmp_path_factory.mktemp(f"tiny_{request.param}"), seed=0))
    return arm, SamplingSettings(guidance_scale=guidance, temperature=1.0), lm, key


def same(a, b) -> bool:
    """Two (nested) lists of code tensors hold the same codes."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def alone(arm, settings, stories, seeds, swap_first=True):
    """Each story sampled by itself: frame i with seed seeds[k] * 10 + i; frame 1's codes swapped for others."""
    out = []
    for prompts, seed in zip(stories, seeds):
        ctx, codes = ARMContext(), []
        for i, prompt in enumerate(prompts):
            tokens = arm.sample_chunk(ctx, prompt, settings=settings, generator=gen(seed * 10 + i))
            codes.append(tokens)
            ctx = ctx.append(prompt, other_tokens(arm, tokens) if swap_first and i == 0 else tokens)
        out.append(codes)
    return out


def batched(arm, settings, stories, seeds, batch, swap_first=True):
    contexts, out = [ARMContext() for _ in stories], [[] for _ in stories]
    for i in range(len(stories[0])):
        codes = arm.sample_chunks(contexts, [p[i] for p in stories], settings=settings, batch=batch,
                                  generators=[gen(seed * 10 + i) for seed in seeds])
        for k, tokens in enumerate(codes):
            out[k].append(tokens)
            contexts[k] = contexts[k].append(stories[k][i], other_tokens(arm, tokens) if swap_first and i == 0
                                             else tokens)
    return out


@pytest.mark.parametrize("greedy", [False, True])
def test_each_story_gets_the_codes_it_gets_alone(family, greedy):
    arm, settings, _, _ = family
    if greedy:
        settings = SamplingSettings(guidance_scale=settings.guidance_scale, temperature=0.0)
    seeds = (1, 2, 3)
    want = alone(arm, settings, STORIES, seeds)
    got = batched(arm, settings, STORIES, seeds, PaddedBatch())
    for k in range(len(STORIES)):
        for i in range(len(STORIES[0])):
            assert torch.equal(got[k][i], want[k][i]), (k, i)
    # The same story under other seeds: other codes when sampling, the same when greedy.
    assert torch.equal(got[0][1], got[2][1]) is greedy


def test_cfg_off_runs_one_row_per_story(family):
    arm, settings, lm, key = family
    plain = SamplingSettings(guidance_scale=1.0, temperature=1.0)
    with LMCalls(lm(arm), key) as calls:
        arm.sample_chunks([ARMContext()] * 2, [STORIES[0][0], STORIES[1][0]], settings=plain,
                          generators=[gen(1), gen(2)])
    assert {rows for rows, _ in calls.calls} == {2}
    assert same(batched(arm, plain, STORIES[:2], (4, 5), PaddedBatch()), alone(arm, plain, STORIES[:2], (4, 5)))


def test_the_next_frame_reruns_only_from_the_swapped_frame(family):
    """Frame 2 of the batch runs the swapped frame 1 and frame 2's prompt, not frame 1's prompt again: the first
    forward of frame 2 covers fewer positions than a fresh batch's would."""
    arm, settings, lm, key = family
    batch, seeds = PaddedBatch(), (1, 2)
    contexts = [ARMContext(), ARMContext()]
    first = arm.sample_chunks(contexts, [p[0] for p in STORIES[:2]], settings=settings, batch=batch,
                              generators=[gen(s) for s in seeds])
    contexts = [c.append(p[0], other_tokens(arm, t)) for c, p, t in zip(contexts, STORIES[:2], first)]
    prompts = [p[1] for p in STORIES[:2]]
    with LMCalls(lm(arm), key) as reused:
        again = arm.sample_chunks(contexts, prompts, settings=settings, batch=batch,
                                  generators=[gen(s) for s in seeds])
    with LMCalls(lm(arm), key) as fresh:
        anew = arm.sample_chunks(contexts, prompts, settings=settings, batch=PaddedBatch(),
                                 generators=[gen(s) for s in seeds])
    assert same(again, anew)
    rows = 2 * len(seeds)                       # cond + uncond per story (Emu3's uncond: a sequence of its own)
    assert reused.calls[0][0] == fresh.calls[0][0] == rows
    # Frame 1's codes were swapped, so they run again with all after them, but not the prompts before them.
    assert arm.tokens_per_image <= reused.calls[0][1] < fresh.calls[0][1]
    assert len(reused.calls) == len(fresh.calls)


def test_a_cancelled_batch_keeps_a_truthful_cache(family):
    arm, settings, _, _ = family
    batch = PaddedBatch()

    def cancel_at_3(stage, step, total, preview=None):
        if step == 3:
            raise KeyboardInterrupt

    prompts = [p[0] for p in STORIES[:2]]
    with pytest.raises(KeyboardInterrupt):
        arm.sample_chunks([ARMContext()] * 2, prompts, settings=settings, batch=batch,
                          generators=[gen(1), gen(2)], progress=cancel_at_3)
    covered = batch.columns
    assert covered is not None and batch.cache.get_seq_length() == covered.shape[1]
    again = arm.sample_chunks([ARMContext()] * 2, prompts, settings=settings, batch=batch,
                              generators=[gen(1), gen(2)])
    assert same(again, arm.sample_chunks([ARMContext()] * 2, prompts, settings=settings, batch=PaddedBatch(),
                                         generators=[gen(1), gen(2)]))


def test_run_stories_equals_run_story_one_at_a_time(family):
    """The whole ACDC loop: stories of different lengths, seeds apart, every frame corrected and swapped."""
    arm, sampling, _, _ = family
    stories = [list(STORIES[0]), list(STORIES[1][:2]), list(STORIES[2])]
    settings = [StorySettings(sampling=sampling, seed=seed, steps=4) for seed in (11, 12, 13)]
    corrector = FakeCorrector(size=arm.image_size[0])
    done = []
    states = run_stories(stories, arm, corrector, FakeMemory(), settings,
                         on_frame=lambda k, state: done.append((k, len(state.records))))
    assert sorted(done) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    for prompts, s, state in zip(stories, settings, states):
        one = run_story(prompts, arm, corrector, FakeMemory(), s)
        assert len(state.records) == len(one.records) == len(prompts)
        for a, b in zip(state.records, one.records):
            assert torch.equal(a.tokens_before, b.tokens_before) and torch.equal(a.tokens_after, b.tokens_after)
            assert a.memory_prompt == b.memory_prompt and a.seconds["arm"] > 0


def test_showo_runs_its_stories_one_after_another(tmp_path):
    """Show-o fills a frame by MaskGIT steps over one story's block: run_stories falls back to one at a time."""
    arm = load_arm(build_tiny_showo(tmp_path, seed=0))
    assert arm.batch_capable is False
    sampling = SamplingSettings(guidance_scale=2.0, maskgit_steps=3)
    settings = [StorySettings(sampling=sampling, seed=s, correct_frames=0) for s in (1, 2)]
    states = run_stories([STORIES[0][:2], STORIES[1][:2]], arm, None, None, settings)
    for prompts, s, state in zip([STORIES[0][:2], STORIES[1][:2]], settings, states):
        one = run_story(list(prompts), arm, None, None, s)
        assert all(torch.equal(a.tokens_before, b.tokens_before) for a, b in zip(state.records, one.records))
    with pytest.raises(InvalidInputError, match="one batch"):
        arm.sample_chunks([ARMContext()], ["A cat."], settings=sampling, generators=[gen(0)])


def test_bad_batches_are_refused_before_any_work(family):
    arm, sampling, _, _ = family
    with pytest.raises(InvalidInputError, match="one context, prompt and generator"):
        arm.sample_chunks([ARMContext()] * 2, ["A cat."], settings=sampling, generators=[gen(0)])
    states = [new_story(["A cat."]), new_story(["A dog."])]
    with pytest.raises(InvalidInputError, match="share the ARM's sampling"):
        generate_many(states, arm, [StorySettings(sampling=sampling),
                                    StorySettings(sampling=SamplingSettings(guidance_scale=1.0))])
    with pytest.raises(InvalidInputError, match="2 stories but 3 settings"):
        run_stories([["A cat."], ["A dog."]], arm, None, None, [StorySettings(correct_frames=0)] * 3)
    with pytest.raises(InvalidInputError, match="story 2"):
        run_stories([["A cat."], []], arm, None, None, StorySettings(correct_frames=0))
