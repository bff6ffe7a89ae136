"""The toy video world's video diffusion model: its trainer (a few steps) writes a pixel-space AnimateDiff folder that
``load_animatediff`` loads with its defaults, and the video SDEdit loop corrects windows with it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from acdc_core.correct.sdedit import PixelSpace
from acdc_core.correct.video import AnimateDiffCorrector, check_animatediff, load_animatediff
from acdc_core.tiny.sd import write_tiny_clip_tokenizer
from acdc_core.toy import train_video_dm, video_world

pytestmark = pytest.mark.usefixtures("one_thread")


def window(clip: video_world.Clip, offset: int = 0) -> torch.Tensor:
    """Frames offset .. offset + 7 of a clip as [8, 3, 32, 32] in [0, 1]."""
    frames = video_world.render_clip(clip)[offset:offset + video_world.WINDOW]   # [F, H, W, 3] uint8
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255            # -> [F, 3, H, W]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("video-dm") / "dm"
    assert train_video_dm.main(["--out", str(out), "--image-steps", "2", "--image-batch-size", "2", "--steps", "2",
                                "--clips", "8", "--batch-size", "1",
                                "--eval-clips", "1", "--eval-steps", "4", "--eval-guidance", "3", "--no-judge"]) == 0
    return out


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """Three 3-step trainings in memory: seed 0 twice, seed 1 once."""
    base = tmp_path_factory.mktemp("video-dm-fits")
    return [train_video_dm.fit(base / f"run{i}", seed=seed, image_steps=2, image_batch_size=2, steps=3, batch_size=1,
                               n_clips=4, log_every=0)
            for i, seed in enumerate((0, 0, 1))]


def test_a_few_training_steps_write_a_folder_load_animatediff_loads_with_its_defaults(folder):
    assert not (folder / "vae").exists()
    assert "vae" not in json.loads((folder / "model_index.json").read_text())
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors")) == [
        "motion_adapter/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors"]
    assert sum(p.stat().st_size for p in folder.rglob("*.safetensors")) <= 15 * 2**20
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["seed"] == 0 and summary["split_max_difference"] == 0.0
    assert summary["unet_parameters"] + summary["motion_parameters"] + summary["text_parameters"] <= 3_000_000
    assert set(summary["results"]["cfg_3"]) == {"degraded", "broken"} and summary["eval_clips"] == 1
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--image-steps 2 --image-batch-size 2 --steps 2" in card and "| 3 | " in card and "load_animatediff" in card

    assert check_animatediff(folder, folder / "motion_adapter")["motion_max_seq_length"] == video_world.WINDOW
    dm = load_animatediff(folder, folder / "motion_adapter")
    assert isinstance(dm, AnimateDiffCorrector) and isinstance(dm.vae, PixelSpace)
    assert dm.native_size == (32, 32) and dm.max_frames == video_world.WINDOW
    # Trained with the schedule load_animatediff samples with by default: nothing was replaced.
    assert dm.scheduler_config["beta_schedule"] == "linear" == train_video_dm.scheduler_config()["beta_schedule"]
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["beta_schedule"] == "linear"


def test_stage_two_trains_the_motion_modules_alone_unless_told_to_train_everything(tmp_path):
    def fit(name, **options):
        result = train_video_dm.fit(tmp_path / name, seed=0, image_steps=2, image_batch_size=2, batch_size=1,
                                    n_clips=4, log_every=0, **options)
        return result["motion_unet"].state_dict(), result["summary"]

    before, _ = fit("stage1", steps=0)
    frozen, summary = fit("frozen", steps=2)
    joint, _ = fit("joint", steps=2, freeze_spatial=False)
    motion = [k for k in before if "motion_modules" in k]
    spatial = [k for k in before if "motion_modules" not in k]
    assert motion and spatial and summary["freeze_spatial"] and summary["image_fraction"] == 0.0
    assert all(torch.equal(before[k], frozen[k]) for k in spatial)
    assert not all(torch.equal(before[k], frozen[k]) for k in motion)
    assert not all(torch.equal(before[k], joint[k]) for k in spatial)


def test_the_video_sdedit_corrects_a_window_and_is_seeded(folder):
    dm = load_animatediff(folder, folder / "motion_adapter")
    clip = video_world.split_clips("heldout", 1)[0]
    given = window(clip, 8)
    prompt = video_world.prompt(clip, 2)
    assert dm.fit_prompt(prompt) == prompt  # every wording fits the text window
    fixed = dm.correct_video(given, prompt, strength=0.5, steps=4, guidance_scale=3.0, seed=0)
    assert fixed.shape == (video_world.WINDOW, 3, 32, 32) and fixed.dtype == torch.float32
    assert float(fixed.min()) >= 0 and float(fixed.max()) <= 1 and not torch.equal(fixed, given)
    assert torch.equal(fixed, dm.correct_video(given, prompt, strength=0.5, steps=4, guidance_scale=3.0, seed=0))
    assert not torch.equal(fixed, dm.correct_video(given, prompt, strength=0.5, steps=4, guidance_scale=3.0, seed=1))


def test_the_saved_unet_and_adapter_give_the_trained_models_prediction_exactly(fits, tmp_path):
    trained = fits[0]
    train_video_dm.save(tmp_path, trained["motion_unet"], trained["text_encoder"], trained["unet_config"],
                        trained["adapter_config"])
    write_tiny_clip_tokenizer(tmp_path / "tokenizer", words=train_video_dm.video_words(),
                              model_max_length=train_video_dm.TEXT_TOKENS)
    dm = load_animatediff(tmp_path, tmp_path / "motion_adapter")
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn((2, 3, video_world.WINDOW, 32, 32), generator=generator)
    t = torch.tensor([999, 250])
    ids = trained["tokenizer"](["Leo, a blue cat, runs back and forth across a beach at night.", ""],
                               padding="max_length", max_length=train_video_dm.TEXT_TOKENS, return_tensors="pt").input_ids
    with torch.inference_mode():
        embeds = trained["text_encoder"](ids)[0]
        assert torch.equal(embeds, dm.text_encoder(ids)[0])
        embeds = embeds.repeat_interleave(video_world.WINDOW, dim=0)
        ours = trained["motion_unet"](sample, t, encoder_hidden_states=embeds).sample
        theirs = dm.unet(sample, t, encoder_hidden_states=embeds).sample
    assert torch.equal(ours, theirs)
    assert train_video_dm.check_split(tmp_path, trained["motion_unet"], trained["text_encoder"],
                                      trained["tokenizer"]) == 0.0


def test_the_same_seed_trains_the_same_weights(fits):
    def weights(run):
        return {**run["motion_unet"].state_dict(), **{f"text.{k}": v for k, v in run["text_encoder"].state_dict().items()}}

    first, again, other = (weights(run) for run in fits)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    assert fits[0]["summary"]["final_loss"] == fits[1]["summary"]["final_loss"]


def test_every_prompt_word_is_one_token(tmp_path):
    from transformers import CLIPTokenizer

    folder = write_tiny_clip_tokenizer(tmp_path / "tokenizer", words=train_video_dm.video_words(),
                                       model_max_length=train_video_dm.TEXT_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    for clip in video_world.split_clips("train", 12):
        for variant in range(len(video_world.PHRASINGS)):
            prompt = video_world.prompt(clip, variant)
            marks = len(prompt.replace(",", " ,").replace(".", " .").split())
            assert len(tokenizer(prompt).input_ids) == marks + 2 <= train_video_dm.TEXT_TOKENS, prompt


@pytest.mark.parametrize("kind", train_video_dm.BREAKAGES)
def test_a_broken_frame_differs_from_the_true_one_and_only_it(kind):
    clip = video_world.split_clips("heldout", 3)[2]
    states = clip.states()[:video_world.WINDOW]
    broken = train_video_dm.break_window(states, 3, kind, np.random.default_rng(0))
    assert [a == b for a, b in zip(states, broken)] == [True] * 3 + [False] + [True] * 4
    assert not np.array_equal(video_world.render_frame(states[3]), video_world.render_frame(broken[3]))
