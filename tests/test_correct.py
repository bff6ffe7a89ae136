"""SDEdit correction on tiny, locally built Stable Diffusion models (CPU, random weights)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from acdc_core.correct import DiffusionCorrector, grow_mask, load_corrector
from acdc_core.errors import InvalidInputError
from acdc_core.tiny.sd import build_tiny_sd, build_tiny_sdxl

pytestmark = [pytest.mark.floors, pytest.mark.usefixtures("one_thread")]  # floors: also at every dependency's floor (.ci/run)

PROMPTS = ["a photo of a cat", "a dog in a meadow"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> DiffusionCorrector:
    return load_corrector(build_tiny_sd(tmp_path_factory.mktemp("tiny_sd")))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


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


def img2img_pipeline(corrector: DiffusionCorrector, scheduler: str = "ddim"):
    """diffusers' img2img pipeline on the same components, with the same sampler and schedule (trailing spacing)."""
    import diffusers
    from diffusers import StableDiffusionImg2ImgPipeline

    from acdc_core.correct import SCHEDULERS

    pipe = StableDiffusionImg2ImgPipeline(
        vae=corrector.vae, text_encoder=corrector.text_encoders[0], tokenizer=corrector.tokenizers[0],
        unet=corrector.unet, scheduler=getattr(diffusers, SCHEDULERS[scheduler]).from_config(
            corrector.scheduler_config, timestep_spacing="trailing"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the schedule ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("strength, steps, count, first", [
    (0.5, 50, 25, 499), (0.3, 10, 3, 299), (1.0, 6, 6, 999), (0.57, 100, 57, 569), (0.25, 8, 2, 249)])
def test_runs_exactly_the_scheduled_steps_at_or_below_t_prime(sd, images, strength, steps, count, first):
    reported = []
    with unet_calls(sd) as calls:
        sd.correct(images[:1], "a cat", strength=strength, steps=steps,
                   progress=lambda stage, i, total, preview=None: reported.append((stage, i, total)))
    timesteps = [t for t, _ in calls]
    assert len(timesteps) == count and timesteps[0] == first
    assert all((t + 1) / 1000 <= strength for t in timesteps)
    assert timesteps == sorted(timesteps, reverse=True)
    assert reported == [("sdedit", i + 1, count) for i in range(count)]


@pytest.mark.parametrize("strength, steps", [(0.5, 10), (1.0, 4), (0.6, 5)])
def test_matches_diffusers_img2img_pipeline(sd, images, strength, steps):
    # Same schedule as the pipeline: it runs int(steps * strength) of the trailing schedule's last steps,
    # which equals our (t + 1) / T <= t' rule at these settings.
    ours = sd.correct(images, PROMPTS, strength=strength, steps=steps, guidance_scale=7.5, seed=3)
    reference = img2img_pipeline(sd)(PROMPTS, image=images, strength=strength, num_inference_steps=steps,
                                     guidance_scale=7.5, generator=torch.Generator().manual_seed(3), eta=0.0,
                                     output_type="pt").images
    assert ours.shape == images.shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)  # bit-exact on this machine


@pytest.mark.parametrize("scheduler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_every_sampler_matches_the_img2img_pipeline_with_that_scheduler(sd, images, scheduler):
    """The sampler is a parameter (DDIM, the paper's, is the default): each one starts at the first step at or
    below t' exactly as the pipeline does (its begin index), multistep and ancestral samplers included."""
    with unet_calls(sd) as calls:
        ours = sd.correct(images, PROMPTS, strength=0.6, steps=10, guidance_scale=7.5, seed=3, scheduler=scheduler)
    reference = img2img_pipeline(sd, scheduler)(PROMPTS, image=images, strength=0.6, num_inference_steps=10,
                                                guidance_scale=7.5, generator=torch.Generator().manual_seed(3),
                                                output_type="pt").images
    assert len(calls) == 6 and calls[0][0] == 599
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, sd.correct(images, PROMPTS, strength=0.6, steps=10, seed=3))   # not DDIM


def test_an_unknown_sampler_is_refused_naming_those_it_takes(sd, images):
    with pytest.raises(InvalidInputError, match="ddim, euler, euler_ancestral, dpmpp_2m"):
        sd.correct(images, "a cat", strength=0.5, scheduler="heun")


def test_sdxl_shaped_model_matches_diffusers_sdxl_img2img(tmp_path, images):
    from diffusers import DDIMScheduler, StableDiffusionXLImg2ImgPipeline

    sdxl = load_corrector(build_tiny_sdxl(tmp_path / "tiny_sdxl"))
    assert sdxl.architecture == "sdxl" and len(sdxl.text_encoders) == 2
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=sdxl.vae, text_encoder=sdxl.text_encoders[0], text_encoder_2=sdxl.text_encoders[1],
        tokenizer=sdxl.tokenizers[0], tokenizer_2=sdxl.tokenizers[1], unet=sdxl.unet,
        scheduler=DDIMScheduler.from_config(sdxl.scheduler_config, timestep_spacing="trailing"),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    for negative in ("", "blurry"):
        ours = sdxl.correct(images, PROMPTS, strength=0.5, steps=6, seed=1, negative_prompt=negative)
        reference = pipe(PROMPTS, image=images, strength=0.5, num_inference_steps=6, guidance_scale=7.5,
                         negative_prompt=negative or None, generator=torch.Generator().manual_seed(1), eta=0.0,
                         output_type="pt").images
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_seeds(sd, images):
    first = sd.correct(images, PROMPTS, strength=0.4, steps=10, seed=7)
    again = sd.correct(images, PROMPTS, strength=0.4, steps=10, seed=7)
    other = sd.correct(images, PROMPTS, strength=0.4, steps=10, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_output_is_a_plain_tensor_like_the_input(sd, images):
    out = sd.correct(images[:1], "a cat", strength=0.3, steps=4, guidance_scale=1.0)
    assert out.dtype == images.dtype and out.device == images.device and not out.is_inference()
    assert 0.0 <= out.min() and out.max() <= 1.0


# -- masked repair -------------------------------------------------------------------------------------

def square_mask(n: int = 2, size: int = 64, lo: int = 24, hi: int = 40) -> torch.Tensor:
    mask = torch.zeros(n, 1, size, size)
    mask[..., lo:hi, lo:hi] = 1
    return mask


def test_masked_repair_changes_only_the_mask_region(sd, images):
    mask = square_mask()
    with unet_calls(sd) as calls:
        out = sd.correct(images, PROMPTS, strength=0.6, steps=5, mask=mask, mask_dilate=4, mask_feather=4)
    assert calls and all(channels == 4 for _, channels in calls)
    untouched = grow_mask(mask, 4, 4) == 0  # farther than dilate + feather px from the mask
    assert untouched.sum() > 0.5 * untouched.numel()
    assert torch.equal(out[untouched.expand_as(out)], images[untouched.expand_as(images)])
    inside = mask.bool().expand_as(out)
    assert (out[inside] - images[inside]).abs().mean() > 0.01


def test_mask_without_channel_axis_and_ramp_bounds(sd, images):
    blend = grow_mask(square_mask(1), 3, 5)
    assert blend[0, 0, 32, 32] == 1 and blend[0, 0, 32, 24 - 3] == 1       # on the grown mask
    assert 0 < blend[0, 0, 32, 24 - 3 - 5] < 1 and blend[0, 0, 32, 24 - 3 - 6] == 0  # ramp, then exactly 0
    out3 = sd.correct(images, PROMPTS, strength=0.5, steps=4, mask=square_mask()[:, 0])
    out4 = sd.correct(images, PROMPTS, strength=0.5, steps=4, mask=square_mask())
    assert torch.equal(out3, out4)


def test_empty_mask_returns_input_without_work(sd, images):
    with unet_calls(sd) as calls:
        out = sd.correct(images, PROMPTS, strength=0.5, steps=10, mask=torch.zeros(2, 1, 64, 64))
    assert calls == [] and torch.equal(out, images) and out is not images


def test_inpainting_unet_gets_mask_and_masked_image_latents(tmp_path, images):
    inpaint = load_corrector(build_tiny_sd(tmp_path / "tiny_inpaint", inpaint=True))
    assert inpaint.is_inpainting_unet
    mask = square_mask()
    with unet_calls(inpaint) as calls:
        out = inpaint.correct(images, PROMPTS, strength=1.0, steps=3, mask=mask, mask_dilate=0, mask_feather=0)
    assert [channels for _, channels in calls] == [9, 9, 9]
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], images[outside])
    assert not torch.equal(out[~outside], images[~outside])


# -- prompts -------------------------------------------------------------------------------------------

def test_fit_prompt(sd):
    assert sd.text_window == 77 and sd.native_size == (64, 64) and sd.image_multiple == 8
    short = "a golden retriever jumps over a log"
    assert sd.fit_prompt(short) == short
    long = ", ".join(["a small red fox in the green forest at night"] * 12)
    fitted = sd.fit_prompt(long)
    assert long.startswith(fitted) and len(fitted) < len(long)
    assert long[len(fitted)] in " ,"  # cut between words
    assert len(sd.tokenizers[0](fitted).input_ids) <= 77
    assert len(sd.tokenizers[0](long[:len(fitted) + 6]).input_ids) > 77 or long[len(fitted):].strip(", ") == ""


# -- errors and cancellation ---------------------------------------------------------------------------

@pytest.mark.parametrize("strength", [0.0, 1.5, -0.1, float("nan")])
def test_strength_out_of_range(sd, images, strength):
    with pytest.raises(InvalidInputError, match="strength"):
        sd.correct(images, PROMPTS, strength=strength)


def test_strength_too_small_for_the_steps(sd, images):
    with pytest.raises(InvalidInputError, match="no denoising step"):
        sd.correct(images, PROMPTS, strength=0.01, steps=10)


def test_wrong_mask_shape_names_both_shapes(sd, images):
    with pytest.raises(InvalidInputError) as error:
        sd.correct(images, PROMPTS, strength=0.5, mask=torch.ones(2, 1, 32, 32))
    assert "(2, 1, 32, 32)" in str(error.value) and "(2, 3, 64, 64)" in str(error.value)


def test_size_not_a_multiple_of_8(sd):
    with pytest.raises(InvalidInputError, match="multiples of 8"):
        sd.correct(torch.rand(1, 3, 60, 64), "a cat", strength=0.5)


def test_prompt_count_must_match(sd, images):
    with pytest.raises(InvalidInputError, match="prompts"):
        sd.correct(images, ["only one"], strength=0.5)


def test_progress_callback_raising_cancels(sd, images):
    class Cancelled(Exception):
        pass

    def cancel_at_two(stage, step, total, preview=None):
        if step == 2:
            raise Cancelled

    with unet_calls(sd) as calls, pytest.raises(Cancelled):
        sd.correct(images, PROMPTS, strength=0.5, steps=20, progress=cancel_at_two)
    assert len(calls) == 2
