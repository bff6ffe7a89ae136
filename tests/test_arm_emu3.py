"""The Emu3 ARM family (``acdc_core.arm.emu3.Emu3ARM``) on a tiny random Emu3 built locally in the published
transformers layout: the same tokens as transformers' own ``generate`` (greedy, seeded sampling, CFG with a negative
prompt), the processor's prompt and pixel range, VQ decode/encode against the model's own paths, the story
sequence (rows with end-of-line tokens), what a swap or an appended frame costs, the context window, bad folders,
and a whole story through the CLI. The shared contract (cache, swaps, seeds): test_arm_contract.py."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, check_arm_folder, load_arm
from acdc_core.arm.emu3 import NEGATIVE_PROMPT
from acdc_core.errors import ACDCError
from acdc_core.tiny.emu3 import build_tiny_emu3
from tests.fakes import LMCalls, gen, other_tokens, sample_story

pytestmark = pytest.mark.floors

PROMPTS = ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.", "She hops to the right.")
CFG = SamplingSettings(guidance_scale=3.0, temperature=1.0)
GRID = 4                       # the tiny folder: 32 px frames, 8x smaller code grid
BLOCK = GRID * (GRID + 1) + 3  # an image after its prefix: rows with EOL, then EOF, EOI, EOS


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_emu3(tmp_path_factory.mktemp("tiny_emu3"), seed=0)


@pytest.fixture(scope="module")
def arm(folder):
    return load_arm(folder)


@pytest.fixture(scope="module")
def processor(folder):
    from transformers import Emu3Processor

    return Emu3Processor.from_pretrained(folder)


def generation_inputs(processor, text: str):
    return processor(text=text, return_for_image_generation=True, image_area=32 * 32, return_tensors="pt")


def test_the_folder_is_detected_and_loaded(folder, arm):
    assert check_arm_folder(folder)[1] == "emu3" and arm.family == "emu3"
    assert (arm.image_size, arm.tokens_per_image, arm.codebook_size, arm.context_window) == ((32, 32), 16, 64, 4096)


def test_prompt_and_negative_prompt_are_the_processors(arm, processor):
    inputs = generation_inputs(processor, PROMPTS[0])
    assert torch.equal(arm.sequence_key(ARMContext(), PROMPTS[0], cfg=True), inputs.input_ids)   # one row: CFG's is apart
    assert torch.equal(arm.uncond_key(), generation_inputs(processor, NEGATIVE_PROMPT).input_ids)


@pytest.mark.parametrize("settings", [
    SamplingSettings(guidance_scale=3.0, temperature=1.0),
    SamplingSettings(guidance_scale=3.0, temperature=0.0),
    SamplingSettings(guidance_scale=2.0, temperature=0.7, top_k=10, top_p=0.9),
    SamplingSettings(guidance_scale=1.0, temperature=0.8, top_k=20),
])
def test_one_frame_is_the_tokens_transformers_generate_makes(arm, processor, settings):
    """Emu3's image generation as transformers documents it (prefix_allowed_tokens_fn forcing the end-of-line
    tokens, the negative prompt as negative_prompt_ids): the same seed gives the same tokens."""
    inputs = generation_inputs(processor, PROMPTS[0])
    negative = generation_inputs(processor, NEGATIVE_PROMPT)
    wrapper, eol = processor.tokenizer.image_wrapper_token_id, arm._ids["eol"]
    visual = arm.model.vocabulary_mapping.image_tokens

    def allowed(batch_id, ids):
        offset = ids.shape[0] - int(torch.nonzero(ids == wrapper)[0, 0])
        return [eol] if offset % (GRID + 1) == 0 else visual

    greedy = settings.temperature == 0
    extra = {"negative_prompt_ids": negative.input_ids} if settings.guidance_scale != 1 else {}
    torch.manual_seed(5)
    out = arm.model.generate(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                             max_new_tokens=GRID * (GRID + 1), prefix_allowed_tokens_fn=allowed, do_sample=not greedy,
                             guidance_scale=settings.guidance_scale, temperature=None if greedy else settings.temperature,
                             top_k=settings.top_k or None, top_p=settings.top_p, **extra)
    new = out[0, inputs.input_ids.shape[1]:].view(GRID, GRID + 1)
    assert bool((new[:, -1] == eol).all())
    theirs = arm._bpe2img[new[:, :GRID].flatten()]
    ours = arm.sample_chunk(ARMContext(), PROMPTS[0], settings=settings, generator=gen(5))
    assert torch.equal(ours[0], theirs)


def test_decode_and_encode_are_the_models_own(arm, processor):
    tokens = sample_story(arm, PROMPTS, 1, CFG).chunks[0].tokens
    generated = arm.image_block(tokens[0])[None]                       # rows with EOL, EOF, EOI, EOS
    theirs = arm.model.decode_image_tokens(image_tokens=generated, height=GRID, width=GRID)
    torch.testing.assert_close(arm.decode(tokens), ((theirs + 1) / 2).clamp(0, 1))
    images = torch.randint(0, 256, (2, 32, 32, 3), generator=gen(0), dtype=torch.uint8)
    pixels = processor.image_processor(list(images.numpy()), return_tensors="pt").pixel_values
    torch.testing.assert_close(pixels, images.permute(0, 3, 1, 2).float() / 127.5 - 1)   # the VQ works in [-1, 1]
    bpe = arm.model.model.get_image_tokens(pixels, torch.tensor([[32, 32]] * 2)).view(2, GRID, GRID + 1)
    assert torch.equal(arm.encode(images.permute(0, 3, 1, 2).float() / 255), arm._bpe2img[bpe[..., :GRID]].flatten(1))


def test_the_story_is_each_frame_prompt_then_its_rows(arm):
    ctx = sample_story(arm, PROMPTS, 2, CFG)
    key = arm.sequence_key(ctx, PROMPTS[2], cfg=True)[0].tolist()
    expected = [arm._ids["bos"]]
    for chunk in ctx.chunks:
        expected += arm.prompt_ids(chunk.prompt) + arm.image_block(chunk.tokens[0]).tolist()
    assert key == expected + arm.prompt_ids(PROMPTS[2])
    block = arm.image_block(ctx.chunks[0].tokens[0])
    assert len(block) == BLOCK and block[GRID] == arm._ids["eol"] and block[-3:].tolist() == [
        arm._ids["eof_token"], arm._ids["eoi_token"], arm._ids["eos"]]


def test_an_appended_frame_costs_its_tail_and_prompt_and_a_swap_reruns_from_the_frame(arm):
    ctx = sample_story(arm, PROMPTS, 2, CFG)
    lm = arm.model.model.text_model
    with LMCalls(lm, "input_ids") as calls:
        arm.sample_chunk(ctx, PROMPTS[2], settings=CFG, generator=gen(1))
    # the last EOL (never fed), EOF, EOI, EOS and the new prompt; the unconditional row reruns only its last
    # position (the negative prompt is cached once per backend); then one position per step, for both rows
    plan = GRID * (GRID + 1)
    assert calls.calls[:2] == [(1, 4 + len(arm.prompt_ids(PROMPTS[2]))), (1, 1)]
    assert calls.calls[2:] == [(1, 1)] * (2 * (plan - 1))
    swapped = ctx.swap(1, other_tokens(arm, ctx.chunks[1].tokens))
    total = arm.sequence_key(swapped, PROMPTS[2], cfg=True).shape[1]
    first = 1 + len(arm.prompt_ids(PROMPTS[0])) + BLOCK + len(arm.prompt_ids(PROMPTS[1]))   # frame 2's first code
    with LMCalls(lm, "input_ids") as calls:
        ours = arm.sample_chunk(swapped, PROMPTS[2], settings=CFG, generator=gen(1))
    assert calls.calls[0] == (1, total - first)
    assert torch.equal(ours, arm.sample_chunk(ARMContext(chunks=swapped.chunks), PROMPTS[2], settings=CFG,
                                              generator=gen(1)))


def test_a_story_longer_than_the_window_keeps_frame_1_and_the_latest(tmp_path):
    small = load_arm(build_tiny_emu3(tmp_path / "small", seed=0, max_position_embeddings=150))
    ctx = sample_story(small, PROMPTS, 3, CFG)
    assert small.fit_context(ARMContext(chunks=ctx.chunks[:1]), "She barks.") == (0,)
    lengths = [small.sequence_key(ctx.select(i), "She barks.", cfg=False).shape[1] + BLOCK for i in ((0, 1, 2), (0, 2))]
    assert lengths[0] > 150 >= lengths[1]
    assert small.fit_context(ctx, "She barks.") == (0, 2)


def test_bad_folders_and_prompts_are_refused_before_generation(folder, tmp_path, arm):
    with pytest.raises(ACDCError, match="not one of the janus family"):
        check_arm_folder(folder, family="janus")
    from acdc_core.tiny.janus import build_tiny_janus
    janus = build_tiny_janus(tmp_path / "janus", seed=0)
    with pytest.raises(ACDCError, match="not one of the emu3 family"):
        check_arm_folder(janus, family="emu3")
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ACDCError, match="pickle"):
        check_arm_folder(pickled)
    wrong = tmp_path / "wrong_tokenizer"
    shutil.copytree(folder, wrong)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(janus / name, wrong / name)
    with pytest.raises(ACDCError, match="Emu3 tokenizer lacks the special token"):
        load_arm(wrong)
    odd = tmp_path / "odd"
    shutil.copytree(folder, odd)
    (odd / "acdc_emu3.json").write_text(json.dumps({"image_size": 36}))
    with pytest.raises(ACDCError, match="multiple of 8 px, got 36"):
        load_arm(odd)
    with pytest.raises(ACDCError, match="control tokens"):
        arm.sample_chunk(ARMContext(), "a cat <|image start|>", settings=CFG, generator=gen(0))
    with pytest.raises(ACDCError, match="is 64x64 .* but the ARM works at 32x32"):
        arm.encode(torch.rand(1, 3, 64, 64))


def test_a_whole_story_runs_through_the_cli(folder, tmp_path):
    from acdc_core.cli import main
    from acdc_core.toy.defaults import DM_DIR

    prompts = tmp_path / "story.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    assert main(["story", "--arm", str(folder), "--dm", str(DM_DIR), "--prompts", str(prompts), "--out", str(out),
                 "--memory", "off", "--steps", "4", "--cfg", "1.5", "--arm-cfg", "3"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] and [f["corrected"] for f in record["frames"]] == [True] * 3
    assert len(list((out / "frames").glob("acdc_*.png"))) == 3
