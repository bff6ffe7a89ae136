"""The static key/value-cache decoding modes (``CachedDecoder.set_decoding``: "static", "compiled") against the
default dynamic cache: the same tokens for the same seed (greedy and sampled) after swaps, a cache cropped by
position and regrown when a story outgrows it, and clear errors where a family cannot. The shared contract runs
the static mode of every family that has one (test_arm_contract.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import StaticCache

from acdc_core.arm import ARMContext, SamplingSettings, load_arm
from acdc_core.arm.cache import CacheKeeper, common_prefix, static_capacity
from acdc_core.errors import InvalidInputError
from acdc_core.tiny.emu3 import build_tiny_emu3
from acdc_core.tiny.janus import build_tiny_janus
from acdc_core.tiny.showo import build_tiny_showo
from acdc_core.tiny.unified import build_tiny_unified
from tests.fakes import LMCalls, gen, other_tokens

PROMPTS = ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.", "She hops to the right.",
           "She barks.")
# family -> (builder, ARM CFG, the language model's module and the keyword its new positions come in)
BUILDERS = {"janus": (build_tiny_janus, 5.0, lambda arm: arm.model.model.language_model, "inputs_embeds"),
            "unified": (build_tiny_unified, 3.0, lambda arm: arm.lm, "input_ids"),
            "emu3": (build_tiny_emu3, 3.0, lambda arm: arm.model.model.text_model, "input_ids")}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def pair(request, tmp_path_factory):
    """The same folder loaded twice: dynamic (as loaded) and static."""
    build, scale, lm, keyword = BUILDERS[request.param]
    folder = build(tmp_path_factory.mktemp(request.param), seed=0)
    static = load_arm(folder).set_decoding("static")
    return load_arm(folder), static, scale, lambda: LMCalls(lm(static), keyword)


def story(arm, settings: SamplingSettings, n: int = 3) -> ARMContext:
    ctx = ARMContext()
    for i in range(n):
        ctx = ctx.append(PROMPTS[i], arm.sample_chunk(ctx, PROMPTS[i], settings=settings, generator=gen(i)))
    return ctx


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_static_decoding_gives_the_dynamic_tokens_through_a_story_and_a_swap(pair, temperature):
    dynamic, static, scale, calls = pair
    settings = SamplingSettings(guidance_scale=scale, temperature=temperature)
    a, b = story(dynamic, settings), story(static, settings)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.chunks, b.chunks))
    assert isinstance(b.memo.cache.cache, StaticCache) and not isinstance(a.memo.cache.cache, StaticCache)
    swapped = b.swap(1, other_tokens(static, b.chunks[1].tokens))
    key = static.sequence_key(swapped, PROMPTS[3], cfg=True)
    shared = common_prefix(b.memo.covered, key)      # up to the swapped frame's first changed code
    with calls() as lm:
        after = static.sample_chunk(swapped, PROMPTS[3], settings=settings, generator=gen(9))
    assert 0 < shared and lm.calls[0][1] == key.shape[1] - shared   # cropped by position, not rebuilt
    fresh = dynamic.sample_chunk(ARMContext(chunks=swapped.chunks), PROMPTS[3], settings=settings, generator=gen(9))
    assert torch.equal(after, fresh)


def test_a_static_cache_is_sized_ahead_and_replaced_when_a_story_outgrows_it(pair):
    static = pair[1]
    assert static_capacity(300) == 1024 and static_capacity(700) == 2048 and static_capacity(700, limit=1500) == 1500
    assert static_capacity(2000, limit=1500) == 2000
    keeper = CacheKeeper(static=static._lm_config())
    memo = ARMContext().memo
    key = torch.arange(10)[None]
    cache, start = keeper.take(memo, key, 5, device=static.device, dtype=static.dtype)
    assert isinstance(cache, StaticCache) and start == 0 and cache.layers[0].max_cache_len == 1024
    static._forward(static._prefill_input(key % 50), cache)
    keeper.give(memo, cache, key, device=static.device, dtype=static.dtype)
    again, start = keeper.take(memo, key, 5, device=static.device, dtype=static.dtype)
    assert again is cache and start == 9                       # reused, cropped to leave the last position
    keeper.give(memo, again, key, device=static.device, dtype=static.dtype)
    bigger, start = keeper.take(memo, key, 2000, device=static.device, dtype=static.dtype)
    assert bigger is not cache and start == 0 and bigger.layers[0].max_cache_len >= 2010


def test_compiled_decoding_gives_the_dynamic_tokens(tmp_path):
    folder = build_tiny_janus(tmp_path / "janus", seed=0)
    dynamic, compiled = load_arm(folder), load_arm(folder).set_decoding("compiled")
    settings = SamplingSettings(guidance_scale=5.0, temperature=0.0)
    a, b = story(dynamic, settings, 2), story(compiled, settings, 2)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.chunks, b.chunks))
    assert compiled.__dict__.get("_compiled") is not None


def test_a_family_without_a_static_mode_and_an_unknown_mode_are_refused(tmp_path):
    showo = load_arm(build_tiny_showo(tmp_path / "showo", seed=0))
    with pytest.raises(InvalidInputError, match="showo ARM decodes with a dynamic cache only"):
        showo.set_decoding("static")
    with pytest.raises(InvalidInputError, match="decoding must be one of dynamic, static, compiled"):
        showo.set_decoding("fast")


def test_the_command_line_and_load_arm_take_the_decoding_mode(tmp_path, capsys):
    import json

    from acdc_core.cli import main
    from acdc_core.toy.defaults import DM_DIR

    folder = build_tiny_janus(tmp_path / "janus", seed=0)
    prompts = tmp_path / "story.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    common = ["story", "--arm", str(folder), "--dm", str(DM_DIR), "--prompts", str(prompts), "--memory", "off",
              "--steps", "4", "--temperature", "0"]
    for mode in ("dynamic", "static"):
        assert main([*common, "--out", str(tmp_path / mode), "--arm-decoding", mode]) == 0
    runs = [json.loads((tmp_path / mode / "run.json").read_text())["frames"] for mode in ("dynamic", "static")]
    assert [f["tokens_kept"] for f in runs[0]] == [f["tokens_kept"] for f in runs[1]]
    for name in ("arm_01.png", "arm_02.png", "acdc_01.png", "acdc_02.png"):
        assert (tmp_path / "dynamic" / "frames" / name).read_bytes() == (tmp_path / "static" / "frames" / name).read_bytes()
    showo = build_tiny_showo(tmp_path / "showo", seed=0)
    assert main([*common[:2], str(showo), *common[3:], "--out", str(tmp_path / "s"), "--arm-decoding", "static"]) == 2
    assert "showo ARM decodes with a dynamic cache only" in capsys.readouterr().err


def test_load_arm_refuses_a_static_mode_the_family_lacks_when_queued(standalone_host):
    import shutil
    from pathlib import Path

    from nodes import bridge
    from nodes.loaders import LoadARM

    folder = build_tiny_showo(Path(bridge.HOST.models_dir) / "acdc_arm" / "showo-static-check", seed=0)
    try:
        assert "dynamic cache only" in LoadARM.VALIDATE_INPUTS(folder.name, decoding="static")
        assert LoadARM.VALIDATE_INPUTS(folder.name, decoding="dynamic") is True
    finally:
        shutil.rmtree(folder)


def test_every_language_model_attends_with_pytorch_sdpa(pair):
    """Attention runs through torch's scaled_dot_product_attention (transformers' "sdpa")."""
    language = [m for m in pair[0].modules().values() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    assert language and all(m.config._attn_implementation == "sdpa" for m in language)


def test_showo_and_stable_diffusion_attend_with_pytorch_sdpa(tmp_path):
    from acdc_core.correct import load_corrector
    from acdc_core.tiny.sd import build_tiny_sd

    assert load_arm(build_tiny_showo(tmp_path / "showo", seed=0)).lm.config._attn_implementation == "sdpa"
    corrector = load_corrector(build_tiny_sd(tmp_path / "sd"))
    processors = {type(p).__name__ for p in [*corrector.unet.attn_processors.values(),
                                              *corrector.vae.attn_processors.values()]}
    assert processors == {"AttnProcessor2_0"}


@pytest.mark.parametrize("family", sorted(BUILDERS) + ["showo"])
def test_half_precision_keeps_the_vq_tokenizer_in_float32(family, tmp_path):
    """A bfloat16 ARM decodes and re-encodes with its VQ in float32: the same pixels and codes as the float32 ARM."""
    build = build_tiny_showo if family == "showo" else BUILDERS[family][0]
    folder = build(tmp_path / family, seed=0)
    full, half = load_arm(folder), load_arm(folder, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.vq_dtype == torch.float32
    codes = torch.randint(0, full.codebook_size, (2, full.tokens_per_image), generator=gen(0))
    pixels = full.decode(codes)
    assert torch.equal(half.decode(codes), pixels)
    assert torch.equal(half.encode(pixels), full.encode(pixels))
    settings = SamplingSettings(guidance_scale=2.0, maskgit_steps=2)
    tokens = half.sample_chunk(ARMContext(), PROMPTS[0], settings=settings, generator=gen(1))
    assert tokens.shape == (1, half.tokens_per_image)
