"""ComfyUI's own models as the corrector (nodes/comfy_corrector.py), against a stand-in of ComfyUI's sampling
interface as the bridge's host presents it (VAE encode/decode, CLIP text encoding, KSampler). The stand-in's
KSampler follows ComfyUI's step rule (``KSampler.set_steps``: ``steps`` run of a schedule of ``int(steps /
denoise)``) and counts its model calls; the real one was run in a real ComfyUI (README)."""
from __future__ import annotations

import pytest
import torch

import nodes
from acdc_core.correct import load_corrector
from acdc_core.errors import InvalidInputError
from acdc_core.tiny.sd import build_tiny_sd
from nodes import bridge
from nodes.comfy_corrector import ComfyCorrector

pytestmark = pytest.mark.floors


class StandInComfy(bridge.StandaloneHost):
    """ComfyUI as the bridge sees it: a VAE of 8x8 cells, text as a tag, a KSampler that records its requests."""

    def __init__(self):
        super().__init__()
        self.samples: list[dict] = []
        self.model_calls = 0

    def sampler_names(self):
        return ["euler", "ddim", "dpmpp_2m", "uni_pc"]

    def scheduler_names(self):
        return ["normal", "karras", "simple", "ddim_uniform"]

    def native_side(self, model):
        return 512

    def vae_scale(self, vae):
        return 8

    def encode_text(self, clip, text):
        return [("cond", text)]

    def vae_encode(self, vae, image):                     # IMAGE [1, H, W, 3] -> latent [1, 4, H/8, W/8]
        pooled = torch.nn.functional.avg_pool2d(image.permute(0, 3, 1, 2), 8)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)

    def vae_decode(self, vae, latent):                    # latent -> IMAGE [1, H, W, 3]
        up = torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest")
        return up.permute(0, 2, 3, 1).clamp(0, 1)

    @staticmethod
    def simple_timesteps(length):
        """The timesteps of ComfyUI's "simple" schedule of ``length`` steps over 1000 training steps (as its
        simple_scheduler picks sigmas: index -(1 + int(x * 1000 / length)))."""
        return [999 - int(x * 1000 / length) for x in range(length)]

    def sample(self, model, latent, *, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise,
               noise_mask, callback):
        schedule = int(steps / denoise) if denoise <= 0.9999 else steps    # ComfyUI's KSampler.set_steps
        self.samples.append(dict(seed=seed, steps=steps, schedule=schedule, cfg=cfg, sampler=sampler_name,
                                 timesteps=self.simple_timesteps(schedule)[-steps:],
                                 scheduler=scheduler, positive=positive, negative=negative, denoise=denoise,
                                 mask=None if noise_mask is None else noise_mask.clone(), shape=tuple(latent.shape)))
        out = latent
        for step in range(steps):                         # one model call per step, cond and uncond batched
            self.model_calls += 1
            out = out * 0.5 + torch.full_like(out, 0.5) * 0.5
            if noise_mask is not None:
                out = out * noise_mask + latent * (1 - noise_mask)
            callback(step + 1, steps)
        return out


@pytest.fixture
def comfy():
    return StandInComfy()


def corrector(comfy, **options):
    return ComfyCorrector(object(), object(), object(), host=comfy, **options)


def test_it_asks_comfyui_for_the_steps_below_t_prime_at_denoise_t_prime(comfy):
    dm = corrector(comfy)
    assert dm.kind == "comfyui" and dm.schedulers[0] == "ddim" and dm.native_size == (512, 512)
    assert dm.image_multiple == 8 and dm.modules() == {} and dm.fit_prompt("x " * 500) == "x " * 500
    out = dm.correct(torch.rand(1, 3, 64, 64), "a red fox", strength=0.5, steps=50, guidance_scale=7.5, seed=9,
                     negative_prompt="blurry")
    assert out.shape == (1, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    (call,) = comfy.samples
    assert (call["steps"], call["schedule"]) == (25, 50)          # the last 25 of a 50-step schedule
    assert abs(call["denoise"] - 0.5) < 0.01                       # t', up to half a step
    assert (call["sampler"], call["scheduler"], call["seed"], call["cfg"]) == ("ddim", "simple", 9, 7.5)
    assert call["positive"] == [("cond", "a red fox")] and call["negative"] == [("cond", "blurry")]


@pytest.mark.parametrize("strength, steps", [(0.5, 50), (0.57, 50), (0.3, 20), (1.0, 10), (0.45, 37)])
def test_both_correctors_make_the_same_number_of_model_calls(comfy, tmp_path_factory, strength, steps):
    """The engine's SD1.5-shaped corrector (UNet forwards counted) and ComfyUI's KSampler, same settings."""
    sd = load_corrector(build_tiny_sd(tmp_path_factory.mktemp("sd"), seed=0))
    calls = []
    handle = sd.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        sd.correct(torch.rand(1, 3, 64, 64), "a fox", strength=strength, steps=steps, guidance_scale=7.5)
    finally:
        handle.remove()
    corrector(comfy).correct(torch.rand(1, 3, 64, 64), "a fox", strength=strength, steps=steps, guidance_scale=7.5)
    assert len(calls) == comfy.model_calls and set(calls) == {2}      # one call per step, cond + uncond batched
    assert comfy.samples[0]["schedule"] == steps                      # ComfyUI builds the engine's schedule


@pytest.mark.parametrize("strength, steps", [(0.5, 50), (0.3, 20), (0.57, 100), (1.0, 10), (0.25, 8)])
def test_on_the_simple_schedule_comfyui_runs_the_engines_timesteps(comfy, strength, steps):
    """Where steps divides 1000, ComfyUI's simple schedule is the engine's trailing one, so the last S of it are
    the engine's steps at or below t' (the real ComfyUI run confirmed 499 ... 19 at t' = 0.5, 50 steps)."""
    import diffusers

    from acdc_core.correct import sdedit_timesteps
    scheduler = diffusers.DDIMScheduler(timestep_spacing="trailing")
    engine = sdedit_timesteps(scheduler, steps, strength).tolist()
    corrector(comfy).correct(torch.rand(1, 3, 64, 64), "a fox", strength=strength, steps=steps)
    assert comfy.samples[0]["timesteps"] == engine


def test_a_fix_mask_becomes_the_latent_noise_mask_and_pixels_outside_stay_exact(comfy):
    image = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 24:40, 24:40] = 1
    out = corrector(comfy).correct(image, "a moon", strength=0.8, steps=20, mask=mask, mask_dilate=2, mask_feather=2)
    noise_mask = comfy.samples[0]["mask"]
    assert noise_mask.shape == (1, 1, 8, 8) and noise_mask[..., 3:5, 3:5].eq(1).all() and noise_mask[..., 0, 0] == 0
    changed = (out - image).abs().amax(1)[0] > 0
    assert changed[24:40, 24:40].all()
    outside = torch.ones_like(changed)
    outside[24 - 4:40 + 4, 24 - 4:40 + 4] = False                    # grow + feather
    assert not changed[outside].any()
    assert torch.equal(corrector(comfy).correct(image, "x", strength=0.8, mask=torch.zeros(1, 64, 64)), image)


def test_bad_requests_are_refused_before_comfyui_samples(comfy):
    dm = corrector(comfy)
    with pytest.raises(InvalidInputError, match="uni_pc"):
        dm.correct(torch.rand(1, 3, 64, 64), "x", strength=0.5, scheduler="heun")     # names what it takes
    with pytest.raises(InvalidInputError, match="multiples of 8"):
        dm.correct(torch.rand(1, 3, 60, 64), "x", strength=0.5)
    with pytest.raises(InvalidInputError, match="no denoising step"):
        dm.correct(torch.rand(1, 3, 64, 64), "x", strength=0.01, steps=10)
    assert comfy.samples == []


def test_progress_reports_each_step_and_cancel_stops_it(comfy):
    seen = []

    def progress(stage, step, total, preview=None):
        seen.append((stage, step, total))
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        corrector(comfy).correct(torch.rand(1, 3, 64, 64), "x", strength=0.5, steps=20, progress=progress)
    assert seen == [("sdedit", 1, 10), ("sdedit", 2, 10), ("sdedit", 3, 10)]


def test_sdedit_correct_and_the_fix_node_take_comfyuis_model_through_the_adapter_node(comfy, monkeypatch):
    monkeypatch.setattr(bridge, "HOST", comfy)
    node = nodes.NODE_CLASS_MAPPINGS["ACDC_ComfyModelCorrector"]
    dm = node().make(object(), object(), object(), "karras")[0]
    assert dm.engine.kind == "comfyui" and dm.engine.scheduler == "karras" and dm.managed is None
    from acdc_core.state import StorySettings, new_story
    from acdc_core.story import correct, decode, generate
    from tests.fakes import FakeARM
    arm = FakeARM(size=64, grid=8)
    frame = decode(generate(new_story(["A fox."]), arm, StorySettings()), arm)
    frame = correct(frame, dm.engine, StorySettings(strength=0.5, steps=50, dm_seed=4, scheduler="euler"), "A fox.")
    assert frame.corrected and frame.dm_seed == 4 and comfy.samples[-1]["sampler"] == "euler"
    assert comfy.samples[-1]["scheduler"] == "karras" and comfy.samples[-1]["steps"] == 25
