"""The ARM protocol's contract, for every family on a tiny random model: the key/value-cache reuse
(``arm/cache.py``), swaps, seeds and CFG, whether a family decodes token by token (``arm/decoding.py``) or fills a
frame in parallel (Show-o's MaskGIT), and for the token-by-token families again with a static cache. What differs between families (sequence layout, what a swap or an
appended chunk costs, loading) is in test_arm_<family>.py."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.arm.sampling import combine_cfg, warp
from acdc_core.tiny.emu3 import build_tiny_emu3
from acdc_core.tiny.janus import build_tiny_janus
from acdc_core.tiny.showo import build_tiny_showo
from acdc_core.tiny.unified import build_tiny_unified
from tests.fakes import LMCalls, gen, other_tokens, sample_story

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)


def one_pass(arm, total: int) -> list:
    """What a token-by-token family runs for ``next_token_logits`` without a cache: the whole key at once."""
    return [(2, total)]


@dataclass(frozen=True)
class Family:
    build: Callable
    lm: Callable            # arm -> the language model module
    lm_input: str           # the forward's keyword carrying the new positions
    prompts: tuple[str, ...]
    next_prompt: str
    guidance: float
    token_by_token: bool = True      # False: the frame is filled in parallel (progress counts steps, no top-k)
    fresh_calls: Callable = one_pass  # (arm, key length) -> the (rows, positions) next_token_logits runs uncached
    sampling: tuple = ()             # extra SamplingSettings fields for this family's runs
    logit_cfg: bool = True           # CFG combines raw codebook logits (False: the family's is generate's, tested there)

    def steps(self, arm, settings: SamplingSettings) -> int:
        """The progress reports of one frame: one per code, or one per MaskGIT step."""
        return arm.tokens_per_image if self.token_by_token else settings.maskgit_steps


FAMILIES = {
    "janus": Family(build_tiny_janus, lambda arm: arm.model.model.language_model, "inputs_embeds",
                    ("A golden retriever named Benny in a sunlit meadow.", "He jumps over a log.",
                     "He rolls in the grass."), "He barks.", 5.0),
    "unified": Family(build_tiny_unified, lambda arm: arm.lm, "input_ids",
                      ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.",
                       "She hops to the right."), "She barks.", 3.0),
    # The context before the frame runs once, then the frame's block (<|soi|> codes <|eoi|>) on top of it.
    "showo": Family(build_tiny_showo, lambda arm: arm.lm, "input_ids",
                    ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.",
                     "She hops to the right."), "She barks.", 2.0, token_by_token=False,
                    fresh_calls=lambda arm, total: [(2, total), (2, arm.tokens_per_image + 2)],
                    sampling=(("maskgit_steps", 4),)),
    # CFG's unconditional row is a sequence of its own (the negative prompt), as in transformers' generate.
    "emu3": Family(build_tiny_emu3, lambda arm: arm.model.model.text_model, "input_ids",
                   ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.",
                    "She hops to the right."), "She barks.", 3.0,
                   fresh_calls=lambda arm, total: [(1, total), (1, arm.uncond_key().shape[1])], logit_cfg=False),
}


@dataclass(frozen=True)
class Case:
    family: Family
    folder: object
    arm: object

    @property
    def cfg(self) -> SamplingSettings:
        return self.settings(guidance_scale=self.family.guidance, temperature=1.0)

    def settings(self, **values) -> SamplingSettings:
        return SamplingSettings(**{**dict(self.family.sampling), **values})

    def story(self, n: int, seed: int = 0) -> ARMContext:
        return sample_story(self.arm, self.family.prompts, n, self.cfg, seed)

    def calls(self, arm=None) -> LMCalls:
        return LMCalls(self.family.lm(arm or self.arm), self.family.lm_input)

    def sample(self, ctx: ARMContext, seed: int, settings: SamplingSettings = None) -> torch.Tensor:
        return self.arm.sample_chunk(ctx, self.family.next_prompt, settings=settings or self.cfg, generator=gen(seed))


# Every family as it loads, and those that can with a static key/value cache (arm/decoding.py's "static" mode).
CASES = sorted(FAMILIES) + ["emu3:static", "janus:static", "unified:static"]


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory) -> Case:
    name, _, decoding = request.param.partition(":")
    family = FAMILIES[name]
    folder = family.build(tmp_path_factory.mktemp(f"tiny_{name}"), seed=0)
    arm = load_arm(folder)
    return Case(family, folder, arm.set_decoding(decoding) if decoding else arm)


def fresh(ctx: ARMContext) -> ARMContext:
    """The same chunks with an empty memo: no cache to reuse."""
    return ARMContext(chunks=ctx.chunks)


# ------------------------------------------------------------------ the cache is only a speed-up
def test_cropped_cache_after_swap_equals_full_recompute(case):
    arm, prompt, scale = case.arm, case.family.next_prompt, case.family.guidance
    ctx = case.story(3)
    swapped = ctx.swap(1, other_tokens(arm, ctx.chunks[1].tokens))
    cached = arm.next_token_logits(swapped, prompt, guidance_scale=scale)    # shares ctx's memo
    recomputed = arm.next_token_logits(fresh(swapped), prompt, guidance_scale=scale)
    assert cached.shape == (2, arm.codebook_size)
    torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    assert torch.equal(case.sample(swapped, 7), case.sample(fresh(swapped), 7))


def test_cache_of_another_backend_is_not_used(case):
    ctx = case.story(2)
    other = load_arm(case.folder)
    prompt, scale = case.family.next_prompt, case.family.guidance
    total = other.sequence_key(ctx, prompt, cfg=True).shape[1]
    with case.calls(other) as lm:
        logits = other.next_token_logits(ctx, prompt, guidance_scale=scale)
    assert lm.calls == case.family.fresh_calls(other, total)
    torch.testing.assert_close(logits, case.arm.next_token_logits(fresh(ctx), prompt, guidance_scale=scale))


def test_cancelled_sampling_leaves_a_truthful_cache(case):
    ctx = case.story(2)
    seen = []

    def cancel_at_3(stage, step, total, preview=None):
        seen.append((stage, step, total))
        if step == 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        case.arm.sample_chunk(ctx, case.family.next_prompt, settings=case.cfg, generator=gen(0), progress=cancel_at_3)
    n = case.family.steps(case.arm, case.cfg)
    assert seen == [("arm", 1, n), ("arm", 2, n), ("arm", 3, n)]
    assert ctx.memo.covered.shape[1] == ctx.memo.cache.cache.get_seq_length()
    assert torch.equal(case.sample(ctx, 5), case.sample(fresh(ctx), 5))


def test_switching_cfg_on_and_off_with_a_shared_memo(case):
    ctx = case.story(2)                                    # the memo holds a CFG (2-row) cache
    for scale in (1.0, case.family.guidance, 1.0):
        shared = case.arm.next_token_logits(ctx, case.family.next_prompt, guidance_scale=scale)
        recomputed = case.arm.next_token_logits(fresh(ctx), case.family.next_prompt, guidance_scale=scale)
        assert shared.shape == recomputed.shape == ((1 if scale == 1.0 else 2), case.arm.codebook_size)
        torch.testing.assert_close(shared, recomputed, rtol=1e-5, atol=1e-5)


def test_swap_leaves_the_original_context_unchanged(case):
    ctx = case.story(3)
    before = [c.tokens.clone() for c in ctx.chunks]
    swapped = ctx.swap(1, other_tokens(case.arm, ctx.chunks[1].tokens))
    case.sample(swapped, 0)
    assert all(torch.equal(c.tokens, b) for c, b in zip(ctx.chunks, before))
    assert not torch.equal(swapped.chunks[1].tokens, before[1])
    assert swapped.memo is ctx.memo   # shared memo, and it is only a speed-up:
    assert torch.equal(case.sample(ctx, 2), case.sample(fresh(ctx), 2))


# ------------------------------------------------------------------ context, seeds, CFG
def test_earlier_frames_are_in_context(case):
    ctx = case.story(1)
    changed = ctx.swap(0, other_tokens(case.arm, ctx.chunks[0].tokens))
    a = case.arm.next_token_logits(fresh(ctx), case.family.prompts[1])
    b = case.arm.next_token_logits(fresh(changed), case.family.prompts[1])
    assert not torch.allclose(a, b)


def test_seeds(case):
    ctx = case.story(1)
    a, b, c = case.sample(ctx, 11), case.sample(ctx, 11), case.sample(ctx, 12)
    assert a.shape == (1, case.arm.tokens_per_image) and a.dtype == torch.long
    assert bool((a >= 0).all()) and bool((a < case.arm.codebook_size).all())
    assert torch.equal(a, b) and not torch.equal(a, c)
    if case.family.token_by_token:     # (MaskGIT samples every step; its temperature is only the re-masking noise)
        greedy = SamplingSettings(guidance_scale=case.family.guidance, temperature=0.0)
        assert torch.equal(case.sample(ctx, 1, greedy), case.sample(ctx, 2, greedy))


def test_guidance_one_runs_a_single_row(case):
    ctx = case.story(1)
    with case.calls() as lm:
        tokens = case.sample(ctx, 0, case.settings(guidance_scale=1.0))
    assert tokens.shape == (1, case.arm.tokens_per_image)
    assert {rows for rows, _ in lm.calls} == {1}
    assert case.arm.next_token_logits(ctx, case.family.next_prompt, guidance_scale=1.0).shape == \
        (1, case.arm.codebook_size)


def test_cfg_step_equals_manual_combine(case):
    if not case.family.token_by_token:
        pytest.skip("a parallel family: its guided first step is checked against upstream (test_arm_showo.py)")
    if not case.family.logit_cfg:
        pytest.skip("CFG as transformers' generate does it: checked against generate (test_arm_<family>.py)")
    ctx = case.story(1)
    settings = SamplingSettings(guidance_scale=3.0, temperature=0.8, top_k=20, top_p=0.9)
    raw = case.arm.next_token_logits(fresh(ctx), case.family.next_prompt, guidance_scale=3.0)
    guided = raw[1] + 3.0 * (raw[0] - raw[1])
    torch.testing.assert_close(combine_cfg(raw[:1], raw[1:], 3.0)[0], guided)
    probs = warp(guided[None], settings).softmax(-1)
    assert int((probs > 0).sum()) <= 20
    expected = torch.multinomial(probs, 1, generator=gen(9))[0, 0]
    assert case.sample(ctx, 9, settings)[0, 0] == expected
