"""Loading the diffusion model: diffusers folders, single-file checkpoints offline, and the errors before."""
from __future__ import annotations

import shutil
import socket

import pytest
import torch
from safetensors.torch import save_file

from acdc_core.correct import detect_checkpoint_family, load_corrector
from acdc_core.correct.loading import CONFIGS, _components, _missing_files
from acdc_core.errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from acdc_core.tiny.sd import build_tiny_sd, build_tiny_sdxl, write_config_dir, write_single_file

pytestmark = [pytest.mark.floors, pytest.mark.usefixtures("one_thread")]  # floors: also at every dependency's floor (.ci/run)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), seed=1)


def test_missing_path(tmp_path):
    with pytest.raises(MissingModelFilesError, match="not found"):
        load_corrector(tmp_path / "nowhere.safetensors")


def test_diffusers_folder_missing_files_are_named(tiny, tmp_path):
    broken = shutil.copytree(tiny, tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").rename(broken / "unet" / "diffusion_pytorch_model.bin")
    (broken / "tokenizer" / "vocab.json").unlink()
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(MissingModelFilesError) as error:
        load_corrector(broken)
    message = str(error.value)
    assert "unet/diffusion_pytorch_model.safetensors" in message and "pickle" in message
    assert "tokenizer/vocab.json" in message and "scheduler/scheduler_config.json" in message
    assert "vae/" not in message and "text_encoder/" not in message


def test_pickle_checkpoint_is_refused_unread(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not even read")
    with pytest.raises(InvalidInputError, match="safetensors"):
        load_corrector(checkpoint)


@pytest.mark.parametrize("keys, match", [
    (["lora_unet_down.alpha"], "no UNet"),
    (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.token_embedding.weight"], "SD 2"),
    (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.model.text_projection"], "refiner"),
])
def test_unrecognised_checkpoint_layout(tmp_path, keys, match):
    path = tmp_path / "odd.safetensors"
    save_file({key: torch.zeros(1, 4, 1, 1) for key in keys}, str(path))
    with pytest.raises(UnknownModelFamilyError, match=match):
        load_corrector(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInputError, match="could not be read"):
        load_corrector(path)


def test_single_file_loads_offline_and_matches_its_folder(tiny, tmp_path, monkeypatch):
    checkpoint = write_single_file(tiny, tmp_path / "tiny.safetensors")
    config_dir = write_config_dir(tiny, tmp_path / "config")
    folder_model = load_corrector(tiny)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE
    single = load_corrector(checkpoint, config_dir=config_dir)
    assert constants.HF_HUB_OFFLINE == offline_before  # the offline switch is scoped to loading

    for name in ("unet", "vae"):
        reference = getattr(folder_model, name).state_dict()
        assert all(torch.equal(value, reference[key]) for key, value in getattr(single, name).state_dict().items())
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    settings = dict(strength=0.6, steps=5, seed=2)
    assert torch.equal(single.correct(images, "a cat on a log", **settings),
                       folder_model.correct(images, "a cat on a log", **settings))


def test_sdxl_single_file_loads_and_matches_its_folder(tmp_path):
    folder = build_tiny_sdxl(tmp_path / "sdxl")
    checkpoint = write_single_file(folder, tmp_path / "sdxl.safetensors")
    single = load_corrector(checkpoint, config_dir=write_config_dir(folder, tmp_path / "config"))
    folder_model = load_corrector(folder)
    assert single.architecture == "sdxl" and len(single.text_encoders) == 2 and single.tokenizers[1].pad_token == "!"
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    settings = dict(strength=0.5, steps=4, seed=5)
    assert torch.equal(single.correct(images, "a red fox", **settings),
                       folder_model.correct(images, "a red fox", **settings))


def test_checkpoint_without_vae(tmp_path):
    path = tmp_path / "no_vae.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}, str(path))
    with pytest.raises(MissingModelFilesError, match="no VAE"):
        load_corrector(path)


def test_single_file_inpainting_checkpoint_keeps_nine_channels(tmp_path):
    folder = build_tiny_sd(tmp_path / "inpaint", inpaint=True)
    checkpoint = write_single_file(folder, tmp_path / "inpaint.safetensors")
    # The config folder says 4 channels (as the shipped SD1.5 one does); the checkpoint's 9 win.
    config_dir = write_config_dir(build_tiny_sd(tmp_path / "plain"), tmp_path / "config")
    corrector = load_corrector(checkpoint, config_dir=config_dir)
    assert corrector.is_inpainting_unet


def test_single_file_with_incomplete_config_dir(tiny, tmp_path):
    checkpoint = write_single_file(tiny, tmp_path / "tiny.safetensors")
    config_dir = write_config_dir(tiny, tmp_path / "config")
    (config_dir / "unet" / "config.json").unlink()
    with pytest.raises(MissingModelFilesError, match="unet/config.json"):
        load_corrector(checkpoint, config_dir=config_dir)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_shipped_config_folders_are_complete(family):
    folder = CONFIGS / family
    assert _missing_files(folder, _components(folder), weights=False) == []
    from transformers import CLIPTokenizer

    for name in ("tokenizer", "tokenizer_2"):
        if (folder / name).is_dir():
            tokenizer = CLIPTokenizer.from_pretrained(folder / name, local_files_only=True)
            # OpenAI CLIP's ids for this prompt.
            assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
            assert tokenizer.model_max_length == 77
    assert (folder / "tokenizer_2").is_dir() == (family == "sdxl")


def test_detect_family_from_keys():
    sd15 = ["model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_out.weight",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    sdxl = ["model.diffusion_model.out.2.weight", "conditioner.embedders.0.transformer.text_model.x",
            "conditioner.embedders.1.model.positional_embedding"]
    assert detect_checkpoint_family(sd15) == "sd15" and detect_checkpoint_family(sdxl) == "sdxl"
