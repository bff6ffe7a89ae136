"""The Show-o ARM family (``acdc_core.arm.showo.ShowoARM``) on a tiny random folder in the published layout:
loading, the story sequence, the cache as a pure speed-up, swaps, seeds, token-level inpainting, the context
window, bad folders, and a whole story through the CLI. Parity of the pieces with upstream: test_arm_showo.py."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from acdc_core.arm import ARMContext, SamplingSettings, check_arm_folder, load_arm
from acdc_core.errors import ACDCError
from acdc_core.tiny.showo import build_tiny_showo
from tests.fakes import LMCalls, gen, other_tokens, sample_story

PROMPTS = ("Mia is a red rabbit. She stands on the left of a meadow by day.", "She jumps.", "She hops to the right.")
CFG = SamplingSettings(guidance_scale=2.0, temperature=1.0, maskgit_steps=4)
SLOT, N = 17, 64          # the tiny folder's text slot (max_text_len 16 + 1) and tokens per frame
CHUNK = SLOT + N + 2      # a frame in the sequence: slot, <|soi|>, codes, <|eoi|>


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_showo(tmp_path_factory.mktemp("tiny_showo"), seed=0)


@pytest.fixture(scope="module")
def arm(folder):
    return load_arm(folder)


def test_a_published_layout_folder_is_detected_and_loaded(folder, arm):
    assert check_arm_folder(folder)[1] == "showo" and arm.family == "showo"
    assert (arm.image_size, arm.tokens_per_image, arm.codebook_size) == ((32, 32), N, 64)
    assert arm.context_window == 2048


def test_the_story_sequence_is_the_frames_t2i_prompts_and_blocks_in_order(arm):
    ctx = sample_story(arm, PROMPTS, 2, CFG)
    key = arm.sequence_key(ctx, PROMPTS[2], cfg=True)
    assert key.shape == (2, 2 * CHUNK + SLOT)
    v = arm.vocab
    for row in key:
        for k in range(2):
            block = row[k * CHUNK + SLOT:(k + 1) * CHUNK]
            assert block[0] == v.soi and block[-1] == v.eoi
            assert torch.equal(block[1:-1], ctx.chunks[k].tokens[0] + v.image_offset)     # frames in both rows
        assert row[SLOT - 1] == v.eos and (row[:SLOT] == v.t2i).sum() == 1
    uncond_text = key[1][key[1] < v.llm_vocab_size]
    assert set(uncond_text.tolist()) == {v.bos, v.eos}                                  # every prompt emptied


def test_same_seed_same_frame_other_seed_other_frame(arm):
    ctx = sample_story(arm, PROMPTS, 1, CFG)
    a = arm.sample_chunk(ctx, PROMPTS[1], settings=CFG, generator=gen(5))
    b = arm.sample_chunk(ARMContext(chunks=ctx.chunks), PROMPTS[1], settings=CFG, generator=gen(5))
    c = arm.sample_chunk(ctx, PROMPTS[1], settings=CFG, generator=gen(6))
    assert a.shape == (1, N) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < 64
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_context_is_run_once_per_frame_and_the_cache_never_changes_a_result(arm):
    ctx = sample_story(arm, PROMPTS, 2, CFG)
    with LMCalls(arm.lm, "input_ids") as calls:
        cached = arm.sample_chunk(ctx, PROMPTS[2], settings=CFG, generator=gen(9))
    fresh = arm.sample_chunk(ARMContext(chunks=ctx.chunks), PROMPTS[2], settings=CFG, generator=gen(9))
    assert torch.equal(cached, fresh)
    # Frame 2's prefix was cached by its own sampling: only frame 2's block and frame 3's prompt are new; then
    # every MaskGIT step runs just frame 3's block, for both CFG rows.
    assert calls.calls == [(2, N + 2 + SLOT)] + [(2, N + 2)] * CFG.maskgit_steps


def test_after_a_swap_only_the_swapped_frame_onward_runs_again(arm):
    ctx = sample_story(arm, PROMPTS, 2, CFG)
    arm.sample_chunk(ctx, PROMPTS[2], settings=CFG, generator=gen(1))                 # the memo covers frame 3's prefix
    swapped = ctx.swap(1, other_tokens(arm, ctx.chunks[1].tokens))
    with LMCalls(arm.lm, "input_ids") as calls:
        after = arm.sample_chunk(swapped, PROMPTS[2], settings=CFG, generator=gen(1))
    # From frame 2's <|soi|> on: every position of a block sees the whole block, so its <|soi|> (unchanged as
    # an id) changes with the codes and cannot be kept; everything before the block is kept.
    assert calls.calls[0] == (2, N + 2 + SLOT)
    logits = arm.next_token_logits(swapped, PROMPTS[2], guidance_scale=CFG.guidance_scale)
    torch.testing.assert_close(logits, arm.next_token_logits(ARMContext(chunks=swapped.chunks), PROMPTS[2],
                                                             guidance_scale=CFG.guidance_scale), rtol=0, atol=1e-6)
    assert torch.equal(after, arm.sample_chunk(ARMContext(chunks=swapped.chunks), PROMPTS[2], settings=CFG,
                                               generator=gen(1)))


def test_known_codes_are_kept_token_level_inpainting_and_previews_grey_the_rest(folder):
    arm = load_arm(folder, previews=True)
    ctx = sample_story(arm, PROMPTS, 1, CFG)
    known = torch.full((N,), -1)
    known[:8] = ctx.chunks[0].tokens[0, :8]
    shown = []
    got = arm.sample_chunk(ctx, PROMPTS[1], settings=CFG, generator=gen(3), known=known,
                           progress=lambda stage, step, total, preview=None: shown.append((step, total, preview)))
    assert torch.equal(got[0, :8], known[:8])
    assert [(s, t) for s, t, _ in shown] == [(k, 4) for k in range(1, 5)]
    first = shown[0][2]
    assert first.shape == (3, 32, 32) and bool((first == 0.5).all(0).any())            # grey where still masked
    with pytest.raises(ACDCError, match="known codes"):
        arm.sample_chunk(ctx, PROMPTS[1], settings=CFG, generator=gen(3), known=torch.full((N,), 64))


def test_a_story_longer_than_the_window_keeps_frame_1_and_the_latest(tmp_path):
    arm = load_arm(build_tiny_showo(tmp_path / "small", seed=0, max_position_embeddings=3 * CHUNK + 10))
    ctx = sample_story(arm, PROMPTS, 3, CFG)
    assert arm.fit_context(ARMContext(chunks=ctx.chunks[:2]), "She barks.") == (0, 1)
    assert arm.fit_context(ctx, "She barks.") == (0, 2)       # 4 frames do not fit in 259 positions; 3 do


def test_bad_folders_and_settings_are_refused_before_generation(folder, tmp_path, arm):
    with pytest.raises(ACDCError, match="not one of the janus family"):
        check_arm_folder(folder, family="janus")
    no_vq = tmp_path / "no_vq"
    shutil.copytree(folder, no_vq)
    shutil.rmtree(no_vq / "magvitv2")
    with pytest.raises(ACDCError, match="magvitv2/pytorch_model.safetensors"):
        check_arm_folder(no_vq)
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "pytorch_model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ACDCError, match="pytorch_model"):
        check_arm_folder(pickled)
    clip = tmp_path / "clip"
    shutil.copytree(folder, clip)
    config = json.loads((clip / "config.json").read_text())
    (clip / "config.json").write_text(json.dumps({**config, "w_clip_vit": True}))
    with pytest.raises(ACDCError, match="CLIP-ViT"):
        load_arm(clip)
    from acdc_core.tiny.janus import build_tiny_janus
    janus = build_tiny_janus(tmp_path / "janus", seed=0)
    with pytest.raises(ACDCError, match="not one of the showo family"):
        check_arm_folder(janus, family="showo")                            # and the reverse, above
    with pytest.raises(ACDCError, match="is 64x64 .* but the ARM works at 32x32"):
        arm.encode(torch.rand(1, 3, 64, 64))                               # a size the checkpoint was not made for
    ctx = ARMContext()
    with pytest.raises(ACDCError, match="MaskGIT steps must be a whole number >= 1"):
        arm.sample_chunk(ctx, PROMPTS[0], settings=SamplingSettings(maskgit_steps=0), generator=gen(0))
    with pytest.raises(ACDCError, match="no top-k or top-p"):
        arm.sample_chunk(ctx, PROMPTS[0], settings=SamplingSettings(top_k=5), generator=gen(0))


def test_a_whole_story_runs_through_the_cli(folder, tmp_path):
    from acdc_core.cli import main
    from acdc_core.toy.defaults import DM_DIR

    prompts = tmp_path / "story.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    assert main(["story", "--arm", str(folder), "--dm", str(DM_DIR), "--prompts", str(prompts), "--out", str(out),
                 "--memory", "off", "--steps", "4", "--cfg", "1.5", "--arm-cfg", "2", "--maskgit-steps", "4"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] and [f["corrected"] for f in record["frames"]] == [True] * 3
    assert len(list((out / "frames").glob("acdc_*.png"))) == 3


def test_the_all_in_one_node_takes_showos_maskgit_steps(arm, standalone_host):
    import nodes
    from acdc_core.state import StorySettings
    from acdc_core.story import run_story
    from nodes.loaders import managed

    node = nodes.NODE_CLASS_MAPPINGS["ACDC_Story"]()
    out = node.run(managed(arm, "tiny-showo"), "\n".join(PROMPTS[:2]), 7, 0.5, 4, 1.5, "none", 2.0, 1.0, 0, 0.8, "",
                   -1, -1, "ddim", maskgit_steps=4)
    state = out["result"][0]
    engine = run_story(PROMPTS[:2], arm, None, None, StorySettings(sampling=CFG, seed=7, correct_frames=0))
    assert [torch.equal(a.tokens_before, b.tokens_before) for a, b in zip(state.records, engine.records)] == [True] * 2
