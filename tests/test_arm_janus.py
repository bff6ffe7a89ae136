"""The Janus ARM backend on a tiny random Janus built locally (no hub), plus load_arm's errors."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.arm.janus import JanusARM
from acdc_core.arm.sampling import warp
from acdc_core.errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from acdc_core.tiny.janus import build_tiny_janus
from tests import fakes
from tests.fakes import gen, other_tokens, sample_story

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

PROMPTS = ["A golden retriever named Benny in a sunlit meadow.", "He jumps over a log.",
           "He rolls in the grass.", "He sleeps under a tree."]
CFG = SamplingSettings(guidance_scale=5.0, temperature=1.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_janus(tmp_path_factory.mktemp("tiny_janus"), seed=0)


@pytest.fixture(scope="module")
def arm(folder) -> JanusARM:
    return load_arm(folder)


def story(arm: JanusARM, n: int, settings: SamplingSettings = CFG, seed: int = 0) -> ARMContext:
    return sample_story(arm, PROMPTS, n, settings, seed)


def LMCalls(arm: JanusARM) -> fakes.LMCalls:
    return fakes.LMCalls(arm.model.model.language_model, "inputs_embeds")


def chunk_image_start(arm: JanusARM, ctx: ARMContext, index: int) -> int:
    """Sequence position of the first image code of chunk ``index``."""
    pos = 1  # BOS
    for chunk in ctx.chunks[:index]:
        pos += len(arm._turn(chunk.prompt)) + 1 + arm.tokens_per_image + 1 + 1  # turn, BOI, codes, EOI, EOS
    return pos + len(arm._turn(ctx.chunks[index].prompt)) + 1



# ------------------------------------------------------------------ the cache
def test_prefill_after_swap_runs_only_from_the_swapped_chunk(arm):
    ctx = story(arm, 4)
    index = 1
    swapped = ctx.swap(index, other_tokens(arm, ctx.chunks[index].tokens))
    total = arm.sequence_key(swapped, "He barks.", cfg=True).shape[1]
    with LMCalls(arm) as lm:
        arm.sample_chunk(swapped, "He barks.", settings=CFG, generator=gen(1))
    # chunk 1's prompt text is unchanged and stays cached: the prefill starts at its first image code
    assert lm.calls[0] == (2, total - chunk_image_start(arm, swapped, index))
    assert lm.calls[1:] == [(2, 1)] * (arm.tokens_per_image - 1)   # then one position per code
    assert lm.calls[0][1] < total


def test_appending_the_sampled_chunk_costs_only_the_new_turn(arm):
    ctx = story(arm, 2)
    tokens = arm.sample_chunk(ctx, PROMPTS[2], settings=CFG, generator=gen(3))
    ctx = ctx.append(PROMPTS[2], tokens)
    with LMCalls(arm) as lm:
        arm.sample_chunk(ctx, PROMPTS[3], settings=CFG, generator=gen(4))
    # the last code (never fed back), EOI, EOS, the new user turn, BOI
    assert lm.calls[0] == (2, 1 + 1 + 1 + len(arm._turn(PROMPTS[3])) + 1)


# ------------------------------------------------------------------ context and sampling
def test_uncond_row_pads_text_and_keeps_structure_and_codes(arm):
    ctx = story(arm, 1)
    key = arm.sequence_key(ctx, "He barks.", cfg=True)
    cond, uncond = key
    ids = arm._ids
    codes = cond >= arm.text_vocab_size
    structural = torch.isin(cond, torch.tensor([ids["bos"], ids["boi"], ids["eoi"], ids["eos"]]))
    assert torch.equal(uncond[codes | structural], cond[codes | structural])
    assert bool((uncond[~(codes | structural)] == ids["pad"]).all())
    assert int(codes.sum()) == arm.tokens_per_image


def test_warpers_match_transformers(arm):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(3, 100, generator=gen(0))
    settings = SamplingSettings(temperature=0.7, top_k=30, top_p=0.8)
    theirs = logits
    for proc in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(30), TopPLogitsWarper(0.8)):
        theirs = proc(None, theirs)
    assert torch.equal(warp(logits, settings), theirs)


@pytest.mark.parametrize("settings", [
    SamplingSettings(guidance_scale=5.0, temperature=1.0),
    SamplingSettings(guidance_scale=3.0, temperature=0.7, top_k=20, top_p=0.9),
    SamplingSettings(guidance_scale=5.0, temperature=0.0),
])
def test_empty_context_matches_transformers_generate(folder, arm, settings):
    """Same tokens as Janus' own generate(generation_mode="image") for one image: their draw uses the global
    RNG after torch.manual_seed, ours a Generator with the same seed; the processors match, so do the tokens."""
    from transformers import JanusProcessor

    processor = JanusProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "text", "text": PROMPTS[0]}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       generation_mode="image", return_tensors="pt")
    assert torch.equal(inputs.input_ids, arm.sequence_key(ARMContext(), PROMPTS[0], cfg=False))
    model = arm.model
    model.generation_config.generation_kwargs = {"boi_token_id": arm._ids["boi"]}
    greedy = settings.temperature == 0
    torch.manual_seed(123)
    theirs = model.generate(**inputs, generation_mode="image", do_sample=not greedy,
                            guidance_scale=settings.guidance_scale,
                            temperature=None if greedy else settings.temperature,
                            top_k=settings.top_k, top_p=settings.top_p)
    ours = arm.sample_chunk(ARMContext(), PROMPTS[0], settings=settings, generator=gen(123))
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------------ pixels <-> codes
def test_decode_encode_round_trip_shapes(arm):
    tokens = story(arm, 1).chunks[0].tokens
    images = arm.decode(tokens)
    assert images.shape == (1, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    again = arm.encode(images)
    assert again.shape == (1, arm.tokens_per_image) and again.dtype == torch.long
    assert bool((again >= 0).all()) and bool((again < arm.codebook_size).all())


def test_encode_uses_the_normalised_lookup(arm):
    images = torch.rand(4, 3, 32, 32, generator=gen(0))
    vq = arm.model.model.vqmodel
    with torch.no_grad():
        z = vq.quant_conv(vq.encoder(images * 2 - 1))                    # [4, D, 4, 4]
        zf = z.permute(0, 2, 3, 1).reshape(4, -1, z.shape[1])
        book = vq.quantize.embedding.weight
        manual = (torch.nn.functional.normalize(zf, dim=-1)
                  @ torch.nn.functional.normalize(book, dim=-1).T).argmax(-1)
        hf = vq.encode(images * 2 - 1).image_tokens.view(4, -1)
    ours = arm.encode(images)
    assert torch.equal(ours, manual)
    assert not torch.equal(ours, hf)  # HF's quantizer uses raw distances and picks other codes


def test_wrong_image_size_is_refused(arm):
    with pytest.raises(InvalidInputError, match="16x16.*32x32"):
        arm.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(InvalidInputError, match=r"\[N, 3, H, W\]"):
        arm.encode(torch.rand(3, 32, 32))
    with pytest.raises(InvalidInputError, match="decode needs tokens"):
        arm.decode(torch.zeros(1, 5, dtype=torch.long))


def test_bad_requests_are_refused(arm):
    with pytest.raises(InvalidInputError, match="one image per chunk"):
        arm.sample_chunk(ARMContext(), "x", settings=CFG, generator=gen(0), images_per_chunk=2)
    bad = ARMContext().append("x", torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="chunk 0"):
        arm.sample_chunk(bad, "y", settings=CFG, generator=gen(0))
    out_of_range = ARMContext().append("x", torch.full((1, 16), arm.codebook_size))
    with pytest.raises(InvalidInputError, match="codebook"):
        arm.sample_chunk(out_of_range, "y", settings=CFG, generator=gen(0))
    with pytest.raises(InvalidInputError, match="control token.*boi"):
        arm.sample_chunk(ARMContext(), "a dog <begin_of_image>", settings=CFG, generator=gen(0))


def test_protocol_attributes_and_preview(folder):
    arm = load_arm(folder)
    assert arm.family == "janus" and arm.image_size == (32, 32) and arm.tokens_per_image == 16
    ctx = story(arm, 2)
    assert arm.to("cpu") is arm and arm.device == torch.device("cpu")
    with LMCalls(arm) as lm:   # the cache moved along and is still used
        arm.next_token_logits(ctx.append("x", ctx.chunks[0].tokens), "y")
    assert lm.calls[0][1] == 1 + 1 + 1 + len(arm._turn("x")) + 1 + 16 + 1 + 1 + len(arm._turn("y")) + 1
    arm.previews = True
    previews = []
    arm.sample_chunk(ARMContext(), "x", settings=CFG, generator=gen(0),
                     progress=lambda s, k, n, p=None: previews.append((k, None if p is None else p.shape)))
    shown = [k for k, shape in previews if shape is not None]
    assert shown == [4, 8, 12, 16]
    assert previews[-1][1] == (3, 32, 32)


# ------------------------------------------------------------------ load_arm errors
def _copy(folder, dst, drop=()):
    shutil.copytree(folder, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_unknown_family(folder, tmp_path):
    with pytest.raises(UnknownModelFamilyError, match="janus"):
        load_arm(folder, family="show-o")
    other = _copy(folder, tmp_path / "m")
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "somethingelse"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownModelFamilyError, match="somethingelse.*Supported: janus"):
        load_arm(other)


def test_missing_files_are_named(folder, tmp_path):
    with pytest.raises(MissingModelFilesError, match="does not exist"):
        load_arm(tmp_path / "nowhere")
    no_tok = _copy(folder, tmp_path / "a", drop=["tokenizer.json"])
    with pytest.raises(MissingModelFilesError, match="tokenizer.json or tokenizer.model"):
        load_arm(no_tok)
    no_cfg = _copy(folder, tmp_path / "b", drop=["config.json"])
    with pytest.raises(MissingModelFilesError, match="config.json"):
        load_arm(no_cfg)
    no_weights = _copy(folder, tmp_path / "c", drop=["model.safetensors"])
    with pytest.raises(MissingModelFilesError, match="safetensors"):
        load_arm(no_weights)


def test_pickle_only_folder_is_refused(folder, tmp_path):
    pickled = _copy(folder, tmp_path / "p", drop=["model.safetensors"])
    torch.save({"weight": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(MissingModelFilesError, match="pickle.*pytorch_model.bin"):
        load_arm(pickled)
