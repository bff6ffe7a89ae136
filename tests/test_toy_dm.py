"""The toy world's diffusion model: its training script (a few steps) and the shipped, trained folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from acdc_core.correct import load_corrector
from acdc_core.correct.sdedit import PixelSpace
from acdc_core.toy import train_dm, world
from acdc_core.toy.defaults import DM_DIR, TOY_SETTINGS
from acdc_core.toy.judge import judge_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def frames(scenes) -> torch.Tensor:
    return torch.from_numpy(np.stack([world.render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255


def test_a_few_training_steps_write_a_folder_the_corrector_loads(tmp_path):
    out = tmp_path / "dm"
    assert train_dm.main(["--out", str(out), "--steps", "2", "--stories", "8", "--eval-frames", "3"]) == 0
    assert not (out / "vae").exists()
    assert sorted(p.name for p in out.rglob("*.safetensors")) == ["diffusion_pytorch_model.safetensors",
                                                                  "model.safetensors"]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["seed"] == 0 and summary["eval_frames"] == 3
    card = (out / "MODEL_CARD.md").read_text()
    assert "--seed 0 --steps 2" in card and "| 2. SDEdit t'=0.5, full prompt |" in card

    dm = load_corrector(out)
    assert isinstance(dm.vae, PixelSpace) and dm.native_size == (32, 32)
    scene = world.sample_scene(np.random.default_rng(0))
    prompt = world.full_prompt(scene)
    assert dm.fit_prompt(prompt) == prompt  # every world prompt fits the text window
    image = frames([scene])
    fixed = dm.correct(image, prompt, strength=0.5, steps=4, guidance_scale=3.0)
    assert fixed.shape == image.shape and not torch.equal(fixed, image)


def test_world_words_are_single_tokens(tmp_path):
    stories = world.split_stories("train", 30)
    tokenizer, _, _ = train_dm._build_models(tmp_path, train_dm.world_words(stories))
    prompt = world.full_prompt(stories[0].scenes[0])  # "Mia, a red rabbit, jumps on the left of ..."
    words = len(prompt.replace(",", " ,").replace(".", " .").split())
    assert len(tokenizer(prompt).input_ids) == words + 2  # one token per word or mark, plus BOS and EOS


@pytest.mark.skipif(not (DM_DIR / "MODEL_CARD.md").is_file(), reason="the trained toy DM is not in this checkout")
def test_shipped_dm_repairs_broken_frames():
    """SDEdit at t' = 0.5 with the full prompt, on held-out frames broken like the card's measurement (wrong
    ears, legs or suns/moons, then a 4x VQ-like degradation). The card measures the repair rate on 200
    frames; this asks for most of 8, a loose bound."""
    dm = load_corrector(DM_DIR)
    assert isinstance(dm.vae, PixelSpace) and dm.native_size == (32, 32)
    weights = sum(p.stat().st_size for p in DM_DIR.rglob("*.safetensors"))
    assert weights <= 15 * 2**20
    scenes = [s for story in world.split_stories("heldout", 2) for s in story.scenes][:8]
    rng = np.random.default_rng(1)
    broken = [world.corrupt(s, rng) for s in scenes]
    damaged = torch.from_numpy(np.stack([world.degrade(world.render(b), rng, blur=0.5, noise=5.0, down=4)
                                         for b in broken])).permute(0, 3, 1, 2).float() / 255
    fixed = dm.correct(damaged, [world.full_prompt(s) for s in scenes], strength=0.5, steps=TOY_SETTINGS.steps,
                       guidance_scale=TOY_SETTINGS.guidance_scale, seed=0)
    before = sum(judge_frame(d, s)["physical_valid"] for d, s in zip(damaged, scenes))
    after = [judge_frame(f, s) for f, s in zip(fixed, scenes)]
    assert before <= 2
    assert sum(r["physical_valid"] for r in after) >= 6
    assert sum(r["matches_prompt"] for r in after) >= 5


def test_the_dm_trains_on_every_complete_wording_of_a_frame(tmp_path):
    """Each frame comes with the memory's full prompt and the three intro wordings, all naming the same facts, so
    the DM is not taught one style (the no-memory ablation then measures missing information, not wording)."""
    stories = world.split_stories("train", 4)
    tokenizer, _, _ = train_dm._build_models(tmp_path, train_dm.world_words(stories))
    images, ids = train_dm.build_dataset(stories, tokenizer)
    scenes = [s for story in stories for s in story.scenes]
    assert images.shape[0] == ids.shape[0] == len(scenes) and ids.shape[1] == 4
    scene = scenes[0]
    wordings = world.descriptions(scene)
    assert wordings[0] == world.full_prompt(scene) and wordings[1:] == tuple(world.intro_prompt(scene, v)
                                                                              for v in range(3))
    assert len(set(wordings)) == 4
    for text in wordings:
        for fact in (scene.name, scene.species, scene.colour, scene.place):
            assert fact in text
        assert ("night" in text) == (scene.time == "night")
    for k, text in enumerate(wordings):   # row k holds wording k, token for token
        assert ids[0, k].tolist() == train_dm._ids(tokenizer, [text])[0].tolist()
        tokens = tokenizer(text).input_ids   # BOS, one token per word or mark, EOS (the unknown token is EOS's id)
        assert len(tokens) == len(text.replace(",", " ,").replace(".", " .").split()) + 2
        assert tokenizer.unk_token_id not in tokens[1:-1]
