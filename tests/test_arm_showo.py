"""Show-o's pieces (acdc_core/arm/showo.py) against showlab/Show-o's own code.

tests/fixtures/showo_upstream.safetensors was made by tests/fixtures/upstream/make_showo.py, run in a separate
virtual environment on an upstream checkout (its metadata names the commit, the tiny Phi config, the special ids
and the sampling settings): upstream's ``Showo`` (its own Phi), ``UniversalPrompting.t2i_gen_prompt``,
``create_attention_mask_predict_next(rm_pad_in_image=True)`` and ``t2i_generate`` on a tiny config whose every
tensor is f(its name, its shape). Here transformers' ``PhiForCausalLM`` gets the same tensors through the
checkpoint's names (``lm_state``), so a wrong name, mask or sampling order shows as other logits or tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from acdc_core.arm.showo import (FramePrefix, ShowoVocab, additive, build_phi, chunk_length, frames_that_fit, guided,
                                 lm_state, maskgit_fill, omni_attention_mask, t2i_prompt)
from acdc_core.errors import ACDCError
from tests.fixtures.upstream.tiny_weights import read_fixture, weight

FIXTURE = Path(__file__).parent / "fixtures" / "showo_upstream.safetensors"


@pytest.fixture(scope="module")
def upstream():
    return read_fixture(FIXTURE)


@pytest.fixture(scope="module")
def setup(upstream):
    from transformers import PhiConfig

    data, meta = upstream
    vocab = ShowoVocab(llm_vocab_size=int(meta["llm_vocab_size"]), codebook_size=int(meta["codebook_size"]),
                       bos=99, eos=99)
    assert vocab.size == int(meta["vocab_size"]) and vocab.mask == int(meta["mask_token_id"])
    config = PhiConfig.from_dict({**json.loads(meta["phi_config"]), "vocab_size": vocab.size})
    model = build_phi(config).eval()
    checkpoint = {f"showo.{name}": weight(f"showo.{name}", tuple(t.shape)) for name, t in model.state_dict().items()}
    assert sorted(checkpoint) == json.loads(meta["names"])                  # the published names, all of them
    model.load_state_dict(lm_state(checkpoint), strict=True)
    return model, vocab, data, meta


def prompts(meta, vocab: ShowoVocab, image: torch.Tensor) -> torch.Tensor:
    """Cond rows (the fixture's prompts) then uncond rows (empty prompts), as upstream built them."""
    max_text = int(meta["max_text_len"])
    texts = json.loads(meta["prompts"])
    text_ids = [[1 + (ord(c) % 90) for c in t] for t in texts] + [[] for _ in texts]   # the stub tokenizer
    return torch.stack([t2i_prompt(ids, row, vocab, max_text) for ids, row in zip(text_ids, torch.cat([image, image]))])


def test_the_special_ids_follow_the_text_vocabulary(upstream):
    _, meta = upstream
    vocab = ShowoVocab(llm_vocab_size=100, codebook_size=64, bos=99, eos=99)
    special = json.loads(meta["special_ids"])
    assert {name: vocab.added(name) for name in special if name.startswith("<|") and name not in
            ("<|sot|>", "<|eot|>", "<|pad|>")} == {k: v for k, v in special.items() if k not in
                                                  ("<|sot|>", "<|eot|>", "<|pad|>")}
    assert special["<|pad|>"] == vocab.pad
    published = ShowoVocab()
    assert (published.image_offset, published.mask, published.size) == (50305, 58497, 58498)


@pytest.mark.parametrize("case", ["blank", "known"])
def test_prompt_mask_and_logits_are_upstream_s(setup, case):
    model, vocab, data, meta = setup
    ids = data[f"{case}_ids"]
    n = int(meta["num_vq_tokens"])
    image = ids[:2, -(n + 1):-1]
    assert torch.equal(prompts(meta, vocab, image), ids)                     # the same prompt, id for id
    with torch.no_grad():
        logits = model(ids, attention_mask=additive(omni_attention_mask(ids, vocab))).logits
    real = ids != vocab.pad                                                   # padding rows see nothing either way
    torch.testing.assert_close(logits[real], data[f"{case}_logits"][real], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["blank", "known"])
@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_maskgit_gives_upstream_s_tokens_for_the_same_seed(setup, case, scale):
    model, vocab, data, meta = setup
    ids = data[f"{case}_ids"]
    n = int(meta["num_vq_tokens"])
    prefix_cond, prefix_uncond = ids[:2, :-(n + 1)], ids[2:, :-(n + 1)]

    def code_logits(image_ids):
        rows = [torch.cat([prefix_cond, image_ids, torch.full((2, 1), vocab.eoi)], 1)]
        if scale:
            rows.append(torch.cat([prefix_uncond, image_ids, torch.full((2, 1), vocab.eoi)], 1))
        batch = torch.cat(rows)
        with torch.no_grad():
            logits = model(batch, attention_mask=additive(omni_attention_mask(batch, vocab))).logits
        logits = guided(logits, scale) if scale else logits
        return logits[:, -(n + 1):-1, vocab.image_offset:vocab.mask]

    start = ids[:2, -(n + 1):-1]
    codes = torch.where(start == vocab.mask, vocab.mask, start - vocab.image_offset)
    seen = []
    got = maskgit_fill(code_logits, codes, vocab, steps=6, temperature=1.0, generator=torch.Generator().manual_seed(7),
                       on_step=lambda step, partial: seen.append(int((partial == vocab.mask).sum())))
    assert torch.equal(got, data[f"{case}_tokens_cfg{scale:g}"])
    known = codes != vocab.mask
    assert torch.equal(got[known], codes[known])                              # token-level inpainting keeps them
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)              # fewer masked every step


def test_the_omni_mask_is_causal_over_text_and_whole_inside_a_frame():
    vocab = ShowoVocab(llm_vocab_size=100, codebook_size=64, bos=99, eos=99)
    two = torch.tensor([[vocab.pad, vocab.t2i, 5, vocab.soi, 111, 112, vocab.eoi, 7, vocab.soi, 113, vocab.eoi]])
    allowed = omni_attention_mask(two, vocab)[0, 0]
    assert allowed[0, 0] and not allowed[1:, 0].any()                         # padding: sees itself, seen by none
    assert allowed[1, 1] and not allowed[1, 2]                                # text: causal
    assert allowed[4, 5] and allowed[4, 6] and not allowed[4, 7]              # frame 1: whole, not what follows
    assert allowed[7, 6] and not allowed[7, 8]                                # text after a frame sees it
    assert allowed[9, 10] and allowed[9, 4] and allowed[10, 1]                # frame 2 sees frame 1 and the text
    # Nothing else: per row, padding 1, text 1 and 2, frame 1's four rows 6 each (positions 1-6), text 7,
    # frame 2's three rows 10 each (positions 1-10).
    assert allowed.sum(-1).tolist() == [1, 1, 2, 6, 6, 6, 6, 7, 10, 10, 10]


def test_how_many_frames_fit_in_phi_s_2048_positions(upstream):
    data, meta = upstream
    n, max_text = int(meta["num_vq_tokens"]), int(meta["max_text_len"])
    assert chunk_length(n, max_text) == data["blank_ids"].shape[1]            # what upstream's prompt takes
    assert (chunk_length(256), chunk_length(1024)) == (387, 1155)
    assert (frames_that_fit(2048, 256), frames_that_fit(2048, 1024)) == (5, 1)


def test_bad_input_is_refused_before_any_model_runs():
    vocab = ShowoVocab(llm_vocab_size=100, codebook_size=64, bos=99, eos=99)
    with pytest.raises(ACDCError, match="MaskGIT steps must be a whole number >= 1"):
        maskgit_fill(lambda ids: pytest.fail("ran"), torch.full((1, 4), vocab.mask), vocab, steps=0)
    with pytest.raises(ACDCError, match="not a Show-o checkpoint"):
        lm_state({"model.embed_tokens.weight": torch.zeros(1)})


def test_the_frame_prefix_is_run_once_and_every_maskgit_step_gives_the_full_sequence_s_logits(setup):
    """A two-frame story (frame 1's block, then frame 2's prompt): the prefix before frame 2's <|soi|> runs once;
    each step runs only the block, and its logits are those of the whole sequence run at once."""
    model, vocab, data, meta = setup
    n = int(meta["num_vq_tokens"])
    frame1 = data["known_ids"][:2]                                         # a prompt and its (partly known) frame
    frame2 = data["blank_ids"][:2]
    story = torch.cat([frame1, frame2], 1)
    prefix = story[:, :-(n + 2)]                                           # up to frame 2's <|soi|>
    lengths = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: lengths.append(
        (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]), with_kwargs=True)
    try:
        cached = FramePrefix(model, prefix, vocab)
        g = torch.Generator().manual_seed(3)
        for _ in range(3):                                                 # three different blocks, one prefix
            block = torch.cat([torch.full((2, 1), vocab.soi),
                               torch.randint(0, 64, (2, n), generator=g) + vocab.image_offset,
                               torch.full((2, 1), vocab.eoi)], 1)
            got = cached.block_logits(block)
            whole = torch.cat([prefix, block], 1)
            with torch.no_grad():
                expected = model(whole, attention_mask=additive(omni_attention_mask(whole, vocab))).logits[:, -(n + 2):]
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    finally:
        hook.remove()
    assert lengths[0] == prefix.shape[1] and lengths[1::2] == [n + 2] * 3    # the prefix once, then blocks only
    assert cached.cache.get_seq_length() == prefix.shape[1]                # cut back after every step
