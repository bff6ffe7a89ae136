"""Video window correction with AnimateDiff on a tiny, locally built model (CPU, random weights)."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil

import pytest
import torch

from acdc_core.correct.video import (V1_5_2_CONFIG, AnimateDiffCorrector, VideoCorrector, check_motion_adapter,
                                     load_animatediff, load_motion_adapter, motion_adapter_config, video_to_frames)
from acdc_core.errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from acdc_core.tiny.animatediff import build_tiny_animatediff, original_names, write_motion_module_file
from acdc_core.weights import on_meta

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a golden retriever jumps over a log"
TINY_SINGLE_FILE = {"motion_num_attention_heads": 4, "motion_norm_num_groups": 2}  # what a tiny file cannot say


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_animatediff(tmp_path_factory.mktemp("tiny_animatediff"))


@pytest.fixture(scope="module")
def video(folder) -> AnimateDiffCorrector:
    return load_animatediff(folder, folder / "motion_adapter")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def rechunked(corrector: AnimateDiffCorrector, chunk: int) -> AnimateDiffCorrector:
    """The same modules, another VAE chunk size."""
    return AnimateDiffCorrector(unet=corrector.unet, vae=corrector.vae, text_encoder=corrector.text_encoder,
                                tokenizer=corrector.tokenizer, scheduler_config=corrector.scheduler_config,
                                decode_chunk_size=chunk)


@contextlib.contextmanager
def calls(module: torch.nn.Module):
    """Record (timestep, input shape) of every forward call of ``module``."""
    seen: list[tuple[int, tuple[int, ...]]] = []

    def record(module, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep", -1)
        seen.append((int(timestep) if torch.is_tensor(timestep) and timestep.numel() == 1 else -1,
                     tuple(args[0].shape)))

    handle = module.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def pipeline(corrector: AnimateDiffCorrector, scheduler: str = "ddim"):
    """diffusers' AnimateDiffVideoToVideoPipeline on the same modules, sampler and (trailing) schedule."""
    import diffusers

    from acdc_core.correct import SCHEDULERS

    pipe = diffusers.AnimateDiffVideoToVideoPipeline(
        vae=corrector.vae, text_encoder=corrector.text_encoder, tokenizer=corrector.tokenizer, unet=corrector.unet,
        motion_adapter=None, scheduler=getattr(diffusers, SCHEDULERS[scheduler]).from_config(
            corrector.scheduler_config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, frames, *, strength, steps, seed, chunk, output_type="pt", negative_prompt=None):
    height, width = frames.shape[-2:]
    return pipe(prompt=PROMPT, video=frames[None], strength=strength, num_inference_steps=steps, guidance_scale=7.5,
                negative_prompt=negative_prompt, generator=torch.Generator().manual_seed(seed), eta=0.0,
                height=height, width=width, decode_chunk_size=chunk, output_type=output_type).frames


# -- the protocol ---------------------------------------------------------------------------------------

def test_meets_the_video_corrector_protocol(video):
    assert isinstance(video, VideoCorrector) and video.kind == "animatediff"
    assert video.native_frames == 16 and video.max_frames == 32          # the tiny adapter's table, as v1-5-2's
    assert video.native_size == (64, 64) and video.image_multiple == 8 and video.text_window == 77
    assert video.schedulers[0] == "ddim"
    assert set(video.modules()) == {"unet", "vae", "text_encoder_0"}
    assert type(video.unet).__name__ == "UNetMotionModel"
    assert video.scheduler_config["beta_schedule"] == "linear"           # AnimateDiff's training betas
    assert video.fit_prompt(PROMPT) == PROMPT


# -- the same result as diffusers' pipeline --------------------------------------------------------------

@pytest.mark.parametrize("strength, steps, chunk", [(0.5, 10, 3), (1.0, 4, 8), (0.6, 5, 16)])
def test_matches_diffusers_animatediff_video_to_video(video, frames, strength, steps, chunk):
    """Where the pipeline's int(steps * strength) equals our count of steps at or below t' (these settings), the
    denoised latents are bit-identical: decoding the pipeline's latents our way gives our frames exactly. The
    decoded frames differ by float32 rounding only (about 1e-6), for one documented reason: the pipeline un-scales
    the latents as (1 / 0.18215) * x before the VAE decoder, we as x / 0.18215 (the image corrector's rule, which
    is SD img2img's): decoding the pipeline's latents its way gives its frames exactly."""
    corrector = rechunked(video, chunk)
    with calls(video.unet) as unet_calls:
        ours = corrector.correct_video(frames, PROMPT, strength=strength, steps=steps, seed=3)
    assert len(unet_calls) == int(steps * strength)
    pipe = pipeline(video)
    latents = video_to_frames(run_pipeline(pipe, frames, strength=strength, steps=steps, seed=3, chunk=chunk,
                                           output_type="latent"))
    reference = run_pipeline(pipe, frames, strength=strength, steps=steps, seed=3, chunk=chunk)[0]
    scale = video.vae.config.scaling_factor
    with torch.inference_mode():
        our_decode = torch.cat([corrector._sd._decode(part) for part in latents.split(chunk)])
        its_decode = torch.cat([(video.vae.decode(part * (1 / scale))[0] / 2 + 0.5).clamp(0, 1)
                                for part in latents.split(chunk)])
    assert torch.equal(ours, our_decode)                                          # the SDEdit loop: bit for bit
    assert torch.equal(reference, its_decode)                                     # the only difference: un-scaling
    assert ours.shape == reference.shape == frames.shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)                # observed: about 1.2e-6


@pytest.mark.parametrize("scheduler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_every_sampler_matches_the_pipeline_with_that_scheduler(video, frames, scheduler):
    ours = video.correct_video(frames[:4], PROMPT, strength=0.6, steps=5, seed=1, scheduler=scheduler,
                               negative_prompt="blurry")
    pipe = pipeline(video, scheduler)
    reference = run_pipeline(pipe, frames[:4], strength=0.6, steps=5, seed=1, chunk=video.decode_chunk_size,
                             negative_prompt="blurry")[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


# -- steps, seeds, cancel ---------------------------------------------------------------------------------

def test_runs_exactly_the_steps_at_or_below_t_prime_in_one_guided_call_each(video, frames):
    reported = []
    with calls(video.unet) as unet_calls, calls(video.vae.decoder) as decodes:
        video.correct_video(frames[:4, :, :32, :32], PROMPT, strength=0.5, steps=50,
                            progress=lambda stage, i, total, preview=None: reported.append((stage, i, total)))
    assert len(unet_calls) == 25 and unet_calls[0][0] == 499 and unet_calls[-1][0] == 19
    assert {shape for _, shape in unet_calls} == {(2, 4, 4, 4, 4)}   # [uncond; cond] x channels x frames x h x w
    assert reported == [("correct", i + 1, 25) for i in range(25)]
    assert len(decodes) == 1                                          # 4 frames, one chunk of up to 8
    with calls(video.unet) as unguided:
        video.correct_video(frames[:2], PROMPT, strength=0.3, steps=10, guidance_scale=1.0)
    assert [t for t, _ in unguided] == [299, 199, 99] and unguided[0][1][0] == 1


def test_seeds(video, frames):
    first = video.correct_video(frames[:4], PROMPT, strength=0.5, steps=6, seed=7)
    again = video.correct_video(frames[:4], PROMPT, strength=0.5, steps=6, seed=7)
    other = video.correct_video(frames[:4], PROMPT, strength=0.5, steps=6, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_the_motion_modules_tie_the_frames_together(video, frames):
    """Frame 0 corrected alone differs from frame 0 corrected in a window: the frames attend to each other."""
    alone = video.correct_video(frames[:1], PROMPT, strength=0.5, steps=4, seed=2)
    windowed = video.correct_video(frames[:4], PROMPT, strength=0.5, steps=4, seed=2)
    assert not torch.allclose(alone[0], windowed[0], atol=1e-4)


def test_a_raising_progress_cancels_between_steps(video, frames):
    class Cancelled(Exception):
        pass

    def cancel_at_two(stage, step, total, preview=None):
        if step == 2:
            raise Cancelled

    with calls(video.unet) as unet_calls, pytest.raises(Cancelled):
        video.correct_video(frames[:4], PROMPT, strength=0.5, steps=20, progress=cancel_at_two)
    assert len(unet_calls) == 2


def test_output_is_a_new_plain_tensor_and_the_input_is_untouched(video, frames):
    given = frames[:4].clone()
    out = video.correct_video(given, PROMPT, strength=0.3, steps=4)
    assert torch.equal(given, frames[:4])
    assert out.shape == given.shape and out.dtype == given.dtype and not out.is_inference()
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_a_window_longer_than_the_native_frames_is_corrected_with_a_warning(video, caplog):
    window = torch.rand(17, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING, logger="acdc_core.correct.video"):
        out = video.correct_video(window, PROMPT, strength=1.0, steps=1)
    assert out.shape == window.shape
    assert "17-frame window" in caplog.text and "trained on 16" in caplog.text


# -- bad requests: a clear error before any model runs -----------------------------------------------------

@pytest.mark.parametrize("given, message", [
    (torch.rand(3, 64, 64), r"frames must be a float tensor \[F, 3, H, W\]"),
    (torch.rand(1, 4, 3, 64, 64), r"frames must be a float tensor \[F, 3, H, W\]"),
    (torch.rand(4, 4, 64, 64), r"frames must be a float tensor \[F, 3, H, W\]"),
    (torch.zeros(4, 3, 64, 64, dtype=torch.uint8), r"frames must be a float tensor"),
    (torch.rand(4, 3, 64, 64) * 2 - 1, r"values in \[0, 1\]"),
    (torch.full((4, 3, 64, 64), float("nan")), r"values in \[0, 1\]"),
    (torch.rand(33, 3, 64, 64), r"33 frames .* at most 32 .* windows of 16"),
    (torch.rand(4, 3, 60, 64), r"multiples of 8; resize to e\.g\. 56x64 \(acdc_core\.images\.resize_to\)"),
])
def test_bad_frames_are_refused_before_any_model_runs(video, given, message):
    with calls(video.unet) as unet_calls, calls(video.vae) as vae_calls, \
            calls(video.text_encoder) as text_calls, pytest.raises(InvalidInputError, match=message):
        video.correct_video(given, PROMPT, strength=0.5)
    assert unet_calls == vae_calls == text_calls == []


@pytest.mark.parametrize("options, message", [
    ({"prompt": ["a cat", "a dog"]}, "prompt must be one string"),
    ({"negative_prompt": None}, "negative_prompt must be one string"),
    ({"strength": 0.0}, "strength"),
    ({"strength": 0.01, "steps": 10}, "no denoising step"),
    ({"scheduler": "heun"}, "ddim, euler"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"seed": -1}, "seed"),
])
def test_bad_settings_are_refused_before_any_model_runs(video, frames, options, message):
    request = {"prompt": PROMPT, "strength": 0.5, **options}
    with calls(video.unet) as unet_calls, calls(video.vae) as vae_calls, pytest.raises(InvalidInputError, match=message):
        video.correct_video(frames[:4], request.pop("prompt"), **request)
    assert unet_calls == vae_calls == []


# -- loading ------------------------------------------------------------------------------------------------

def test_an_original_layout_single_file_loads_as_the_folder_does(folder, tmp_path):
    from diffusers import MotionAdapter

    path = write_motion_module_file(folder / "motion_adapter", tmp_path / "mm_tiny.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as file:
        keys = list(file.keys())
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe" in k for k in keys)
    assert not any(".attn1." in k for k in keys)
    from_file = load_motion_adapter(path, **TINY_SINGLE_FILE)
    from_folder = MotionAdapter.from_pretrained(folder / "motion_adapter", local_files_only=True)
    expected = {k: v for k, v in from_folder.config.items() if not k.startswith("_")}
    assert {k: from_file.config[k] for k in expected} == expected
    ours, theirs = from_file.state_dict(), from_folder.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # diffusers' own single-file loader, given the config folder offline, reads the same weights.
    library = MotionAdapter.from_single_file(str(path), config=str(folder / "motion_adapter"), local_files_only=True)
    assert all(torch.equal(library.state_dict()[k], ours[k]) for k in ours)


@pytest.mark.parametrize("edit, length, mid", [({}, 32, True), ({"motion_max_seq_length": 24,
                                                                 "use_motion_mid_block": False}, 24, False)])
def test_a_single_file_config_is_read_from_its_shapes_at_the_published_size(edit, length, mid):
    """v1-5-2's config (shipped as data) and v1's (24 positions, no mid block) come back from the shapes of an
    original-layout file alone (built on the meta device: no memory)."""
    from diffusers import MotionAdapter

    config = {k: v for k, v in json.loads(V1_5_2_CONFIG.read_text()).items() if not k.startswith("_")}
    config.update(edit)
    model = on_meta(lambda: MotionAdapter.from_config(config))
    shapes = {new: tuple(t.shape) for name, t in model.state_dict().items() for new in original_names(name)}
    derived = motion_adapter_config(shapes)
    mid_only = {"motion_mid_block_layers_per_block", "motion_transformer_layers_per_mid_block"}
    assert derived == {k: v for k, v in config.items() if v is not None and (mid or k not in mid_only)}
    assert derived["motion_max_seq_length"] == length and derived["use_motion_mid_block"] is mid


def test_a_single_file_animatediff_corrects_as_the_folder_one(folder, video, frames, tmp_path):
    path = write_motion_module_file(folder / "motion_adapter", tmp_path / "mm_tiny.safetensors")
    single = load_animatediff(folder, path, **TINY_SINGLE_FILE)
    assert torch.equal(single.correct_video(frames[:4], PROMPT, strength=0.5, steps=4),
                       video.correct_video(frames[:4], PROMPT, strength=0.5, steps=4))


def test_the_motion_unet_holds_the_unet_and_the_adapter_weights(folder, video):
    """Loading skips random initialisation (every weight is copied in): the result equals a plain from_unet2d."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    plain = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True),
                                        MotionAdapter.from_pretrained(folder / "motion_adapter", local_files_only=True))
    ours, theirs = video.unet.state_dict(), plain.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_beta_schedule_none_keeps_the_base_models(folder):
    kept = load_animatediff(folder, folder / "motion_adapter", beta_schedule=None)
    assert kept.scheduler_config["beta_schedule"] == "scaled_linear"
    with pytest.raises(InvalidInputError, match="beta_schedule"):
        load_animatediff(folder, folder / "motion_adapter", beta_schedule="cosine")


def test_a_pickle_motion_module_is_refused(folder, tmp_path):
    ckpt = tmp_path / "mm_sd_v15_v2.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InvalidInputError, match=r"pickle.*\.safetensors release"):
        load_animatediff(folder, ckpt)
    bad = tmp_path / "pickled_adapter"
    shutil.copytree(folder / "motion_adapter", bad)
    (bad / "diffusion_pytorch_model.safetensors").rename(bad / "diffusion_pytorch_model.bin")
    with pytest.raises(InvalidInputError, match="diffusion_pytorch_model.bin: pickle"):
        check_motion_adapter(bad)


def test_missing_files_are_named(folder, tmp_path):
    with pytest.raises(MissingModelFilesError, match="motion adapter not found"):
        load_animatediff(folder, tmp_path / "nowhere")
    no_config = tmp_path / "no_config"
    shutil.copytree(folder / "motion_adapter", no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(MissingModelFilesError, match="missing config.json"):
        load_animatediff(folder, no_config)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder / "motion_adapter", no_weights)
    (no_weights / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingModelFilesError, match="diffusion_pytorch_model.safetensors"):
        load_animatediff(folder, no_weights)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((folder / "motion_adapter" / "diffusion_pytorch_model.safetensors").read_bytes()[:5000])
    with pytest.raises(InvalidInputError, match="truncated"):
        load_animatediff(folder, truncated)


def test_a_file_that_is_not_a_motion_module_is_named(folder):
    with pytest.raises(UnknownModelFamilyError, match="not an AnimateDiff motion module"):
        load_animatediff(folder, folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_an_adapter_that_does_not_fit_the_unet_names_both(folder, tmp_path):
    from diffusers import MotionAdapter

    MotionAdapter(block_out_channels=(16, 32, 32), motion_layers_per_block=2, motion_norm_num_groups=2,
                  motion_num_attention_heads=4).save_pretrained(tmp_path / "other_adapter")
    with pytest.raises(InvalidInputError, match=r"does not fit") as error:
        load_animatediff(folder, tmp_path / "other_adapter")
    assert "(16, 32, 32)" in str(error.value) and "(32, 64)" in str(error.value)


def test_an_sdxl_model_is_refused(folder, tmp_path):
    from acdc_core.tiny.sd import build_tiny_sdxl

    sdxl = build_tiny_sdxl(tmp_path / "tiny_sdxl")   # its tiny UNet has the tiny adapter's blocks
    with pytest.raises(UnknownModelFamilyError, match="'sdxl' model; AnimateDiff video correction runs SD1.x"):
        load_animatediff(sdxl, folder / "motion_adapter")
