"""MAGVIT-v2 (acdc_core/arm/magvit.py) against showlab/Show-o's own code.

tests/fixtures/magvit_upstream.safetensors was made by tests/fixtures/upstream/make_magvit.py, run in a separate
virtual environment on an upstream checkout (its metadata names the commit): upstream's VQGANEncoder/Decoder and
LFQuantizer on a tiny config whose every tensor is f(its name, its shape). Here the same rule fills our module
through the published folder layout, so a tensor under another name would get other values and fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acdc_core.arm.magvit import MagvitConfig, MagvitV2, load_magvit
from acdc_core.errors import ACDCError
from tests.fixtures.upstream.tiny_weights import read_fixture, weight
from acdc_core.weights import on_meta

FIXTURE = Path(__file__).parent / "fixtures" / "magvit_upstream.safetensors"
TINY = MagvitConfig(channels=32, encoder_multipliers=(1, 2, 2), encoder_blocks=(1, 2, 1), encoder_attention=(2,),
                    decoder_multipliers=(1, 1, 2), decoder_blocks=(2, 1, 1), decoder_attention=(1,))


@pytest.fixture(scope="module")
def upstream():
    return read_fixture(FIXTURE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tokenizer folder as showlab/magvitv2 publishes it, holding the fixture's tiny weights."""
    path = tmp_path_factory.mktemp("magvitv2")
    state = MagvitV2(TINY).state_dict()
    save_file({name: (tensor if name.startswith("quantize.") else weight(name, tuple(tensor.shape))).contiguous()
               for name, tensor in state.items()}, path / "pytorch_model.safetensors")
    (path / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", "_diffusers_version": "0.30.1"}))
    return path


def test_the_published_layout_has_upstream_s_names(upstream):
    _, meta = upstream
    assert sorted(MagvitV2(TINY).state_dict()) == json.loads(meta["names"])


def test_the_architecture_is_read_off_the_weights(folder):
    model = load_magvit(folder)
    assert model.config == TINY
    published = {k: tuple(v.shape) for k, v in on_meta(MagvitV2).state_dict().items()}
    assert MagvitConfig.from_shapes(published) == MagvitConfig()      # the published model's hard-coded shape
    assert MagvitConfig().downsampling == 16 and MagvitConfig().codebook_size == 8192   # 256 px -> 16x16 tokens


def test_encode_gives_upstream_s_codes_and_decode_its_pixels(folder, upstream):
    data, _ = upstream
    model = load_magvit(folder)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(data["pixels"]), data["latents"], atol=1e-5, rtol=1e-5)
        codes = model.encode(data["pixels"])
        assert codes.dtype == torch.long and torch.equal(codes, data["codes"])            # identical codes
        torch.testing.assert_close(model.decode(data["codes"], (8, 8)), data["decoded"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.decode(data["pattern"], (8, 8)), data["decoded_pattern"], atol=1e-5,
                                   rtol=1e-4)


def test_bad_tokenizer_folders_and_inputs_are_refused_clearly(folder, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ACDCError, match=r"pytorch_model.bin: a pickle, which is not loaded"):
        load_magvit(pickled)
    other = tmp_path / "other"
    other.mkdir()
    save_file({"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)}, other / "pytorch_model.safetensors")
    with pytest.raises(ACDCError, match="not a MAGVIT-v2"):
        load_magvit(other)
    model = load_magvit(folder)
    with pytest.raises(ACDCError, match="multiples of 4"):
        model.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ACDCError, match=r"in \[0, 8192\)"):
        model.decode(torch.full((1, 64), 8192), (8, 8))
    with pytest.raises(ACDCError, match="for a 8x8 grid"):
        model.decode(torch.zeros(1, 63, dtype=torch.long), (8, 8))
