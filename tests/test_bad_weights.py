"""Bad model files end in an engine error that names the file and says what to do, never in a traceback from
torch / transformers / diffusers / safetensors: truncated, empty and renamed-pickle ``.safetensors`` files in every
kind of model folder (and as a single-file DM checkpoint), shards an index lists but the folder lacks, weights of
another size or config, and custom code (``auto_map``) that was not trusted. Where it is cheap, the model
constructors are replaced by ones that fail, to show the check ran before anything was loaded."""
from __future__ import annotations

import json
import pickle
import shutil
import traceback
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from acdc_core.arm import load_arm
from acdc_core.correct import load_corrector
from acdc_core.errors import ACDCError, InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from acdc_core.memory import check_local_llm_folder, load_local_llm
from acdc_core.tiny.sd import write_single_file
from acdc_core.tiny.unified import build_tiny_unified
from acdc_core.weights import check_remote_code, check_safetensors, check_weight_folder

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

LIBRARIES = ("torch", "transformers", "diffusers", "safetensors", "accelerate", "huggingface_hub", "tokenizers")


@pytest.fixture(scope="module")
def unified(tmp_path_factory) -> Path:
    return build_tiny_unified(tmp_path_factory.mktemp("unified"), seed=0)


@pytest.fixture(scope="module")
def unified_other(tmp_path_factory) -> Path:
    """A unified ARM of another size: a wider LM, a VQ with other channel counts (same codebook)."""
    return build_tiny_unified(tmp_path_factory.mktemp("unified_other"), seed=0, hidden_size=64,
                              intermediate_size=128, vq_channels=(8, 16, 32))


@pytest.fixture(scope="module")
def single_file(tiny_models, tmp_path_factory) -> Path:
    return write_single_file(tiny_models["dm"], tmp_path_factory.mktemp("single") / "tiny.safetensors")


@pytest.fixture
def nothing_loads(monkeypatch):
    """Every model constructor the loaders call fails: a check that passes this ran before any model was built."""
    import diffusers
    import transformers

    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad file was refused")

    for cls in (transformers.AutoModelForCausalLM, transformers.JanusForConditionalGeneration,
                transformers.CLIPTextModel, transformers.AutoTokenizer, transformers.PreTrainedTokenizerFast,
                diffusers.VQModel, diffusers.UNet2DConditionModel, diffusers.AutoencoderKL):
        monkeypatch.setattr(cls, "from_pretrained", fail)
    for cls in (diffusers.StableDiffusionPipeline, diffusers.StableDiffusionXLPipeline):
        monkeypatch.setattr(cls, "from_single_file", fail)


def engine_error(call, cls: type, *needles: str) -> str:
    """Run ``call``; it must raise ``cls`` (an engine error) from engine code, its message holding ``needles``."""
    with pytest.raises(cls) as caught:
        call()
    error = caught.value
    assert isinstance(error, ACDCError)
    assert "acdc_core" in traceback.extract_tb(error.__traceback__)[-1].filename, "raised inside a library"
    cause = error.__cause__ or error.__context__
    while cause is not None:   # no library exception underneath either
        assert type(cause).__module__.split(".")[0] not in LIBRARIES, f"wraps {type(cause).__name__}: {cause}"
        cause = cause.__cause__ or cause.__context__
    message = str(error)
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


# -- broken files -------------------------------------------------------------------------------------------

def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    _replace(path, data[: len(data) // 2])


def _empty(path: Path) -> None:
    _replace(path, b"")


def _pickle(path: Path) -> None:
    _replace(path, pickle.dumps({"weight": [0.0] * 8}))


def _torch_zip(path: Path) -> None:
    path.unlink()
    torch.save({"weight": torch.zeros(8)}, path)


BREAKS = {"truncated": (_truncate, "it is truncated"), "empty": (_empty, "it is empty (0 bytes)"),
          "pickle": (_pickle, "it is a pickle file renamed to .safetensors; it is refused because loading pickle "
                              "can run code"),
          "torch_zip": (_torch_zip, "it is a PyTorch zip checkpoint (torch.save) renamed to .safetensors")}

# (which model, the file in it, how it is loaded)
PLACES = {
    "unified-lm": ("unified", "lm/model.safetensors", load_arm),
    "unified-vq": ("unified", "vq/diffusion_pytorch_model.safetensors", load_arm),
    "janus": ("arm", "model.safetensors", load_arm),
    "dm-unet": ("dm", "unet/diffusion_pytorch_model.safetensors", load_corrector),
    "dm-vae": ("dm", "vae/diffusion_pytorch_model.safetensors", load_corrector),
    "dm-text-encoder": ("dm", "text_encoder/model.safetensors", load_corrector),
    "llm": ("llm", "model.safetensors", load_local_llm),
    "dm-single-file": ("single", "", load_corrector),
}


@pytest.fixture
def models(tiny_models, unified, single_file) -> dict[str, Path]:
    return {**tiny_models, "unified": unified, "single": single_file}


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", list(BREAKS))
def test_a_broken_safetensors_file_is_named_before_anything_loads(models, place, kind, tmp_path, nothing_loads):
    model, name, load = PLACES[place]
    root = _copy(models[model], tmp_path / ("model.safetensors" if not name else "model"))
    broken = root / name if name else root
    corrupt, says = BREAKS[kind]
    corrupt(broken)
    message = engine_error(lambda: load(root), InvalidInputError,
                           f"{broken} could not be read as a .safetensors file", says)
    assert "Download or copy it again" in message or "Convert the original checkpoint" in message


def test_the_cheap_folder_checks_refuse_the_same_files(tiny_models, tmp_path, nothing_loads):
    from acdc_core.arm import check_arm_folder
    from acdc_core.correct import check_corrector_path

    llm = _copy(tiny_models["llm"], tmp_path / "llm")
    _truncate(llm / "model.safetensors")
    engine_error(lambda: check_local_llm_folder(llm), InvalidInputError, str(llm / "model.safetensors"), "truncated")
    arm = _copy(tiny_models["arm"], tmp_path / "arm")
    _empty(arm / "model.safetensors")
    engine_error(lambda: check_arm_folder(arm), InvalidInputError, str(arm / "model.safetensors"), "empty")
    dm = _copy(tiny_models["dm"], tmp_path / "dm")
    _pickle(dm / "vae" / "diffusion_pytorch_model.safetensors")
    engine_error(lambda: check_corrector_path(dm), InvalidInputError,
                 str(dm / "vae" / "diffusion_pytorch_model.safetensors"), "pickle")


@pytest.mark.parametrize("data, says", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
    (b"abc", "too short"),
    (b"\x00" * 64, "header is empty"),
    (b"GGUF\x03\x00\x00\x00" + b"\x00" * 32, "GGUF"),
])
def test_other_files_under_the_safetensors_name(tmp_path, data, says):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    engine_error(lambda: check_safetensors(path), InvalidInputError, str(path), says)


def test_bytes_after_the_last_tensor_and_whole_files(tiny_models, tmp_path):
    good = tiny_models["llm"] / "model.safetensors"
    shapes = check_safetensors(good)
    assert shapes["model.embed_tokens.weight"] == tuple(load_file(good)["model.embed_tokens.weight"].shape)
    longer = tmp_path / "model.safetensors"
    longer.write_bytes(good.read_bytes() + b"\x00" * 3)
    engine_error(lambda: check_safetensors(longer), InvalidInputError, "3 byte(s) after its last tensor")


def _shard(folder: Path, stem: str = "model") -> Path:
    """Turn ``{stem}.safetensors`` into shard 1 of 2, with an index that lists a second shard the folder lacks."""
    weights = folder / f"{stem}.safetensors"
    names = list(check_safetensors(weights))
    weights.rename(folder / f"{stem}-00001-of-00002.safetensors")
    weight_map = {name: f"{stem}-00001-of-00002.safetensors" for name in names[1:]}
    weight_map[names[0]] = f"{stem}-00002-of-00002.safetensors"
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder / f"{stem}.safetensors.index.json"


def test_a_shard_missing_from_its_index_is_named(tiny_models, tmp_path, nothing_loads):
    arm = _copy(tiny_models["arm"], tmp_path / "arm")
    index = _shard(arm)
    engine_error(lambda: load_arm(arm), MissingModelFilesError, str(index), "model-00002-of-00002.safetensors",
                 "download the missing shard")
    llm = _copy(tiny_models["llm"], tmp_path / "llm")
    index = _shard(llm)
    engine_error(lambda: load_local_llm(llm), MissingModelFilesError, str(index), "model-00002-of-00002.safetensors")
    # The shard there, but cut short: named like any other file.
    _copy(llm / "model-00001-of-00002.safetensors", llm / "model-00002-of-00002.safetensors")
    _truncate(llm / "model-00002-of-00002.safetensors")
    engine_error(lambda: load_local_llm(llm), InvalidInputError, str(llm / "model-00002-of-00002.safetensors"),
                 "truncated")


# -- weights of another architecture --------------------------------------------------------------------------

def test_an_lm_of_another_size_is_named_tensor_by_tensor(unified, unified_other, tmp_path, nothing_loads):
    folder = _copy(unified, tmp_path / "arm")
    _replace(folder / "lm" / "model.safetensors", (unified_other / "lm" / "model.safetensors").read_bytes())
    message = engine_error(lambda: load_arm(folder), InvalidInputError, str(folder / "lm" / "model.safetensors"),
                           "do not fit the model its config.json describes", "tensor(s) have other shapes",
                           "model.embed_tokens.weight: the model expects [", "the file holds [")
    assert "Cannot copy out of meta tensor" not in message and "ignore_mismatched_sizes" not in message


def test_a_vq_of_another_size_is_named_tensor_by_tensor(unified, unified_other, tmp_path, nothing_loads):
    folder = _copy(unified, tmp_path / "arm")
    weights = folder / "vq" / "diffusion_pytorch_model.safetensors"
    _replace(weights, (unified_other / "vq" / "diffusion_pytorch_model.safetensors").read_bytes())
    message = engine_error(lambda: load_arm(folder), InvalidInputError, str(weights),
                           "tensor(s) have other shapes", "decoder.conv_in.bias: the model expects [16], the file "
                           "holds [32]", "tensor(s) in the file are not in the model")
    assert "meta tensor" not in message


def _rewrite(path: Path, edit) -> None:
    """Rewrite a safetensors file with ``edit(tensors)`` applied, keeping its metadata."""
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors = edit(load_file(path))
    path.unlink()
    save_file(tensors, str(path), metadata=metadata)


def test_an_lm_with_more_layers_than_its_config_is_refused(unified, tmp_path):
    """Extra tensors (another config's layers) are reported by transformers' loading, not silently dropped."""
    folder = _copy(unified, tmp_path / "arm")

    def add_layer(tensors):
        extra = {k.replace("layers.1.", "layers.2."): v.clone() for k, v in tensors.items() if "layers.1." in k}
        return {**tensors, **extra}

    _rewrite(folder / "lm" / "model.safetensors", add_layer)
    engine_error(lambda: load_arm(folder), InvalidInputError, str(folder / "lm" / "model.safetensors"),
                 "tensor(s) in the file are not in the model", "model.layers.2.")


def test_a_janus_tensor_of_another_shape_or_missing_is_named(tiny_models, tmp_path, monkeypatch):
    from transformers import JanusForConditionalGeneration

    folder = _copy(tiny_models["arm"], tmp_path / "janus")
    weights = folder / "model.safetensors"
    name = "model.language_model.embed_tokens.weight"

    def widen(tensors):
        tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] * 2)
        return tensors

    _rewrite(weights, widen)
    real = JanusForConditionalGeneration.from_pretrained
    with monkeypatch.context() as patch:
        patch.setattr(JanusForConditionalGeneration, "from_pretrained",
                      lambda *a, **k: pytest.fail("Janus was loaded before its weights were checked"))
        engine_error(lambda: load_arm(folder), InvalidInputError, str(weights), f"{name}: the model expects [")
    assert JanusForConditionalGeneration.from_pretrained == real

    def drop(tensors):
        return {k: v for k, v in load_file(tiny_models["arm"] / "model.safetensors").items() if k != name}

    _rewrite(weights, drop)   # a tensor missing: transformers would leave it random; its report is read instead
    engine_error(lambda: load_arm(folder), InvalidInputError, str(weights), "the model needs are missing", name)


def test_an_llm_of_another_size_is_named(tiny_models, unified, tmp_path):
    """The memory LLM's loader reads transformers' report too (mismatched shapes, instead of its RuntimeError)."""
    llm = _copy(tiny_models["llm"], tmp_path / "llm")
    name = "model.embed_tokens.weight"
    _rewrite(llm / "model.safetensors", lambda t: {**t, name: torch.zeros(t[name].shape[0], t[name].shape[1] + 8)})
    engine_error(lambda: load_local_llm(llm), InvalidInputError, str(llm), "tensor(s) have other shapes", name)


# -- custom code -----------------------------------------------------------------------------------------------

AUTO_MAP = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
TAIL = "needs its own Python code. Pass trust_remote_code=True only if you trust that folder's code."


def _custom(config_path: Path, model_type: str = "tiny-custom") -> None:
    config = json.loads(config_path.read_text())
    config.update(model_type=model_type, auto_map=AUTO_MAP)
    config_path.write_text(json.dumps(config))


def test_custom_code_in_the_arm_lm_needs_trust_worded_as_for_the_llm(unified, tiny_models, tmp_path, nothing_loads):
    from acdc_core.arm import check_arm_folder

    arm = _copy(unified, tmp_path / "arm")
    _custom(arm / "lm" / "config.json")
    arm_message = engine_error(lambda: load_arm(arm), UnknownModelFamilyError, str(arm / "lm"), TAIL)
    engine_error(lambda: check_arm_folder(arm), UnknownModelFamilyError, TAIL)
    llm = _copy(tiny_models["llm"], tmp_path / "llm")
    _custom(llm / "config.json")
    llm_message = engine_error(lambda: load_local_llm(llm), UnknownModelFamilyError, str(llm), TAIL)
    engine_error(lambda: check_local_llm_folder(llm), UnknownModelFamilyError, TAIL)
    # One wording, written once: the two differ only in what they name.
    assert arm_message.split(" in ")[0] == "The ARM's language model" and llm_message.split(" in ")[0] == "The LLM"
    assert arm_message.split("'tiny-custom') ")[1] == llm_message.split("'tiny-custom') ")[1]
    # Trusted, the code must still be in the folder: nothing is fetched.
    engine_error(lambda: load_arm(arm, trust_remote_code=True), MissingModelFilesError, "modeling_tiny.py",
                 "configuration_tiny.py")
    engine_error(lambda: load_local_llm(llm, trust_remote_code=True), MissingModelFilesError, "modeling_tiny.py")


def test_a_known_model_type_with_an_auto_map_loads_its_own_code_without_trust(tiny_models, tmp_path):
    """transformers uses its own class for a model_type it knows when trust_remote_code is off (e.g. Phi-3's
    folders still carry an auto_map), so that is not refused; code from another repository is, even trusted."""
    llm = _copy(tiny_models["llm"], tmp_path / "llm")
    config = json.loads((llm / "config.json").read_text())
    _custom(llm / "config.json", model_type=config["model_type"])
    assert check_remote_code(llm, False, "LLM")["auto_map"] == AUTO_MAP
    config = json.loads((llm / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "someone/else--modeling_tiny.TinyForCausalLM"}
    (llm / "config.json").write_text(json.dumps(config))
    engine_error(lambda: check_remote_code(llm, True, "LLM"), MissingModelFilesError, "another repository")


def test_whole_folders_pass_the_checks(tiny_models, unified):
    for folder in (tiny_models["arm"], tiny_models["llm"], unified / "lm", unified / "vq",
                   *(tiny_models["dm"] / part for part in ("unet", "vae", "text_encoder"))):
        checked = check_weight_folder(folder)
        assert checked and all(checked.values())
