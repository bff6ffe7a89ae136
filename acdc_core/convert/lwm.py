"""LWM's published JAX checkpoints -> a unified-vocabulary ARM folder (see ``acdc_core/arm/unified.py``).

LargeWorldModel publishes its vision-language models (``LargeWorldModel/LWM-Chat-1M-Jax``, ``-128K-Jax``,
``-32K-Jax``) for JAX only, as three files:

``params``
    the language model, written by EasyLM/tux's ``StreamingCheckpointer``: a stream of msgpack records, each
    ``(key tuple, flax.serialization.to_bytes(array))`` with bf16 arrays, in the scan layout the sampling scripts
    load (``scan_layers=True``: one ``[layers, ...]`` tensor per weight under ``transformer/h/scan_decoder``; a
    record above 1 GiB, w1/w2/w3 of the 7B model, is split by flax into a chunked-array map). Read here by a small
    msgpack header parser: every array is read straight from its place in the file (no msgpack, no JAX, no copy
    of the whole model), one layer at a time.
``vqgan``
    the VQGAN's Flax params as a *pickle* (a nested dict of numpy arrays). The only pickle the project reads, and
    only with ``allow_pickle=True`` (``--allow-pickle-vqgan``): see ``read_vqgan``.
``tokenizer.model``
    LLaMA-2's sentencepiece model, turned into ``lm/tokenizer.json`` by transformers at conversion time (this
    needs ``sentencepiece`` and ``protobuf``: ``pip install "acdc-story[convert]"``; the engine later reads only
    tokenizer.json).

What each upstream module becomes (upstream files: ``lwm/vision_llama.py``, ``lwm/llama.py``, ``lwm/vqgan.py``):

* ``FlaxVideoLLaMAForCausalLM`` (LLaMA-2-7B with a second embedding ``vte`` [8448, d] and head ``vision_head``
  [d, 8448] for the vision ids, picked per position by ``vision_masks``) -> one transformers ``LlamaForCausalLM``
  whose vocabulary is 32,000 text ids + 8,448 vision ids: ``embed_tokens`` = concat(wte, vte), ``lm_head`` =
  concat(lm_head, vision_head) by rows, vision id v is LM id 32000 + v. This is the same model as long as a
  position's id says which table it comes from, which the engine's layout guarantees (text ids < 32000 <= codes).
  Per layer: ``attention/wq|wk|wv|wo`` -> ``self_attn.q|k|v|o_proj``, ``feed_forward/w1|w3|w2`` ->
  ``mlp.gate|up|down_proj``, ``attention_norm``/``ffn_norm`` -> ``input_layernorm``/``post_attention_layernorm``,
  ``ln_f`` -> ``model.norm``; a Flax kernel [in, out] becomes a torch weight [out, in].
  RoPE: upstream rotates the *adjacent* pairs (2i, 2i+1) of each head (``apply_rotary_emb``: reshape(..., -1, 2) as
  complex numbers), transformers rotates the *halves* (i, i + d/2) (``rotate_half``), with the same frequency
  theta^(-2i/d) for pair i. So the rows of q_proj and k_proj are reordered within each head, new row i (i < d/2) =
  old row 2i and new row d/2 + i = old row 2i + 1 (``_rope_permute``); q.k is unchanged because q and k move
  alike. theta: upstream's config ``theta`` (50,000,000 for every LWM vision-language model: the sampling and
  chat scripts pass theta=50000000), written as ``rope_parameters.rope_theta``. RMSNorm eps 1e-6 as upstream's
  7B preset (not transformers' Llama-2 default 1e-5).
* ``VQGANModel`` (256 px, channels 128 x (1, 2, 2, 4, 6), 2 res blocks, no attention, z 64, codebook 8,192 x 64) ->
  a diffusers ``VQModel(block_out_channels=(128, 256, 256, 512, 768), layers_per_block=2, latent_channels=64,
  vq_embed_dim=64, num_vq_embeddings=8192, norm_num_groups=32, mid_block_add_attention=False)``, the shapes read
  off the pickle. Layer for layer: ``Conv_0`` -> ``conv_in``; ``DownsamplingBlock_i`` -> ``down_blocks.i`` (its
  ``Downsample_0`` pads right/bottom by one then a stride-2 3x3 conv, as diffusers' ``Downsample2D(padding=0)``);
  ``MidBlock_0`` -> ``mid_block`` (two resnets, no attention); the decoder's ``UpsamplingBlock_k`` is the k-th
  *created*, i.e. the k-th applied (level 4 first), -> ``up_blocks.k`` (3 resnets, nearest x2 then conv, as
  ``Upsample2D``); in a ``ResnetBlock`` ``GroupNorm_0/Conv_0/GroupNorm_1/Conv_1/Conv_2`` -> ``norm1/conv1/norm2/
  conv2/conv_shortcut`` (1x1); ``GroupNorm_0``/``Conv_1`` at the end -> ``conv_norm_out``/``conv_out``;
  ``quant_conv``/``post_quant_conv`` (1x1) keep their names; ``quantize/embeddings`` ->
  ``quantize.embedding.weight`` (nearest entry by Euclidean distance, as upstream's ``VectorQuantizer``). Flax's
  GroupNorm has 32 groups and eps 1e-6 like diffusers'; conv kernels go HWIO -> OIHW, GroupNorm ``scale`` ->
  ``weight``. Upstream's decode clips to [-1, 1]; the engine clamps the pixels it returns to [0, 1], the same.

Deviations from upstream's sampler (``lwm/vision_generation.py``), which the manifest records:

* upstream samples each image token from all 8,448 vision logits (top-k 8,192 for the first frame, 1,000 later;
  ids 8,192.. are end-of-frame 8192, end-of-video 8193 and 254 unused) and overwrites every 257th token with 8192;
  the engine samples only the 8,192 code logits and appends ``frame_end`` (8192) itself after 256 codes.
* the prompt: the models were trained and released (Feb 2024, upstream commit aa8b9b8) with EasyLM's
  LLaMATokenizer, ``add_bos_token=False``: ``"<s>You are a helpful assistant. USER: Generate an image of {p}
  ASSISTANT: <vision>"`` is BOS (the literal "<s>", split out as the special token) followed by sentencepiece's
  ids of the rest, " <vision>" included (the same ids as the training data's ``tokenizer.encode('<vision>')``);
  the unconditional row ``"<s><vision>"`` is BOS + those ids. Upstream's HEAD switched to
  ``AutoTokenizer.from_pretrained('LargeWorldModel/LWM-Text-1M')``, whose tokenizer_config says
  ``add_bos_token: true`` and has no pad token: as written its ``padding='max_length'`` call raises, and with a pad
  token it feeds two BOS. The manifest reproduces the trained, single-BOS ids: ``text_format`` without "<s>", the
  engine's BOS in front, ``image_start`` empty because "<vision>" ends the text. Upstream's left padding (pad id 0,
  masked, position ids cumsum - 1) changes no logit of the real positions (measured: within float32 rounding), so
  the engine's unpadded rows are the same computation.

Memory: the params file is never loaded whole. Peak RAM is about one output shard (``shard_size``, 2 GiB; safetensors
writes it without a copy) plus the layer being converted (90 MB for a 7B w1) plus the two vocabulary pairs held
until both halves are read (wte + vte and lm_head + vision_head: 0.7 GB in bf16, 1.3 GB in float32) plus about
0.5 GB of libraries: about 3.5 GB (bf16) / 4 GB (float32) for the 7B model. The VQGAN (0.6 GB read, 0.6 GB
converted) is written and freed before the language model. Measured on a synthetic 0.88 GB checkpoint in the
published layout: 0.76 GB peak RSS with 256 MB shards, 1.34 GB as one shard, 11 s on two CPU cores (a 13.6 GB
checkpoint: a few minutes, mostly disk; the sha256 of the sources recorded in the manifest reads them once more).
Everything written is safetensors; the folder is built beside DST and moved into place when complete.

Parity with upstream is tested by ``tests/test_lwm_convert.py`` against ``tests/fixtures/lwm_upstream.safetensors``
(made by upstream's own code: ``tests/fixtures/upstream/make_lwm.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ACDCError, InvalidInputError, MissingModelFilesError
from ..progress import ProgressFn, no_progress

HUB = "LargeWorldModel/LWM-Chat-1M-Jax (or LWM-Chat-128K-Jax, LWM-Chat-32K-Jax)"
SOURCE_FILES: dict[str, str] = {
    "params": "the language model, EasyLM streaming msgpack",
    "vqgan": "the VQGAN's Flax params, a pickle",
    "tokenizer.model": "the LLaMA sentencepiece tokenizer",
}
EXTRA = 'pip install "acdc-story[convert]"'
MANIFEST = "acdc_arm.json"
FORMAT_VERSION = 2

# The prompt as the models were trained (see the module docstring): the engine puts BOS in front.
TEXT_FORMAT = "You are a helpful assistant. USER: Generate an image of {prompt} ASSISTANT: <vision>"
VIDEO_TEXT_FORMAT = "You are a helpful assistant. USER: Generate a video of {prompt} ASSISTANT: <vision>"
VISION_START, VISION_END = "<vision>", "</vision>"
GRID = (16, 16)              # LWM's frames: 16 x 16 codes, then end-of-frame (257 tokens a frame)

# upstream's LLaMAConfig / VideoLLaMAConfig defaults and its '7b' preset (lwm/llama.py LLAMA_STANDARD_CONFIGS)
UPSTREAM_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "max_sequence_length": 4096, "rms_norm_eps": 1e-6, "theta": 10000,
    "tie_word_embeddings": False, "vision_vocab_size": 8448, "tie_vision_embeddings": False, "param_scan_axis": 0}
PRESETS: dict[str, dict[str, Any]] = {"7b": dict(UPSTREAM_DEFAULTS)}
# What upstream's scripts pass as --update_llama_config for every vision-language model (run_sample_image.sh,
# run_sample_video.sh, run_vision_chat.sh); max_sequence_length follows the model's context (name).
LWM_THETA = 50_000_000
DEFAULT_CONTEXT = 32768      # what the sampling scripts use
# upstream config keys that only steer how upstream runs (sharding, scanning, sampling), not what the weights mean
RUNTIME_KEYS = frozenset({
    "scan_attention", "scan_mlp", "scan_query_chunk_size", "scan_key_chunk_size", "scan_mlp_chunk_size",
    "scan_layers", "mesh_dim", "sample_mode", "use_cache", "initializer_range", "resid_pdrop", "embd_pdrop",
    "attn_pdrop", "bos_token_id", "eos_token_id"})

DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
                                  "fp32": torch.float32}


# --------------------------------------------------------------------------------------------------
# Checks before any heavy work
# --------------------------------------------------------------------------------------------------
def _check_source(src: Path) -> dict[str, Path]:
    if not src.is_dir():
        raise MissingModelFilesError(
            f"{src} is not a folder. Download the LWM checkpoint folder ({HUB}: params, vqgan, tokenizer.model) "
            "and give its path.")
    missing = [f"{name} ({what})" for name, what in SOURCE_FILES.items() if not (src / name).is_file()]
    if missing:
        raise MissingModelFilesError(
            f"{src} lacks {'; '.join(missing)}. Download the missing file(s) from the model's hub repository, "
            f"{HUB}, into {src}.")
    return {name: src / name for name in SOURCE_FILES}


def _check_destination(dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InvalidInputError(
            f"{dst} already exists and is not an empty folder; the converter writes a new folder. Give another "
            "destination, or remove it first.")


def _require_extra() -> None:
    missing = []
    for module, package in (("sentencepiece", "sentencepiece"), ("google.protobuf", "protobuf")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingModelFilesError(
            f"converting LWM needs {' and '.join(missing)} (only at conversion time, to turn tokenizer.model into "
            f"tokenizer.json): {EXTRA}.")


def _pickle_refused(path: Path) -> InvalidInputError:
    return InvalidInputError(
        f"{path} is a pickle (LWM publishes its VQGAN's Flax params that way) and reading a pickle can run code. "
        "It is read only when you allow it: pass allow_pickle=True (CLI: --allow-pickle-vqgan), and only for the "
        f"vqgan file from LWM's own hub repository, {HUB}. It is then read by a restricted unpickler that accepts "
        "nothing but dicts and numpy arrays, and the converted folder holds safetensors only.")


def _output_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in (torch.bfloat16, torch.float32):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise InvalidInputError(f"dtype must be bfloat16 (the published precision, lossless) or float32, got {dtype!r}.")


# --------------------------------------------------------------------------------------------------
# The configuration (upstream's load_llama_config + update_llama_config, as data)
# --------------------------------------------------------------------------------------------------
def context_from_name(name: str) -> int:
    """The context LWM's model name states (``LWM-Chat-1M-Jax`` -> 1,048,576; ``-128K`` -> 131,072; ``-32K`` ->
    32,768), else the 32,768 upstream's sampling scripts use."""
    match = re.search(r"(\d+)\s*([KM])(?![A-Za-z])", name, flags=re.IGNORECASE)
    if not match:
        return DEFAULT_CONTEXT
    return int(match.group(1)) * (1024 if match.group(2).upper() == "K" else 1024 * 1024)


def model_name_of(src: Path) -> str:
    """LWM's model name for a source folder: the folder's own name, or for a hub cache snapshot
    (``models--LargeWorldModel--LWM-Chat-1M-Jax/snapshots/<hash>``) the repository's."""
    for part in reversed(src.resolve().parts):
        name = part.rsplit("--", 1)[-1]
        if name.upper().startswith("LWM"):
            return name
    return src.resolve().name


def parse_update(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values read as JSON, else kept as text) -> a dict, as upstream's
    ``--update_llama_config="dict(theta=50000000, ...)"`` without evaluating code."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--update takes KEY=VALUE (e.g. theta=50000000), got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def resolve_config(src: Path, config: Optional[str | Path | Mapping[str, Any]] = None,
                   update: Optional[Mapping[str, Any]] = None, model_name: Optional[str] = None) -> dict[str, Any]:
    """Upstream's LLaMAConfig values for the checkpoint in ``src``.

    ``config``: a preset name (``"7b"``: LLaMA-2-7B as upstream's ``LLAMA_STANDARD_CONFIGS``), a JSON file of
    upstream's config keys (``--load_llama_config json::PATH``), or a dict of them. ``None``: ``src/config.json`` if
    there is one, else the 7B preset updated as LWM's scripts update it (theta 50,000,000, max_sequence_length from
    the model's name, see ``context_from_name``). ``update`` then overrides single keys
    (``--update_llama_config``). Keys that only steer upstream's runtime (``RUNTIME_KEYS``) are accepted and ignored.
    """
    name = model_name or model_name_of(src)
    if config is None and (src / "config.json").is_file():
        config = src / "config.json"
    if config is None:
        values = {**PRESETS["7b"], "theta": LWM_THETA, "max_sequence_length": context_from_name(name)}
        origin = f"LLaMA-2-7B preset with LWM's theta {LWM_THETA:,} and context {context_from_name(name):,} ({name})"
    elif isinstance(config, Mapping):
        values, origin = {**UPSTREAM_DEFAULTS, **config}, "given config"
    elif str(config) in PRESETS:
        values, origin = dict(PRESETS[str(config)]), f"preset {config}"
    else:
        path = Path(config)
        if not path.is_file():
            raise MissingModelFilesError(
                f"config {config!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file that exists.")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"{path} could not be read as JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise InvalidInputError(f"{path} holds {type(loaded).__name__}, not a JSON object of config keys.")
        values, origin = {**UPSTREAM_DEFAULTS, **loaded}, str(path)
    for key, value in dict(update or {}).items():
        if key not in UPSTREAM_DEFAULTS and key not in RUNTIME_KEYS:
            raise InvalidInputError(f"unknown config key {key!r} in the update; known: "
                                    f"{', '.join(sorted(UPSTREAM_DEFAULTS))}.")
        values[key] = value
    resolved = {key: values[key] for key in UPSTREAM_DEFAULTS}
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_sequence_length", "vision_vocab_size"):
        if isinstance(resolved[key], bool) or not isinstance(resolved[key], int) or resolved[key] <= 0:
            raise InvalidInputError(f"config {key} must be a positive whole number, got {resolved[key]!r}.")
    if resolved["hidden_size"] % resolved["num_attention_heads"] or (
            resolved["hidden_size"] // resolved["num_attention_heads"]) % 2:
        raise InvalidInputError(f"config hidden_size {resolved['hidden_size']} does not split into "
                                f"{resolved['num_attention_heads']} heads of an even size.")
    if resolved["param_scan_axis"] != 0:
        raise InvalidInputError("param_scan_axis must be 0 (upstream's default, what the published checkpoints "
                                f"use), got {resolved['param_scan_axis']!r}.")
    resolved["origin"] = origin
    return resolved


# --------------------------------------------------------------------------------------------------
# The streaming params file: msgpack headers parsed here, arrays read in place
# --------------------------------------------------------------------------------------------------
_DTYPES: dict[str, tuple[Any, torch.dtype]] = {       # flax's dtype name -> (numpy type to read the bytes, torch)
    "bfloat16": (np.uint16, torch.bfloat16), "float16": (np.float16, torch.float16),
    "float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64),
    "int8": (np.int8, torch.int8), "uint8": (np.uint8, torch.uint8), "int32": (np.int32, torch.int32),
    "int64": (np.int64, torch.int64), "bool": (np.bool_, torch.bool)}


@dataclass(frozen=True)
class StoredArray:
    """One array of a streaming checkpoint: its dtype and shape, and where its bytes lie in the file (several
    ranges for a chunked record). ``read`` returns a flat range of its elements as a torch tensor."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    parts: tuple[tuple[int, int], ...]      # (file offset, byte count), in element order

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def read(self, start: int = 0, count: Optional[int] = None) -> torch.Tensor:
        np_type, torch_type = _DTYPES[self.dtype]
        itemsize = np.dtype(np_type).itemsize
        count = self.numel - start if count is None else count
        out = np.empty(count, dtype=np_type)
        filled, first = 0, 0                 # elements written; element index of the current part's start
        with self.path.open("rb") as handle:
            for offset, nbytes in self.parts:
                n = nbytes // itemsize
                lo, hi = max(start, first), min(start + count, first + n)
                if lo < hi:
                    handle.seek(offset + (lo - first) * itemsize)
                    if handle.readinto(out[filled:filled + hi - lo].view(np.uint8)) != (hi - lo) * itemsize:
                        raise _corrupt(self.path, "it ends inside an array")
                    filled += hi - lo
                first += n
        tensor = torch.from_numpy(out)
        return tensor.view(torch_type) if torch_type == torch.bfloat16 else tensor


def _corrupt(path: Path, why: str) -> InvalidInputError:
    return InvalidInputError(f"{path} could not be read as a streaming checkpoint (EasyLM/tux msgpack): {why}. "
                             f"Download params again from {HUB}.")


class _Msgpack:
    """msgpack headers from a binary file (the subset flax and tux write), skipping large binary payloads."""

    def __init__(self, handle, path: Path) -> None:
        self.f, self.path = handle, path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _corrupt(self.path, "it is truncated (an interrupted download?)")
        return data

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def head(self) -> tuple[str, Any]:
        b = self.take(1)[0]
        if b <= 0x7F:
            return "int", b
        if b >= 0xE0:
            return "int", b - 0x100
        if b <= 0x8F:
            return "map", b & 0x0F
        if b <= 0x9F:
            return "array", b & 0x0F
        if b <= 0xBF:
            return "str", b & 0x1F
        if b == 0xC0:
            return "nil", None
        if b in (0xC2, 0xC3):
            return "bool", b == 0xC3
        if 0xC4 <= b <= 0xC6:
            return "bin", self.uint(1 << (b - 0xC4))
        if 0xC7 <= b <= 0xC9:
            n = self.uint(1 << (b - 0xC7))
            return "ext", (int.from_bytes(self.take(1), "big", signed=True), n)
        if b == 0xCA:
            return "float", struct.unpack(">f", self.take(4))[0]
        if b == 0xCB:
            return "float", struct.unpack(">d", self.take(8))[0]
        if 0xCC <= b <= 0xCF:
            return "int", self.uint(1 << (b - 0xCC))
        if 0xD0 <= b <= 0xD3:
            return "int", int.from_bytes(self.take(1 << (b - 0xD0)), "big", signed=True)
        if 0xD4 <= b <= 0xD8:
            return "ext", (int.from_bytes(self.take(1), "big", signed=True), 1 << (b - 0xD4))
        if 0xD9 <= b <= 0xDB:
            return "str", self.uint(1 << (b - 0xD9))
        if b in (0xDC, 0xDD):
            return "array", self.uint(2 << (b - 0xDC))
        if b in (0xDE, 0xDF):
            return "map", self.uint(2 << (b - 0xDE))
        raise _corrupt(self.path, f"byte 0x{b:02x} at offset {self.f.tell() - 1} starts no msgpack object")

    def value(self) -> Any:
        """A small object (keys, shapes, dtype names), decoded."""
        kind, info = self.head()
        if kind == "str":
            return self.take(info).decode("utf-8")
        if kind == "bin":
            return self.take(info)
        if kind == "array":
            return [self.value() for _ in range(info)]
        if kind == "map":
            return {self.value(): self.value() for _ in range(info)}
        if kind == "ext":
            raise _corrupt(self.path, f"an unexpected extension object at offset {self.f.tell()}")
        return info

    def array_ext(self, info: tuple[int, int]) -> StoredArray:
        """flax's ndarray extension: msgpack (shape, dtype name, raw C-order bytes)."""
        code, length = info
        if code not in (1, 3):                 # flax's _MsgpackExtType.ndarray / npscalar
            raise _corrupt(self.path, f"extension type {code} is not one of flax's arrays")
        end = self.f.tell() + length
        kind, n = self.head()
        if kind != "array" or n != 3:
            raise _corrupt(self.path, "an array extension is not (shape, dtype, data)")
        shape, dtype = tuple(int(v) for v in self.value()), self.value()
        dtype = dtype.decode() if isinstance(dtype, bytes) else str(dtype)
        kind, nbytes = self.head()
        if kind != "bin" or dtype not in _DTYPES:
            raise _corrupt(self.path, f"an array of dtype {dtype!r} (read: {', '.join(_DTYPES)})")
        offset = self.f.tell()
        self.f.seek(nbytes, 1)
        if self.f.tell() != end or nbytes != math.prod(shape) * np.dtype(_DTYPES[dtype][0]).itemsize:
            raise _corrupt(self.path, f"an array of shape {list(shape)} ({dtype}) holds {nbytes} bytes")
        return StoredArray(self.path, dtype, shape, ((offset, nbytes),))

    def stored(self) -> StoredArray:
        kind, info = self.head()
        if kind == "ext":
            return self.array_ext(info)
        if kind != "map":
            raise _corrupt(self.path, f"a record holds a {kind}, not an array")
        entries: dict[str, Any] = {}
        for _ in range(info):               # flax's chunked array: {__msgpack_chunked_array__, shape, chunks}
            name = self.value()
            if name == "chunks":
                kind, n = self.head()
                if kind != "map":
                    raise _corrupt(self.path, "a chunked array's chunks are not a map")
                chunks = {}
                for _ in range(n):
                    index = int(self.value())
                    ext_kind, ext_info = self.head()
                    if ext_kind != "ext":
                        raise _corrupt(self.path, "a chunk is not an array")
                    chunks[index] = self.array_ext(ext_info)
                entries["chunks"] = [chunks[i] for i in range(len(chunks))]
            else:
                entries[name] = self.value()
        if entries.get("__msgpack_chunked_array__") is not True or "chunks" not in entries:
            raise _corrupt(self.path, "a record holds a map that is not a chunked array")
        shape = tuple(int(entries["shape"][str(i)]) for i in range(len(entries["shape"])))
        chunks = entries["chunks"]
        dtypes = {c.dtype for c in chunks}
        if len(dtypes) != 1 or sum(c.numel for c in chunks) != math.prod(shape):
            raise _corrupt(self.path, f"the chunks of an array of shape {list(shape)} do not add up")
        return StoredArray(self.path, chunks[0].dtype, shape, tuple(p for c in chunks for p in c.parts))


def read_params_index(path: str | Path) -> list[tuple[tuple[str, ...], StoredArray]]:
    """Every record of a streaming checkpoint, in file order: (key tuple, where its array lies). Reads headers
    only (a few kilobytes of a 13.6 GB file)."""
    path = Path(path)
    records = []
    with path.open("rb") as handle:
        reader = _Msgpack(handle, path)
        while True:
            first = handle.read(1)
            if not first:
                break
            handle.seek(-1, 1)
            kind, n = reader.head()
            if kind != "array" or n != 2:
                raise _corrupt(path, f"record {len(records)} is not a (key, value) pair")
            key = reader.value()
            if not isinstance(key, list) or not key:
                raise _corrupt(path, f"record {len(records)} has no key path")
            kind, length = reader.head()
            if kind != "bin":
                raise _corrupt(path, f"record {len(records)} ({'/'.join(map(str, key))}) holds no serialised array")
            end = handle.tell() + length
            array = reader.stored()
            if handle.tell() != end:
                raise _corrupt(path, f"record {'/'.join(map(str, key))} is longer than its array")
            records.append((tuple(str(k) for k in key), array))
    if not records:
        raise _corrupt(path, "it holds no records (an empty file?)")
    return records


def iter_arrays(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every array of a streaming checkpoint as ('/'-joined key, tensor), read one at a time (for inspection)."""
    for key, array in read_params_index(path):
        yield "/".join(key), array.read().reshape(array.shape)


# --------------------------------------------------------------------------------------------------
# The language model: plan (shapes checked, headers only), then write shard by shard
# --------------------------------------------------------------------------------------------------
_LAYER: dict[str, str] = {
    "attention/wq/kernel": "self_attn.q_proj.weight", "attention/wk/kernel": "self_attn.k_proj.weight",
    "attention/wv/kernel": "self_attn.v_proj.weight", "attention/wo/kernel": "self_attn.o_proj.weight",
    "feed_forward/w1/kernel": "mlp.gate_proj.weight", "feed_forward/w3/kernel": "mlp.up_proj.weight",
    "feed_forward/w2/kernel": "mlp.down_proj.weight", "attention_norm/kernel": "input_layernorm.weight",
    "ffn_norm/kernel": "post_attention_layernorm.weight"}
_TOP = ("transformer/wte/embedding", "transformer/vte/embedding", "transformer/ln_f/kernel", "lm_head/kernel",
        "vision_head/kernel")


def _layer_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    d, i = cfg["hidden_size"], cfg["intermediate_size"]
    return {"attention/wq/kernel": (d, d), "attention/wk/kernel": (d, d), "attention/wv/kernel": (d, d),
            "attention/wo/kernel": (d, d), "feed_forward/w1/kernel": (d, i), "feed_forward/w3/kernel": (d, i),
            "feed_forward/w2/kernel": (i, d), "attention_norm/kernel": (d,), "ffn_norm/kernel": (d,)}


@dataclass
class _Plan:
    records: list[tuple[str, Optional[int], StoredArray]]   # (flax name, layer or None for stacked/top, array)
    layout: str                                              # "scan" (published), "layers" or both
    layers: int


def plan_language_model(records: Sequence[tuple[tuple[str, ...], StoredArray]], cfg: Mapping[str, Any],
                        where: Path) -> _Plan:
    """Check every record's name and shape against the config before anything is converted."""
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    top_shapes = {"transformer/wte/embedding": (cfg["vocab_size"], d),
                  "transformer/vte/embedding": (cfg["vision_vocab_size"], d), "transformer/ln_f/kernel": (d,),
                  "lm_head/kernel": (d, cfg["vocab_size"]), "vision_head/kernel": (d, cfg["vision_vocab_size"])}
    per_layer = _layer_shapes(cfg)
    planned: list[tuple[str, Optional[int], StoredArray]] = []
    unknown, wrong, seen = [], [], {}
    layouts = set()
    for key, array in records:
        while key and key[0] == "params":        # trainstate_params files nest the tree under params/params
            key = key[1:]
        name = "/".join(key)
        if len(key) > 3 and key[:2] == ("transformer", "h") and "/".join(key[3:]) in per_layer:
            sub = "/".join(key[3:])
            if key[2] == "scan_decoder":         # the published layout: [layers, ...]
                layouts.add("scan")
                entry, expected, covers = (sub, None, array), (L,) + per_layer[sub], [(i, sub) for i in range(L)]
            elif key[2].isdigit() and int(key[2]) < L:
                layouts.add("layers")
                layer = int(key[2])
                entry, expected, covers = (sub, layer, array), per_layer[sub], [(layer, sub)]
            else:
                unknown.append(name)
                continue
        elif name in top_shapes:
            entry, expected, covers = (name, None, array), top_shapes[name], [(None, name)]
        else:
            unknown.append(name)
            continue
        if tuple(array.shape) != expected:
            wrong.append(f"{name} {list(array.shape)} (the config needs {list(expected)})")
        for cover in covers:
            seen[cover] = seen.get(cover, 0) + 1
        planned.append(entry)
    optional = {"lm_head/kernel"} if cfg["tie_word_embeddings"] else set()
    optional |= {"vision_head/kernel"} if cfg["tie_vision_embeddings"] else set()
    needed = [(i, sub) for i in range(L) for sub in per_layer] + [(None, n) for n in top_shapes if n not in optional]
    missing = [f"{'' if i is None else f'layer {i} '}{sub}" for i, sub in needed if (i, sub) not in seen]
    twice = [f"{'' if i is None else f'layer {i} '}{sub}" for (i, sub), n in seen.items() if n > 1]
    if (None, "transformer/vte/embedding") not in seen and (None, "transformer/wte/embedding") in seen:
        raise InvalidInputError(
            f"{where} has no vision embedding (transformer/vte): it is a text-only LWM checkpoint (LWM-Text-*). Only "
            f"the vision-language models generate images: {HUB}.")
    problems = []
    if wrong:
        problems.append(f"shapes that do not fit the config: {'; '.join(wrong[:6])}"
                        f"{f' and {len(wrong) - 6} more' if len(wrong) > 6 else ''}")
    if unknown:
        problems.append(f"tensors LWM's model has no place for: {', '.join(unknown[:6])}")
    if missing:
        problems.append(f"missing: {', '.join(missing[:6])}{f' and {len(missing) - 6} more' if len(missing) > 6 else ''}")
    if twice:
        problems.append(f"stored twice: {', '.join(twice[:6])}")
    if problems:
        raise InvalidInputError(
            f"{where} does not fit the config ({cfg['origin']}: {cfg['num_hidden_layers']} layers, hidden "
            f"{cfg['hidden_size']}, vocabulary {cfg['vocab_size']} + {cfg['vision_vocab_size']}): "
            + "; ".join(problems) + ". Pass the checkpoint's own config (config=/--config, --update KEY=VALUE).")
    return _Plan(planned, "+".join(sorted(layouts)), L)


def _rope_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """q_proj/k_proj rows from upstream's adjacent-pair RoPE to transformers' rotate_half order, head by head:
    new row i = old row 2i, new row d/2 + i = old row 2i + 1 (d the head size)."""
    out, inp = weight.shape
    return weight.reshape(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def _to_torch_layer(sub: str, kernel: torch.Tensor, heads: int) -> torch.Tensor:
    if sub.endswith("norm/kernel"):
        return kernel
    weight = kernel.T                         # Flax Dense [in, out] -> torch Linear [out, in]
    if sub in ("attention/wq/kernel", "attention/wk/kernel"):
        weight = _rope_permute(weight, heads)
    return weight


class _ShardWriter:
    """safetensors shards of at most ``limit`` bytes (about), named as transformers names them, with an index."""

    def __init__(self, folder: Path, limit: int, stem: str = "model") -> None:
        self.folder, self.limit, self.stem = folder, limit, stem
        self.pending: dict[str, torch.Tensor] = {}
        self.size, self.total = 0, 0
        self.parts: list[tuple[Path, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        self.size += nbytes
        self.total += nbytes
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if self.pending:
            path = self.folder / f".{self.stem}-part{len(self.parts)}.safetensors"
            save_file(self.pending, str(path), metadata={"format": "pt"})
            self.parts.append((path, sorted(self.pending)))
            self.pending, self.size = {}, 0

    def close(self) -> list[Path]:
        self.flush()
        if len(self.parts) == 1:
            final = self.folder / f"{self.stem}.safetensors"
            self.parts[0][0].rename(final)
            return [final]
        weight_map, files = {}, []
        for index, (path, names) in enumerate(self.parts, start=1):
            final = self.folder / f"{self.stem}-{index:05d}-of-{len(self.parts):05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
        index_path = self.folder / f"{self.stem}.safetensors.index.json"
        index_path.write_text(json.dumps({"metadata": {"total_size": self.total}, "weight_map": weight_map},
                                         indent=2) + "\n", encoding="utf-8")
        return files


def write_language_model(plan: _Plan, cfg: Mapping[str, Any], folder: Path, dtype: torch.dtype,
                         special: Mapping[str, int], *, shard_size: int = 2 * 1024**3,
                         progress: ProgressFn = no_progress) -> list[Path]:
    """The LlamaForCausalLM's config.json and safetensors shards, record by record (one layer at a time)."""
    from transformers import LlamaConfig

    heads, L = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    folder.mkdir(parents=True, exist_ok=True)
    LlamaConfig(
        vocab_size=cfg["vocab_size"] + cfg["vision_vocab_size"], hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=L, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=cfg["max_sequence_length"],
        rms_norm_eps=float(cfg["rms_norm_eps"]), rope_theta=float(cfg["theta"]), hidden_act="silu",
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, bos_token_id=special["bos"],
        eos_token_id=special["eos"], pad_token_id=special["pad"], architectures=["LlamaForCausalLM"],
        dtype=str(dtype).removeprefix("torch."),
    ).save_pretrained(folder)
    writer = _ShardWriter(folder, shard_size)
    pairs: dict[str, dict[str, torch.Tensor]] = {"model.embed_tokens.weight": {}, "lm_head.weight": {}}

    def pair(target: str, part: str, tensor: torch.Tensor) -> None:
        pairs[target][part] = tensor.to(dtype)
        if len(pairs[target]) == 2:            # text rows first, then the vision rows (LM id = 32000 + vision id)
            writer.add(target, torch.cat([pairs[target]["text"], pairs[target]["vision"]]))
            pairs[target] = {}

    for step, (name, layer, array) in enumerate(plan.records, start=1):
        if name in _LAYER:
            if layer is not None:
                writer.add(f"model.layers.{layer}.{_LAYER[name]}",
                           _to_torch_layer(name, array.read().reshape(array.shape), heads).to(dtype))
            else:
                per = array.numel // L
                for i in range(L):
                    kernel = array.read(i * per, per).reshape(array.shape[1:])
                    writer.add(f"model.layers.{i}.{_LAYER[name]}", _to_torch_layer(name, kernel, heads).to(dtype))
        elif name == "transformer/ln_f/kernel":
            writer.add("model.norm.weight", array.read().to(dtype))
        else:
            tensor = array.read().reshape(array.shape)
            if name == "transformer/wte/embedding":
                pair("model.embed_tokens.weight", "text", tensor)
                if cfg["tie_word_embeddings"]:
                    pair("lm_head.weight", "text", tensor)
            elif name == "transformer/vte/embedding":
                pair("model.embed_tokens.weight", "vision", tensor)
                if cfg["tie_vision_embeddings"]:
                    pair("lm_head.weight", "vision", tensor)
            elif name == "lm_head/kernel":
                pair("lm_head.weight", "text", tensor.T)
            else:
                pair("lm_head.weight", "vision", tensor.T)
        progress("lwm: language model", step, len(plan.records))
    return writer.close()


# --------------------------------------------------------------------------------------------------
# The VQGAN pickle: a restricted unpickler, then diffusers' VQModel names
# --------------------------------------------------------------------------------------------------
def _numpy_attr(name: str) -> Any:
    core = getattr(np, "_core", None) or np.core   # numpy >= 2 renamed numpy.core to numpy._core
    return getattr(core.multiarray, name)


def _jax_array(fun: Any, args: Any, arr_state: Any, aval_state: Any = None) -> np.ndarray:
    """What jax's ``_reconstruct_array`` rebuilds, as the numpy array it wraps (``fun``/``args`` are numpy's
    ``_reconstruct`` and ndarray, themselves resolved through the same restricted lookup)."""
    array = fun(*args)
    array.__setstate__(arr_state)
    return array


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _ml_dtype(name: str) -> Any:
    try:
        import ml_dtypes
    except ImportError as err:
        raise InvalidInputError(f"the vqgan pickle holds {name} arrays, which numpy reads only with ml-dtypes: "
                                "pip install ml-dtypes.") from err
    return getattr(ml_dtypes, name)


# What a pickle of Flax params needs (found by pickling real ones with jax 0.4.29 / flax 0.8.4, see
# tests/fixtures/upstream/make_lwm.py): numpy arrays and dtypes; flax's FrozenDict (rebuilt as a dict); jax arrays
# (rebuilt as the numpy arrays they pickle); bfloat16 from ml_dtypes; bytes through codecs (protocol 2).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_attr("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_attr("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("collections", "OrderedDict"): lambda: dict,
    ("builtins", "dict"): lambda: dict,
    ("flax.core.frozen_dict", "FrozenDict"): lambda: dict,
    ("jax._src.array", "_reconstruct_array"): lambda: _jax_array,
    ("_codecs", "encode"): lambda: _latin1,
    ("ml_dtypes", "bfloat16"): lambda: _ml_dtype("bfloat16"),
}


class _FlaxParamsUnpickler(pickle.Unpickler):
    def __init__(self, handle, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise InvalidInputError(
                f"{self.path} asks, while being unpickled, for {module}.{name}, which a pickle of Flax params does not "
                f"need; refused without running it. Use the vqgan file from {HUB}.")
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise InvalidInputError(f"{self.path} uses persistent ids, which a pickle of Flax params does not; refused.")


def read_vqgan(path: str | Path, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The VQGAN's Flax params as ``{'/'-joined path: numpy array}``. The file is a pickle, so this refuses unless
    ``allow_pickle``; then a restricted unpickler builds only dicts and numpy arrays (see ``_ALLOWED``), so a
    tampered file fails with the name of what it asked for instead of running it."""
    path = Path(path)
    if not allow_pickle:
        raise _pickle_refused(path)
    try:
        with path.open("rb") as handle:
            tree = _FlaxParamsUnpickler(handle, path).load()
    except ACDCError:
        raise
    except Exception as err:     # noqa: BLE001 - a broken pickle can fail in many ways; all mean the same here
        raise InvalidInputError(f"{path} could not be read as a pickle of Flax params ({type(err).__name__}: {err}). "
                                f"Download vqgan again from {HUB}.") from err
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray):
            flat[prefix] = node
        else:
            raise InvalidInputError(f"{path} holds a {type(node).__name__} at {prefix or 'the top'}, not a dict of "
                                    "arrays: it is not a pickle of Flax params.")

    walk(tree, "")
    return flat


_RESNET = {"GroupNorm_0": "norm1", "Conv_0": "conv1", "GroupNorm_1": "norm2", "Conv_1": "conv2",
           "Conv_2": "conv_shortcut"}


def _vq_name(path: str) -> Optional[str]:
    """diffusers' VQModel name of a Flax VQGAN param (None if LWM's VQGAN has no such param)."""
    parts = path.split("/")
    *modules, param = parts
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "embeddings": "weight"}.get(param)
    if leaf is None or not modules:
        return None
    if modules == ["quantize"] and param == "embeddings":
        return "quantize.embedding.weight"
    if modules in (["quant_conv"], ["post_quant_conv"]):
        return f"{modules[0]}.{leaf}"
    side, *rest = modules
    if side not in ("encoder", "decoder"):
        return None
    ends = {"Conv_0": "conv_in", "Conv_1": "conv_out", "GroupNorm_0": "conv_norm_out"}
    if len(rest) == 1 and rest[0] in ends:
        return f"{side}.{ends[rest[0]]}.{leaf}"
    block = re.fullmatch(r"(DownsamplingBlock|UpsamplingBlock|MidBlock)_(\d+)", rest[0]) if rest else None
    if block is None or len(rest) < 2:
        return None
    kind, index = block.group(1), block.group(2)
    base = {"DownsamplingBlock": f"{side}.down_blocks.{index}", "UpsamplingBlock": f"{side}.up_blocks.{index}",
            "MidBlock": f"{side}.mid_block"}[kind]
    if kind == "MidBlock" and index != "0":
        return None
    resnet = re.fullmatch(r"ResnetBlock_(\d+)", rest[1])
    if resnet and len(rest) == 3 and rest[2] in _RESNET:
        return f"{base}.resnets.{resnet.group(1)}.{_RESNET[rest[2]]}.{leaf}"
    if rest[1:] in (["Downsample_0", "Conv_0"], ["Upsample_0", "Conv_0"]):
        return f"{base}.{'downsamplers' if kind == 'DownsamplingBlock' else 'upsamplers'}.0.conv.{leaf}"
    return None


def vq_config(flat: Mapping[str, np.ndarray], where: Path) -> dict[str, Any]:
    """The diffusers VQModel config LWM's VQGAN params describe (channels, blocks, latent and codebook sizes)."""
    def shape(path: str) -> tuple[int, ...]:
        if path not in flat:
            raise InvalidInputError(f"{where} lacks {path}: it is not LWM's VQGAN (lwm/vqgan.py).")
        return tuple(flat[path].shape)

    attention = sorted(p for p in flat if "AttnBlock" in p)
    if attention:
        raise InvalidInputError(f"{where} has attention blocks ({attention[0]}, ...); LWM's VQGAN has none and this "
                                "converter maps only that architecture.")
    levels = sorted({int(m.group(1)) for p in flat for m in [re.match(r"encoder/DownsamplingBlock_(\d+)/", p)] if m})
    if not levels or levels != list(range(len(levels))):
        raise InvalidInputError(f"{where} has no encoder/DownsamplingBlock_0..n: it is not LWM's VQGAN.")
    channels = [shape(f"encoder/DownsamplingBlock_{i}/ResnetBlock_0/Conv_0/kernel")[-1] for i in levels]
    blocks = len({m.group(1) for p in flat
                  for m in [re.match(r"encoder/DownsamplingBlock_0/ResnetBlock_(\d+)/", p)] if m})
    codebook, embed = shape("quantize/embeddings")
    config = {
        "in_channels": shape("encoder/Conv_0/kernel")[2], "out_channels": shape("decoder/Conv_1/kernel")[-1],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels), "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": channels, "layers_per_block": blocks, "act_fn": "silu",
        "latent_channels": shape("encoder/Conv_1/kernel")[-1], "norm_num_groups": 32,
        "num_vq_embeddings": codebook, "vq_embed_dim": embed, "mid_block_add_attention": False,
        "sample_size": GRID[0] * 2 ** (len(levels) - 1)}
    odd = [c for c in channels if c % 32]
    if odd:
        raise InvalidInputError(f"{where}: channels {channels} are not multiples of 32, the group count of "
                                "upstream's GroupNorm; it is not LWM's VQGAN.")
    return config


def vq_state(flat: Mapping[str, np.ndarray], config: Mapping[str, Any], where: Path) -> dict[str, torch.Tensor]:
    """The params under diffusers' names (conv kernels HWIO -> OIHW), checked name by name and shape by shape
    against the VQModel ``config`` builds (on the meta device)."""
    from diffusers import VQModel

    from ..weights import check_state_matches, on_meta

    state, unknown = {}, []
    for path, array in flat.items():
        name = _vq_name(path)
        if name is None:
            unknown.append(path)
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tensor.ndim == 4:
            tensor = tensor.permute(3, 2, 0, 1)
        state[name] = tensor.contiguous()
    if unknown:
        raise InvalidInputError(f"{where} holds params LWM's VQGAN has no place for: {', '.join(sorted(unknown)[:6])}.")
    model = on_meta(lambda: VQModel(**config))
    check_state_matches(model, {k: tuple(v.shape) for k, v in state.items()}, f"The VQGAN in {where}")
    return state


def write_vq(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], folder: Path) -> None:
    """``vq/config.json`` (diffusers' own) and ``vq/diffusion_pytorch_model.safetensors`` (float32)."""
    from diffusers import VQModel
    from safetensors.torch import save_file

    from ..weights import on_meta

    folder.mkdir(parents=True, exist_ok=True)
    on_meta(lambda: VQModel(**config)).save_config(folder)
    save_file(dict(state), str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


# --------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------
def write_tokenizer(model_file: Path, folder: Path, text_vocab: int) -> tuple[Any, dict[str, int]]:
    """``lm/tokenizer.json`` converted by transformers from the sentencepiece model, checked to give sentencepiece's
    own ids on the prompt templates. Returns the tokenizer and its bos/eos/pad ids (pad = unk, as upstream's)."""
    import sentencepiece
    from transformers import LlamaTokenizer

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    if sp.get_piece_size() != text_vocab:
        raise InvalidInputError(f"{model_file} has {sp.get_piece_size()} pieces but the language model's text "
                                f"vocabulary is {text_vocab}: the tokenizer is from another model.")
    unk = sp.id_to_piece(sp.unk_id())
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(model_file, Path(tmp) / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(tmp, local_files_only=True, pad_token=unk)
    probe = "a cat on a mat, 2 birds"
    for text in (TEXT_FORMAT.format(prompt=probe), VIDEO_TEXT_FORMAT.format(prompt=probe), VISION_START, VISION_END):
        ours, theirs = tokenizer(text, add_special_tokens=False).input_ids, sp.encode(text)
        if list(ours) != list(theirs):
            raise InvalidInputError(f"the tokenizer transformers converted from {model_file} gives other ids than "
                                    f"sentencepiece for {text!r} ({ours[:8]}... vs {theirs[:8]}...); report this.")
    special = {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.unk_id()}
    if tokenizer.bos_token_id != special["bos"] or tokenizer.eos_token_id != special["eos"]:
        raise InvalidInputError(f"{model_file}: the converted tokenizer's BOS/EOS ids differ from sentencepiece's.")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return tokenizer, special


# --------------------------------------------------------------------------------------------------
# The manifest and the folder check
# --------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(tokenizer: Any, special: Mapping[str, int], cfg: Mapping[str, Any], vq: Mapping[str, Any],
             files: Mapping[str, Path], name: str) -> dict[str, Any]:
    """The ``acdc_arm.json`` of the converted folder (format 2; the field meanings are in arm/unified.py)."""
    codebook = int(vq["num_vq_embeddings"])
    first = {"guidance_scale": 5.0, "top_k": codebook, "temperature": 1.0, "top_p": 1.0}
    image = int(vq["sample_size"])
    return {
        "family": "unified", "format_version": FORMAT_VERSION, "image_size": [image, image], "grid": list(GRID),
        "image_order": "raster", "codebook_size": codebook, "image_token_offset": int(cfg["vocab_size"]),
        "special_tokens": {k: int(special[k]) for k in ("bos", "eos", "pad")},
        "text_format": TEXT_FORMAT, "video_text_format": VIDEO_TEXT_FORMAT,
        "image_start": [], "image_end": list(tokenizer(VISION_END, add_special_tokens=False).input_ids),
        "frame_end": codebook,
        "unconditional": {"mode": "text", "text": VISION_START},
        "text_slot": 0,
        "default_sampling": {"guidance_scale": 5.0, "temperature": 1.0, "top_k": codebook, "top_p": 1.0},
        "video_sampling": {"first": first, "later": {"guidance_scale": 1.0, "top_k": min(1000, codebook),
                                                     "temperature": 1.0, "top_p": 1.0}},
        "info": {
            "converted_from": f"LargeWorldModel/{name}" if name.upper().startswith("LWM") else name,
            "source_files": {file: _sha256(path) for file, path in files.items()},
            "rope_theta": cfg["theta"], "max_position_embeddings": cfg["max_sequence_length"],
            "upstream_config": {k: v for k, v in cfg.items() if k != "origin"}, "config_from": cfg["origin"],
            "end_of_video": codebook + 1, "vision_vocab_size": cfg["vision_vocab_size"],
            "converter": "acdc_core.convert.lwm (upstream: LargeWorldModel/LWM lwm/vision_llama.py, lwm/vqgan.py, "
                         "lwm/vision_generation.py)",
            "notes": ("LM ids: text 0..{t}, vision id v = {t1} + v (codes 0..{k}, {k1} end-of-frame, {k2} "
                      "end-of-video). The prompt is BOS + text_format's ids: one BOS, as the models were trained "
                      "(EasyLM's tokenizer, add_bos_token=False); upstream's HEAD script prepends a second. Upstream "
                      "samples image tokens from all {vv} vision ids (top-k 8192 first frame, 1000 later) and forces "
                      "end-of-frame every 257th token; the engine samples only the {kk} codes and appends frame_end. "
                      "A video's last frame ends with end-of-video and image_end in the training data."
                      ).format(t=int(cfg["vocab_size"]) - 1, t1=int(cfg["vocab_size"]), k=codebook - 1, k1=codebook,
                               k2=codebook + 1, vv=cfg["vision_vocab_size"], kk=codebook)}}


def check_converted(folder: str | Path) -> Path:
    """A converted folder has every file the engine reads (named all at once if not), and its shards are complete."""
    from ..weights import check_weight_folder

    folder = Path(folder)
    try:
        from ..arm.unified import MANIFEST as manifest_name, REQUIRED_FILES
    except ImportError:           # the engine's own list, when importable; else the same list spelled here
        manifest_name, REQUIRED_FILES = MANIFEST, ((MANIFEST,), ("lm/config.json",), ("lm/tokenizer.json",),
                                                   ("vq/config.json",))
    groups = tuple(REQUIRED_FILES) + (("lm/model.safetensors", "lm/model.safetensors.index.json"),
                                      ("vq/diffusion_pytorch_model.safetensors",))
    missing = [" or ".join(group) for group in groups if not any((folder / f).is_file() for f in group)]
    if missing:
        raise MissingModelFilesError(
            f"{folder} is not a complete converted LWM folder: it lacks {', '.join(missing)}. Convert again "
            f"(acdc convert lwm SRC DST) into an empty folder.")
    check_weight_folder(folder / "lm")
    check_weight_folder(folder / "vq")
    return folder / manifest_name


# --------------------------------------------------------------------------------------------------
# The whole conversion
# --------------------------------------------------------------------------------------------------
@dataclass
class _Checked:
    files: dict[str, Path]
    cfg: dict[str, Any]
    plan: _Plan
    vq_config: dict[str, Any]
    vq_state: dict[str, torch.Tensor] = field(repr=False)


def _check_all(src: Path, dst: Path, allow_pickle: bool, config: Any, update: Any, name: str) -> _Checked:
    files = _check_source(src)
    _check_destination(dst)
    _require_extra()
    if not allow_pickle:
        raise _pickle_refused(files["vqgan"])
    cfg = resolve_config(src, config, update, name)
    plan = plan_language_model(read_params_index(files["params"]), cfg, files["params"])
    flat = read_vqgan(files["vqgan"], allow_pickle=True)
    vq = vq_config(flat, files["vqgan"])
    state = vq_state(flat, vq, files["vqgan"])
    if cfg["vision_vocab_size"] < vq["num_vq_embeddings"] + 2:
        raise InvalidInputError(
            f"the language model has {cfg['vision_vocab_size']} vision ids, fewer than the VQGAN's "
            f"{vq['num_vq_embeddings']} codes + end-of-frame + end-of-video: params and vqgan are from different models.")
    return _Checked(files, cfg, plan, vq, state)


def convert_lwm(src: str | Path, dst: str | Path, *, allow_pickle: bool = False, dtype: Any = torch.bfloat16,
                config: Optional[str | Path | Mapping[str, Any]] = None, update: Optional[Mapping[str, Any]] = None,
                model_name: Optional[str] = None, shard_size: int = 2 * 1024**3,
                progress: Optional[ProgressFn] = None) -> Path:
    """Convert the LWM checkpoint folder ``src`` (``params``, ``vqgan``, ``tokenizer.model``) into the
    unified-vocabulary ARM folder ``dst`` (``acdc_arm.json``, ``lm/``, ``vq/``; safetensors only). Returns ``dst``.

    ``allow_pickle`` must be True to read ``vqgan`` (a pickle; see ``read_vqgan``). ``dtype``: the language model's
    precision on disk, bfloat16 (the published one: lossless, 13.6 GB for the 7B model) or float32 (27 GB; exact
    too). The VQ is always float32. ``config``/``update``/``model_name``: see ``resolve_config``. ``shard_size``:
    bytes per safetensors shard (an index json is written when there is more than one). ``progress``: called as
    ``progress(stage, step, total)``.

    Every check (files, destination, the conversion-time packages, the pickle permission, the config, every
    tensor's name and shape) runs before anything is written; the folder is built beside ``dst`` and moved into
    place when complete.
    """
    src, dst = Path(src), Path(dst)
    report = progress or no_progress
    out_dtype = _output_dtype(dtype)
    name = model_name or model_name_of(src)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInputError(f"shard_size must be a positive number of bytes, got {shard_size!r}.")
    checked = _check_all(src, dst, allow_pickle, config, update, name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        tokenizer, special = write_tokenizer(checked.files["tokenizer.model"], work / "lm", checked.cfg["vocab_size"])
        write_vq(checked.vq_state, checked.vq_config, work / "vq")
        report("lwm: vq", 1, 1)
        checked.vq_state = {}
        write_language_model(checked.plan, checked.cfg, work / "lm", out_dtype, special, shard_size=shard_size,
                             progress=report)
        data = manifest(tokenizer, special, checked.cfg, checked.vq_config, checked.files, name)
        (work / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        check_converted(work)
        if dst.exists():
            dst.rmdir()                          # empty (checked above)
        work.rename(dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dst


# --------------------------------------------------------------------------------------------------
# acdc convert lwm SRC DST
# --------------------------------------------------------------------------------------------------
def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The arguments of ``acdc convert lwm`` (on ``parser`` if given, e.g. a subparser)."""
    parser = parser or argparse.ArgumentParser(
        prog="acdc convert lwm", allow_abbrev=False,
        description="Convert LWM's JAX checkpoint folder (params, vqgan, tokenizer.model from "
                    f"{HUB}) into a unified-vocabulary ARM folder (safetensors only).")
    parser.add_argument("src", type=Path, help="the downloaded LWM folder (params, vqgan, tokenizer.model)")
    parser.add_argument("dst", type=Path, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--allow-pickle-vqgan", action="store_true",
                        help="read the vqgan file, a pickle (it could run code): only for the file from LWM's own "
                             "hub repository; read by a restricted unpickler")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="the language model's precision on disk (default: bfloat16, the published one)")
    parser.add_argument("--config", default=None,
                        help="upstream's config: a preset (7b) or a JSON file of its LLaMAConfig keys (default: "
                             "SRC/config.json if present, else 7b with LWM's theta 50,000,000 and the context of "
                             "the model's name)")
    parser.add_argument("--update", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, as upstream's --update_llama_config (e.g. theta=50000000, "
                             "max_sequence_length=1048576); repeatable")
    parser.add_argument("--model-name", default=None,
                        help="the model's name, e.g. LWM-Chat-1M-Jax (default: SRC's folder name, or the hub "
                             "repository's for a hub cache folder)")
    parser.add_argument("--shard-size", type=float, default=2.0, metavar="GB",
                        help="GiB per safetensors shard of the language model (default 2; peak RAM grows with it)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``acdc convert lwm`` (see ``build_parser``)."""
    from ..progress import print_progress

    out = convert_lwm(args.src, args.dst, allow_pickle=args.allow_pickle_vqgan, dtype=args.dtype,
                      config=args.config, update=parse_update(args.update), model_name=args.model_name,
                      shard_size=max(1, int(args.shard_size * 1024**3)), progress=print_progress())
    print(f"wrote {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``acdc convert lwm SRC DST [--allow-pickle-vqgan] [--dtype ...] [--config ...] [--update K=V] ...``;
    ``argv`` is what follows ``convert lwm``. Returns the exit status (2 with a message on a refused input)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ACDCError as error:
        print(f"acdc convert lwm: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

