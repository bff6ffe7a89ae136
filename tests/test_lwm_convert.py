"""The LWM converter (acdc_core/convert/lwm.py) against LargeWorldModel/LWM's own code.

tests/fixtures/lwm_upstream.safetensors was made by tests/fixtures/upstream/make_lwm.py, run in a separate virtual
environment on an upstream checkout (its metadata names the commit): upstream's FlaxVideoLLaMAForCausalLM and VQGAN on
a tiny config whose every tensor is f(its Flax path, its shape), the language model written by upstream's own
StreamingCheckpointer (the ``params`` bytes are in the fixture, in the published scan layout and in the per-layer
layout with flax's chunked records), upstream's logits and pixels, a tiny sentencepiece tokenizer.model and the ids
upstream's tokenisers give. Here the VQGAN pickle is rebuilt from the same rule, everything is converted by
``convert_lwm`` and loaded with transformers/diffusers, and the results must be upstream's.
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sentencepiece", reason="the tokenizer conversion needs sentencepiece (pip install -e .[test])")
pytest.importorskip("google.protobuf", reason="the tokenizer conversion needs protobuf (pip install -e .[test])")

from acdc_core.convert import lwm  # noqa: E402
from acdc_core.convert.lwm import check_converted, convert_lwm, read_vqgan  # noqa: E402
from acdc_core.errors import InvalidInputError, MissingModelFilesError  # noqa: E402
from tests.fixtures.upstream.tiny_weights import flax_weight, read_fixture  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "lwm_upstream.safetensors"
# float32 on both sides (upstream: XLA on the CPU; here torch). Measured max |ours - upstream|: text logits 1.9e-6,
# vision logits 1.4e-6 (|logits| up to 3.6), left-padded 3.3e-6; VQ latents 1.8e-6, decoded pixels 7.6e-6 (in [-1, 1]);
# the codes' nearest-entry margin is 0.016. Without the RoPE permutation the logits differ by 4.2.
LOGITS = dict(atol=2e-5, rtol=1e-5)
PIXELS = dict(atol=5e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def upstream():
    return read_fixture(FIXTURE)


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


def _vqgan_tree(meta) -> dict:
    """The tiny VQGAN's Flax params as upstream's tree holds them (paths from the fixture), values by the rule."""
    tree: dict = {}
    for path, shape in json.loads(meta["vqgan_tree"]):
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = flax_weight(path, tuple(shape)).numpy()
    return tree


def _source(folder: Path, upstream, params: str = "lm_params_scan") -> Path:
    """A folder as LWM's hub repositories publish it: params, vqgan (a pickle of Flax params), tokenizer.model."""
    data, meta = upstream
    folder.mkdir(parents=True)
    (folder / "params").write_bytes(_bytes(data[params]))
    with (folder / "vqgan").open("wb") as handle:
        pickle.dump(_vqgan_tree(meta), handle)
    (folder / "tokenizer.model").write_bytes(_bytes(data["tokenizer_model"]))
    return folder


@pytest.fixture(scope="module")
def tiny_config(upstream, tmp_path_factory) -> Path:
    """upstream's LLaMAConfig keys of the tiny model, as a JSON file (upstream's --load_llama_config json::PATH)."""
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(upstream[1]["llama_config"])
    return path


@pytest.fixture(scope="module")
def source(upstream, tmp_path_factory) -> Path:
    return _source(tmp_path_factory.mktemp("lwm") / "LWM-Chat-32K-Jax", upstream)


@pytest.fixture(scope="module")
def converted(source, tiny_config, tmp_path_factory) -> Path:
    """Converted by the CLI entry point, in float32 (upstream ran in float32 on the bf16 checkpoint's values)."""
    dst = tmp_path_factory.mktemp("out") / "lwm-unified"
    assert lwm.main([str(source), str(dst), "--allow-pickle-vqgan", "--dtype", "float32",
                     "--config", str(tiny_config)]) == 0
    return dst


def _lm(folder: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder / "lm", dtype=torch.float32, local_files_only=True).eval()


def _logits(model, upstream, offset: int) -> torch.Tensor:
    data, _ = upstream
    ids = data["lm_ids"].clone()
    ids[data["lm_vision_mask"]] += offset          # vision id v -> LM id offset + v
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0]


def _check_logits(logits: torch.Tensor, upstream, offset: int, vision: int) -> None:
    data, _ = upstream
    torch.testing.assert_close(logits[:, :offset], data["lm_text_logits"], **LOGITS)
    torch.testing.assert_close(logits[:, offset:offset + vision], data["lm_vision_logits"], **LOGITS)


# ------------------------------------------------------------------------------------------------ the manifest
def test_the_manifest_has_the_format_2_fields(converted, source, upstream):
    import hashlib

    data, meta = upstream
    manifest = json.loads((converted / "acdc_arm.json").read_text())
    assert list(manifest) == ["family", "format_version", "image_size", "grid", "image_order", "codebook_size",
                              "image_token_offset", "special_tokens", "text_format", "video_text_format",
                              "image_start", "image_end", "frame_end", "unconditional", "text_slot",
                              "default_sampling", "video_sampling", "info"]
    tiny = json.loads(meta["llama_config"])
    assert manifest["family"] == "unified" and manifest["format_version"] == 2
    assert manifest["image_size"] == [256, 256] and manifest["grid"] == [16, 16]     # 5 levels: 16x downsampling
    assert manifest["codebook_size"] == 64 == manifest["frame_end"]                  # LWM: 8192 for both
    assert manifest["image_token_offset"] == tiny["vocab_size"]
    assert manifest["special_tokens"] == {"bos": 1, "eos": 2, "pad": 0}
    assert manifest["text_format"] == "You are a helpful assistant. USER: Generate an image of {prompt} ASSISTANT: <vision>"
    assert manifest["video_text_format"] == manifest["text_format"].replace("an image", "a video")
    assert manifest["image_start"] == [] and manifest["image_end"] == data["ids_vision_end"].tolist()
    assert manifest["unconditional"] == {"mode": "text", "text": "<vision>"} and manifest["text_slot"] == 0
    assert manifest["default_sampling"] == {"guidance_scale": 5.0, "temperature": 1.0, "top_k": 64, "top_p": 1.0}
    assert manifest["video_sampling"]["first"] == {"guidance_scale": 5.0, "top_k": 64, "temperature": 1.0, "top_p": 1.0}
    assert manifest["video_sampling"]["later"] == {"guidance_scale": 1.0, "top_k": 64, "temperature": 1.0, "top_p": 1.0}
    info = manifest["info"]
    assert info["rope_theta"] == tiny["theta"] and info["converted_from"] == "LargeWorldModel/LWM-Chat-32K-Jax"
    assert info["source_files"] == {name: hashlib.sha256((source / name).read_bytes()).hexdigest()
                                    for name in ("params", "vqgan", "tokenizer.model")}
    config = json.loads((converted / "lm" / "config.json").read_text())
    assert config["vocab_size"] == tiny["vocab_size"] + tiny["vision_vocab_size"]
    assert config["rope_parameters"]["rope_theta"] == tiny["theta"] and config["rms_norm_eps"] == 1e-6
    assert sorted(p.name for p in converted.rglob("*") if p.is_file()) == sorted(
        ["acdc_arm.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json",
         "diffusion_pytorch_model.safetensors"])       # safetensors only, no pickle, no partial files left


# ------------------------------------------------------------------------------------------------ the language model
def test_the_language_model_gives_upstream_s_text_and_vision_logits(converted, upstream):
    _, meta = upstream
    tiny = json.loads(meta["llama_config"])
    offset, vision = tiny["vocab_size"], tiny["vision_vocab_size"]
    _check_logits(_logits(_lm(converted), upstream, offset), upstream, offset, vision)


def test_left_padding_upstream_s_way_changes_nothing(converted, upstream):
    """vision_generation.py left-pads with id 0 under an attention mask (position ids cumsum - 1): its logits at the
    real positions are the unpadded ones, ours with or without the same padding."""
    data, meta = upstream
    tiny = json.loads(meta["llama_config"])
    offset, pad = tiny["vocab_size"], int(meta["pad_positions"])
    assert float(meta["pad_effect_max_abs"]) < 1e-5
    torch.testing.assert_close(data["lm_padded_text_logits"], data["lm_text_logits"], **LOGITS)
    model = _lm(converted)
    ids = data["lm_padded_ids"].clone()
    vision = torch.cat([torch.zeros(pad, dtype=torch.bool), data["lm_vision_mask"]])
    ids[vision] += offset
    with torch.no_grad():
        logits = model(input_ids=ids[None], attention_mask=data["lm_padded_mask"][None],
                       position_ids=data["lm_padded_positions"].clamp(min=0)[None]).logits[0, pad:]
    torch.testing.assert_close(logits[:, :offset], data["lm_padded_text_logits"], **LOGITS)
    torch.testing.assert_close(logits[:, offset:offset + tiny["vision_vocab_size"]], data["lm_padded_vision_logits"],
                               **LOGITS)


def test_the_per_layer_layout_with_chunked_records_converts_to_the_same_model(upstream, tiny_config, tmp_path):
    """Upstream's other layout (h/0, h/1, ...) written with flax's chunked-array records (the form a 7B checkpoint's
    2.9 GB w1/w2/w3 records take), into several shards with an index: the same logits."""
    _, meta = upstream
    src = _source(tmp_path / "LWM-Chat-1M-Jax", upstream, params="lm_params_layers")
    dst = convert_lwm(src, tmp_path / "out", allow_pickle=True, dtype="float32", config=tiny_config,
                      shard_size=20_000)
    assert (dst / "lm" / "model.safetensors.index.json").is_file() and len(list((dst / "lm").glob("model-*"))) > 2
    tiny = json.loads(meta["llama_config"])
    _check_logits(_logits(_lm(dst), upstream, tiny["vocab_size"]), upstream, tiny["vocab_size"],
                  tiny["vision_vocab_size"])
    assert json.loads((dst / "acdc_arm.json").read_text())["info"]["converted_from"] == "LargeWorldModel/LWM-Chat-1M-Jax"


def test_without_the_rope_permutation_the_logits_are_not_upstream_s(source, upstream, tiny_config, tmp_path,
                                                                     monkeypatch):
    """The q/k row reordering is what makes transformers' rotate_half RoPE upstream's adjacent-pair RoPE: without it
    (the mutation) the parity above fails, so that test does check the permutation."""
    _, meta = upstream
    monkeypatch.setattr(lwm, "_rope_permute", lambda weight, heads: weight)
    dst = convert_lwm(source, tmp_path / "out", allow_pickle=True, dtype="float32", config=tiny_config)
    tiny = json.loads(meta["llama_config"])
    with pytest.raises(AssertionError):
        _check_logits(_logits(_lm(dst), upstream, tiny["vocab_size"]), upstream, tiny["vocab_size"],
                      tiny["vision_vocab_size"])


def test_bfloat16_output_holds_the_published_values_exactly(converted, source, tiny_config, tmp_path):
    from safetensors.torch import load_file

    dst = convert_lwm(source, tmp_path / "out", allow_pickle=True, config=tiny_config)   # default dtype: bfloat16
    half, full = load_file(dst / "lm" / "model.safetensors"), load_file(converted / "lm" / "model.safetensors")
    assert half.keys() == full.keys() and all(t.dtype == torch.bfloat16 for t in half.values())
    assert all(torch.equal(half[k].float(), full[k]) for k in full)       # the checkpoint is bf16: nothing lost
    assert json.loads((dst / "lm" / "config.json").read_text())["dtype"] == "bfloat16"


# ------------------------------------------------------------------------------------------------ the VQ
def test_the_vq_decodes_upstream_s_pixels_and_picks_upstream_s_codes(converted, upstream):
    from diffusers import VQModel

    data, _ = upstream
    vq = VQModel.from_pretrained(converted / "vq", local_files_only=True).eval()
    nchw = lambda t: t.permute(0, 3, 1, 2)          # noqa: E731 - upstream is NHWC, diffusers NCHW
    with torch.no_grad():
        latents = vq.quant_conv(vq.encoder(nchw(data["vq_pixels"])))
        torch.testing.assert_close(latents, nchw(data["vq_latents"]), **PIXELS)
        _, _, (_, _, indices) = vq.quantize(latents)
        assert torch.equal(indices.reshape(data["vq_codes"].shape), data["vq_codes"])     # identical codes
        for codes, pixels in ((data["vq_codes"], data["vq_decoded"]), (data["vq_pattern"], data["vq_decoded_pattern"])):
            n, h, w = codes.shape
            quant = vq.quantize.get_codebook_entry(codes.reshape(-1), (n, h, w, vq.config.vq_embed_dim))
            decoded = vq.decoder(vq.post_quant_conv(quant)).clamp(-1, 1)      # upstream's decode clips to [-1, 1]
            torch.testing.assert_close(decoded, nchw(pixels), **PIXELS)


# ------------------------------------------------------------------------------------------------ the tokenizer
def test_bos_plus_the_text_format_gives_the_ids_the_models_were_trained_on(converted, upstream):
    """EasyLM's tokenizer (add_bos_token=False) read "<s>" as one BOS: BOS + the manifest's formats reproduce it.
    Upstream's HEAD (AutoTokenizer, add_bos_token=true on the hub) adds a second BOS, and cannot even pad as
    written (the hub tokenizer has no pad token)."""
    from transformers import PreTrainedTokenizerFast

    data, meta = upstream
    tokenizer = PreTrainedTokenizerFast.from_pretrained(converted / "lm", local_files_only=True)
    manifest = json.loads((converted / "acdc_arm.json").read_text())
    bos = manifest["special_tokens"]["bos"]
    ids = lambda text: [bos] + tokenizer(text, add_special_tokens=False).input_ids   # noqa: E731
    assert ids(manifest["text_format"].format(prompt=meta["prompt"])) == data["ids_feb2024_text"].tolist()
    assert ids(manifest["video_text_format"].format(prompt=meta["prompt"])) == data["ids_feb2024_video"].tolist()
    assert ids(manifest["unconditional"]["text"]) == data["ids_feb2024_uncond"].tolist()
    assert data["ids_feb2024_text"][-len(data["ids_vision_start"]):].tolist() == data["ids_vision_start"].tolist()
    head = json.loads(meta["ids_head"])
    assert head["text"] == [bos] + data["ids_feb2024_text"].tolist()                   # HEAD: two BOS
    assert head["uncond"] == [bos] + data["ids_feb2024_uncond"].tolist()
    assert meta["head_padding"].startswith("ValueError")


def test_the_engine_samples_and_decodes_with_the_folder(converted):
    from acdc_core.arm import unified
    from acdc_core.arm.base import ARMContext

    arm = unified.UnifiedARM.from_pretrained(converted, dtype=torch.float32)
    assert arm.codebook_size == 64 and arm.offset == 320
    tokens = arm.sample_chunk(ARMContext(), "a cat on a mat", settings=arm.default_sampling,
                              generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (1, 256) and 0 <= int(tokens.min()) and int(tokens.max()) < 64
    assert arm.decode(tokens).shape == (1, 3, 256, 256)


def test_acdc_convert_lwm_then_acdc_video_on_the_converted_folder(source, tiny_config, tmp_path):
    """The two commands a user types: convert the published files, then write a video with the result (the ARM
    alone here: AnimateDiff's part is tests/test_cli_video.py)."""
    import json

    from acdc_core.cli import main

    dst = tmp_path / "LWM-Chat-1M"
    assert main(["convert", "lwm", str(source), str(dst), "--allow-pickle-vqgan", "--dtype", "float32", "--config",
                 str(tiny_config), "--update", "max_sequence_length=1024"]) == 0    # 3 frames of 257 fit
    out = tmp_path / "video"
    assert main(["video", "--arm", str(dst), "--correct", "none", "--frames", "3", "--window", "2", "--prompt",
                 "a cat on a mat", "--out", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    assert [f["arm_seed"] for f in record["acdc"]["frames"]] == [0, 1, 2]
    assert record["settings"]["first_sampling"]["guidance_scale"] == 5.0       # LWM's own frame-1 sampling
    assert record["settings"]["later_sampling"]["guidance_scale"] == 1.0
    assert len(list((out / "frames").glob("acdc_*.png"))) == 3


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ["params", "vqgan", "tokenizer.model"])
def test_a_source_without_one_of_its_files_is_refused_naming_it(source, tmp_path, name):
    src = tmp_path / "LWM-Chat-1M-Jax"
    shutil.copytree(source, src)
    (src / name).unlink()
    with pytest.raises(MissingModelFilesError, match=rf"lacks {name} .*LargeWorldModel/LWM-Chat-1M-Jax"):
        convert_lwm(src, tmp_path / "out", allow_pickle=True)
    assert not (tmp_path / "out").exists()


def test_the_vqgan_pickle_is_read_only_with_the_flag(source, tmp_path, capsys):
    with pytest.raises(InvalidInputError, match=r"pickle .*can run code.*--allow-pickle-vqgan.*LWM-Chat-1M-Jax"):
        convert_lwm(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    assert lwm.main([str(source), str(tmp_path / "out")]) == 2
    assert "--allow-pickle-vqgan" in capsys.readouterr().err


def test_a_non_empty_destination_is_refused(source, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "something").write_text("x")
    with pytest.raises(InvalidInputError, match="already exists and is not an empty folder"):
        convert_lwm(source, tmp_path / "out", allow_pickle=True)


def test_missing_conversion_packages_are_named_with_the_extra(source, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)        # import sentencepiece now raises ImportError
    with pytest.raises(MissingModelFilesError, match=r'sentencepiece.*pip install "acdc-story\[convert\]"'):
        convert_lwm(source, tmp_path / "out", allow_pickle=True)


def test_params_that_do_not_fit_the_config_are_named_before_any_work(source, upstream, tmp_path):
    tiny = json.loads(upstream[1]["llama_config"])
    with pytest.raises(InvalidInputError, match=r"does not fit the config.*transformer/wte/embedding \[320, 16\]"):
        convert_lwm(source, tmp_path / "out", allow_pickle=True, config={**tiny, "hidden_size": 32})
    with pytest.raises(InvalidInputError, match=r"scan_decoder/attention/wq/kernel \[2, 16, 16\] \(the config needs "
                                                r"\[3, 16, 16\]\)"):
        convert_lwm(source, tmp_path / "out", allow_pickle=True, config=tiny, update={"num_hidden_layers": 3})
    with pytest.raises(InvalidInputError, match="unknown config key 'thetta'"):
        convert_lwm(source, tmp_path / "out", allow_pickle=True, config=tiny, update={"thetta": 1})
    assert not (tmp_path / "out").exists()


def test_a_truncated_params_file_is_named(source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    data = (src / "params").read_bytes()
    (src / "params").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="truncated"):
        convert_lwm(src, tmp_path / "out", allow_pickle=True)


def test_the_unpickler_reads_flax_and_jax_pickles_and_nothing_else(upstream, tmp_path):
    data, _ = upstream
    kernel = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    for name in ("pickle_frozen", "pickle_jax_f32", "pickle_jax_bf16"):
        if name.endswith("bf16") and not _has("ml_dtypes"):
            continue
        path = tmp_path / name
        path.write_bytes(_bytes(data[name]))
        flat = read_vqgan(path, allow_pickle=True)              # made by flax/jax themselves (make_lwm.py)
        assert sorted(flat) == ["encoder/Conv_0/bias", "encoder/Conv_0/kernel"]
        np.testing.assert_array_equal(flat["encoder/Conv_0/kernel"].astype(np.float32), kernel)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never be printed",))

    hostile = tmp_path / "hostile"
    hostile.write_bytes(pickle.dumps({"encoder": Payload()}))
    with pytest.raises(InvalidInputError, match=r"asks, while being unpickled, for builtins\.print.*refused"):
        read_vqgan(hostile, allow_pickle=True)
    with pytest.raises(InvalidInputError, match="--allow-pickle-vqgan"):
        read_vqgan(hostile)


def test_a_converted_folder_missing_files_is_named(converted, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(converted, copy)
    check_converted(copy)
    (copy / "lm" / "tokenizer.json").unlink()
    (copy / "vq" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingModelFilesError,
                       match=r"lacks lm/tokenizer\.json, vq/diffusion_pytorch_model\.safetensors"):
        check_converted(copy)


def test_the_context_and_theta_default_to_lwm_s(tmp_path):
    assert lwm.context_from_name("LWM-Chat-1M-Jax") == 1024 * 1024
    assert lwm.context_from_name("LWM-Chat-128K-Jax") == 131072 and lwm.context_from_name("LWM-Chat-32K-Jax") == 32768
    assert lwm.context_from_name("lwm") == 32768
    cfg = lwm.resolve_config(tmp_path / "LWM-Chat-128K-Jax", model_name="LWM-Chat-128K-Jax")
    assert cfg["theta"] == 50_000_000 and cfg["max_sequence_length"] == 131072 and cfg["hidden_size"] == 4096
    assert lwm.resolve_config(tmp_path, "7b")["theta"] == 10000                 # the plain LLaMA-2-7B preset
    assert lwm.parse_update(["theta=5", "mesh_dim=1,1,1,1"]) == {"theta": 5, "mesh_dim": "1,1,1,1"}


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
