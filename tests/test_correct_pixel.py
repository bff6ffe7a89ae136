"""SDEdit with a pixel-space diffusion model (no VAE: the UNet denoises the pixels), on a tiny random one."""
from __future__ import annotations

import contextlib
import json
import shutil

import pytest
import torch

from acdc_core.correct import DiffusionCorrector, grow_mask, load_corrector
from acdc_core.correct.sdedit import PixelSpace
from acdc_core.errors import InvalidInputError, MissingModelFilesError
from acdc_core.tiny.sd import build_tiny_sd

pytestmark = [pytest.mark.floors, pytest.mark.usefixtures("one_thread")]  # floors: also at every dependency's floor (.ci/run)

PROMPTS = ["a red cat in a meadow", "a blue dog at night"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_pixel"), pixel_space=True, sample_size=16)


@pytest.fixture(scope="module")
def dm(folder) -> DiffusionCorrector:
    return load_corrector(folder)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def unet_calls(corrector: DiffusionCorrector):
    """Record (timestep, input channels) of every UNet call."""
    calls: list[tuple[int, int]] = []
    handle = corrector.unet.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((int(args[1]), args[0].shape[1])), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def test_folder_without_vae_loads_as_pixel_space(folder, dm):
    assert not (folder / "vae").exists() and "vae" not in json.loads((folder / "model_index.json").read_text())
    assert isinstance(dm.vae, PixelSpace)
    # Native size = the UNet's sample size in pixels; sides must be multiples of its 2x downsampling.
    assert dm.native_size == (16, 16) and dm.image_multiple == 2 and dm.text_window == 77


@pytest.mark.parametrize("strength, steps, count, first", [(0.5, 20, 10, 499), (1.0, 4, 4, 999), (0.3, 10, 3, 299)])
def test_runs_exactly_the_scheduled_steps_on_the_pixels(dm, images, strength, steps, count, first):
    with unet_calls(dm) as calls:
        out = dm.correct(images, PROMPTS, strength=strength, steps=steps)
    assert [t for t, _ in calls] == [first - k * (1000 // steps) for k in range(count)]
    assert all(channels == 3 for _, channels in calls)  # RGB pixels, no latents
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1


def test_matches_a_plain_ddim_loop_on_pixels(dm, images):
    """The corrector's latents are the pixels in [-1, 1]: the result equals a hand-written DDIM SDEdit."""
    from diffusers import DDIMScheduler

    ours = dm.correct(images, PROMPTS, strength=0.6, steps=5, guidance_scale=4.0, seed=3)

    scheduler = DDIMScheduler.from_config(dm.scheduler_config, timestep_spacing="trailing")
    scheduler.set_timesteps(5)
    timesteps = scheduler.timesteps[scheduler.timesteps < 600]
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(images.shape, generator=generator)
    x = scheduler.add_noise(images * 2 - 1, noise, timesteps[:1].repeat(2))
    tokenizer, encoder = dm.tokenizers[0], dm.text_encoders[0]
    ids = tokenizer(["", ""] + PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = encoder(ids)[0]
        for t in timesteps:
            uncond, cond = dm.unet(torch.cat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
            x = scheduler.step(uncond + 4.0 * (cond - uncond), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ours, (x / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_same_seed_same_image(dm, images):
    first = dm.correct(images, PROMPTS, strength=0.5, steps=10, seed=5)
    assert torch.equal(first, dm.correct(images, PROMPTS, strength=0.5, steps=10, seed=5))
    assert not torch.equal(first, dm.correct(images, PROMPTS, strength=0.5, steps=10, seed=6))


def test_masked_correction_leaves_pixels_outside_the_grown_mask_exactly(dm, images):
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 6:10, 7:11] = 1
    out = dm.correct(images, PROMPTS, strength=0.8, steps=5, mask=mask, mask_dilate=1, mask_feather=1)
    untouched = (grow_mask(mask, 1, 1) == 0).expand_as(out)
    assert untouched.float().mean() > 0.5
    assert torch.equal(out[untouched], images[untouched])
    inside = mask.bool().expand_as(out)
    assert (out[inside] - images[inside]).abs().mean() > 0.01
    # No mask growth at all: exactly the painted pixels may change (one latent cell = one pixel).
    tight = dm.correct(images, PROMPTS, strength=0.8, steps=5, mask=mask, mask_dilate=0, mask_feather=0)
    assert torch.equal(tight[~inside], images[~inside])


def test_sides_must_be_multiples_of_the_unet_downsampling(dm):
    with pytest.raises(InvalidInputError, match="multiples of 2"):
        dm.correct(torch.rand(1, 3, 15, 16), "a cat", strength=0.5)


def test_missing_files_are_named_and_no_vae_is_asked_for(folder, tmp_path):
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(MissingModelFilesError) as error:
        load_corrector(broken)
    message = str(error.value)
    assert "unet/diffusion_pytorch_model.safetensors" in message and "tokenizer/vocab.json + merges.txt" in message
    assert "vae" not in message and "text_encoder/" not in message


def test_latent_unet_without_vae_entry_is_refused_clearly(tmp_path):
    folder = build_tiny_sd(tmp_path / "latent")
    index = json.loads((folder / "model_index.json").read_text())
    del index["vae"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MissingModelFilesError, match="lists no vae.*4 input and 4 output channels"):
        load_corrector(folder)
