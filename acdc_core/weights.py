"""What the engine agrees to load from a model folder, checked before any model is built.

Weights are safetensors only. Pickle checkpoints can run code when they are loaded, so every loader refuses
them by the one list of suffixes here, with a message that says to convert. A ``.safetensors`` file is
checked by its header alone (``check_safetensors``: the 8-byte header length, the JSON header, the tensors'
byte ranges against the file size), so a truncated, empty or renamed file (a pickle, a PyTorch zip, a Git LFS
pointer) is named with what to do instead of ending in a parser's traceback; ``check_weight_folder`` does that
for a folder and the shards its ``*.safetensors.index.json`` lists. ``check_state_matches`` compares a
file's tensor shapes with those of the model its config describes (built on the meta device, no memory), and
``check_loading_info`` reads what transformers reports after loading, so weights of another architecture
are named tensor by tensor. ``check_remote_code`` is the one place that words a config that needs its own
Python code (``auto_map``): that runs only when the caller passes ``trust_remote_code=True``.

Every check raises an ``acdc_core.errors`` error naming the file; none of them reads tensor data.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from .errors import InvalidInputError, MissingModelFilesError, UnknownModelFamilyError

PICKLE_SUFFIXES: frozenset[str] = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})

Shapes = dict[str, tuple[int, ...]]
T = TypeVar("T")

# safetensors' own limit on the JSON header (the Rust reader refuses larger ones).
_MAX_HEADER = 100_000_000
# Bits per element of the dtypes safetensors writes (sub-byte float formats are packed).
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "E8M0": 8, "I16": 16,
               "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64, "U64": 64,
               "F64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_CONVERT = ("Convert the original checkpoint to safetensors once, in an environment you trust "
            "(save_pretrained(..., safe_serialization=True) or safetensors.torch.save_file).")
_AGAIN = "Download or copy it again."
_SHOWN = 4   # names listed per kind of disagreement; the rest are counted


def is_pickle(path: str | Path) -> bool:
    """Whether ``path`` is named like a pickle checkpoint (by its suffix, case-insensitive)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def pickle_files(folder: str | Path, pattern: str = "*") -> list[str]:
    """Names of the pickle checkpoints matching ``pattern`` in ``folder`` (sorted; empty if none)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.glob(pattern) if p.is_file() and is_pickle(p)) if folder.is_dir() else []


# -- one file ---------------------------------------------------------------------------------------------

def _unreadable(path: Path, why: str) -> InvalidInputError:
    return InvalidInputError(f"{path} could not be read as a .safetensors file: {why}")


def _what_it_is(start: bytes) -> Optional[str]:
    """What a file that is not safetensors is, from its first bytes (None: nothing recognisable)."""
    if start[:4] == b"PK\x03\x04":
        return (f"it is a PyTorch zip checkpoint (torch.save) renamed to .safetensors; it is refused because "
                f"loading pickle can run code. {_CONVERT}")
    if len(start) > 1 and start[0] == 0x80 and 2 <= start[1] <= 5:
        return (f"it is a pickle file renamed to .safetensors; it is refused because loading pickle can run "
                f"code. {_CONVERT}")
    if start.startswith(b"version https://git-lfs"):
        return ("it is a Git LFS pointer (a small text file), not the weights: fetch the real file "
                "(git lfs pull, or download it again).")
    if start[:4] == b"GGUF":
        return ("it is a GGUF file renamed to .safetensors; GGUF is not loaded here (serve it with llama.cpp or "
                "Ollama, or use the model's safetensors release).")
    if start.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        return f"it is an HTML or XML page (a failed download?), not weights. {_AGAIN}"
    return None


def check_safetensors(path: str | Path) -> Shapes:
    """Check that ``path`` is a complete safetensors file, reading only its header; return tensor name -> shape.

    Raises ``MissingModelFilesError`` when the file is absent and ``InvalidInputError`` (message
    ``"<path> could not be read as a .safetensors file: <why>"``) when it is empty, truncated, longer than
    its tensors, a pickle / PyTorch zip / Git LFS pointer / GGUF under the wrong name, or has a broken header.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingModelFilesError(f"{path} does not exist (or is not a file); the model's weights belong there.")
    size = path.stat().st_size
    if size == 0:
        raise _unreadable(path, f"it is empty (0 bytes). {_AGAIN}")
    try:
        with path.open("rb") as file:
            start = file.read(64)
            length = struct.unpack("<Q", start[:8])[0] if len(start) >= 8 else None
            header = b""
            plausible = length is not None and 0 < length <= min(size - 8, _MAX_HEADER)
            if plausible:
                file.seek(8)
                header = file.read(length)
    except OSError as err:
        raise _unreadable(path, f"{err}.") from err
    kind = _what_it_is(start)
    if kind is not None:
        raise _unreadable(path, kind)
    if length is None:
        raise _unreadable(path, f"it is only {size} bytes long, too short for a header. {_AGAIN}")
    if length == 0:
        raise _unreadable(path, f"its header is empty (its first 8 bytes are zero). {_AGAIN}")
    if length > _MAX_HEADER:
        raise _unreadable(path, f"it does not start with a safetensors header length (its first 8 bytes read as "
                                f"{length:,}, the file has {size:,} bytes): it is not a safetensors file, or it is "
                                f"corrupt. {_AGAIN}")
    if length > size - 8:
        raise _unreadable(path, f"it is truncated: its header alone should be {length:,} bytes but the file has "
                                f"{size:,} (an interrupted download or copy?). {_AGAIN}")
    try:
        entries = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _unreadable(path, f"its header is not valid JSON ({err}); the file is corrupt or not safetensors. "
                                f"{_AGAIN}") from err
    if not isinstance(entries, dict):
        raise _unreadable(path, f"its header is not a JSON object. {_AGAIN}")
    shapes: Shapes = {}
    ranges = []
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
                raise ValueError("bad data_offsets")
        except (KeyError, TypeError, ValueError) as err:
            raise _unreadable(path, f"its header entry for {name!r} is malformed ({err!r}). {_AGAIN}") from err
        bits = _DTYPE_BITS.get(str(dtype))
        count = 1
        for n in shape:
            count *= n
        if bits is not None and (count * bits + 7) // 8 != end - begin:
            raise _unreadable(path, f"its header gives tensor {name!r} ({dtype}, shape {list(shape)}) {end - begin} "
                                    f"bytes, not the {(count * bits + 7) // 8} that shape needs; the file is corrupt. "
                                    f"{_AGAIN}")
        shapes[name] = shape
        ranges.append((begin, end, name))
    ranges.sort()
    covered = 0
    for begin, end, name in ranges:
        if begin != covered:
            raise _unreadable(path, f"its tensors do not lie end to end (a gap or an overlap before {name!r}); the "
                                    f"file is corrupt. {_AGAIN}")
        covered = end
    needed = 8 + length + covered
    if size < needed:
        raise _unreadable(path, f"it is truncated: its header describes {needed:,} bytes but the file has {size:,} "
                                f"(an interrupted download or copy?). {_AGAIN}")
    if size > needed:
        raise _unreadable(path, f"it has {size - needed:,} byte(s) after its last tensor (the header describes "
                                f"{needed:,}, the file has {size:,}); the file is corrupt. {_AGAIN}")
    return shapes


# -- a folder ---------------------------------------------------------------------------------------------

def _check_index(index: Path, checked: Mapping[str, Shapes]) -> None:
    """The shards ``index`` (a ``*.safetensors.index.json``) lists exist and hold the tensors it says they do."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{index} could not be read as a shard index (JSON with a \"weight_map\"): {err!r}. "
                                f"{_AGAIN}") from err
    shards = sorted(set(map(str, weight_map.values())))
    missing = [name for name in shards if name not in checked]
    if missing:
        raise MissingModelFilesError(
            f"{index} lists {len(missing)} shard(s) that are not in {index.parent}: {', '.join(missing[:_SHOWN])}"
            f"{' ...' if len(missing) > _SHOWN else ''}. The model is incomplete: download the missing shard(s).")
    absent = [(tensor, shard) for tensor, shard in weight_map.items() if tensor not in checked[shard]]
    if absent:
        tensor, shard = absent[0]
        raise InvalidInputError(
            f"{index} places {len(absent)} tensor(s) in shards that lack them (e.g. {tensor!r} in {shard}): the "
            f"index and the shards are from different downloads. Download the model folder again.")


def check_weight_folder(folder: str | Path) -> dict[str, Shapes]:
    """Check every ``*.safetensors`` in ``folder`` (headers only) and the shards each ``*.safetensors.index.json``
    there lists; return file name -> (tensor name -> shape). Raises the errors ``check_safetensors`` raises,
    and ``MissingModelFilesError`` for a shard an index lists but the folder lacks."""
    folder = Path(folder)
    checked = {path.name: check_safetensors(path) for path in sorted(folder.glob("*.safetensors")) if path.is_file()}
    for index in sorted(folder.glob("*.safetensors.index.json")):
        _check_index(index, checked)
    return checked


def weight_shapes(folder: str | Path, stem: str) -> Shapes:
    """The tensors a ``from_pretrained`` of ``folder`` reads: ``{stem}.safetensors``, else the shards of
    ``{stem}.safetensors.index.json``; every file checked as ``check_weight_folder`` does. Raises
    ``MissingModelFilesError`` when neither is there."""
    folder = Path(folder)
    checked = check_weight_folder(folder)
    single, index = f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single in checked:
        return dict(checked[single])
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        return {name: shape for shard in sorted(shards) for name, shape in checked[shard].items()}
    others = f" (it holds {', '.join(sorted(checked)[:_SHOWN])}: name the weights {single})" if checked else ""
    raise MissingModelFilesError(f"{folder} has no {single} nor {index.name}{others}.")


def load_part_float32(module: Any, folder: str | Path, stem: str, prefixes: Sequence[str], where: str) -> None:
    """Load ``module``'s weights in float32 from the tensors of ``{stem}.safetensors`` (or its shards) whose names
    start with one of ``prefixes`` (the prefix dropped): a part kept in float32 while the rest of the model was loaded
    in half precision (``decoding.keep_vq_float32``), read from the file rather than widened from rounded values."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / f"{stem}.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
             if not (folder / f"{stem}.safetensors").is_file() and index.is_file() else [f"{stem}.safetensors"])
    state = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is not None:
                    state[key[len(prefix):]] = handle.get_tensor(key).float()
    module.float()
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidInputError(f"{where}: the tensors under {' or '.join(prefixes)} do not fit the model "
                                f"(missing {_names(missing)}; unexpected {_names(unexpected)}).")


# -- weights against the model ----------------------------------------------------------------------------

def on_meta(build: Callable[[], T]) -> T:
    """``build()`` with the tensors it creates on the meta device: a model's shapes without its memory or time
    (for ``check_state_matches``)."""
    import torch

    with torch.device("meta"):
        return build()


def weights_name(folder: str | Path, stem: str) -> Path:
    """The file naming a folder's weights in messages: ``{stem}.safetensors``, else its shard index."""
    folder = Path(folder)
    single = folder / f"{stem}.safetensors"
    return single if single.is_file() else folder / f"{stem}.safetensors.index.json"


def _names(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _disagreement(where: str, mismatched: Sequence[tuple[str, Sequence[int], Sequence[int]]],
                  missing: Iterable[str], unexpected: Iterable[str]) -> Optional[InvalidInputError]:
    """The error for weights that do not fit their model (None if they fit)."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if not (mismatched or missing or unexpected):
        return None
    parts = []
    if mismatched:
        shown = "; ".join(f"{name}: the model expects {list(want)}, the file holds {list(got)}"
                          for name, got, want in sorted(mismatched, key=lambda m: m[0])[:_SHOWN])
        more = f"; and {len(mismatched) - _SHOWN} more" if len(mismatched) > _SHOWN else ""
        parts.append(f"{len(mismatched)} tensor(s) have other shapes ({shown}{more})")
    if missing:
        parts.append(f"{len(missing)} tensor(s) the model needs are missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) in the file are not in the model ({_names(unexpected)})")
    return InvalidInputError(
        f"{where} do not fit the model its config.json describes: {'; '.join(parts)}. These are the weights of "
        "another model or another size: keep the config.json saved with these weights beside them, or use the "
        "weights made for this config.")


def _ignored(patterns: Any, names: Iterable[str]) -> set[str]:
    """The names matching one of a transformers ``_keys_to_ignore_on_load_*`` list of regexes."""
    if not patterns:
        return set()
    regex = re.compile("|".join(f"({p})" for p in patterns))
    return {name for name in names if regex.search(name)}


def _expected(model: Any, found: Mapping[str, Any]) -> tuple[Shapes, set[str]]:
    """A model's state-dict names -> shapes (built on the meta device, nothing is allocated), and the names
    ``found`` may leave out: one that shares its tensor with a name ``found`` has (tied weights), or that the
    model says it may miss (transformers' ``_keys_to_ignore_on_load_missing``)."""
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    groups: dict[int, list[str]] = {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        groups.setdefault(id(tensor), []).append(name)
    fillable = {name for group in groups.values() if any(alias in found for alias in group) for name in group}
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None)
    if isinstance(tied, Mapping):   # transformers 5: tied target -> its source
        fillable |= {target for target, source in tied.items() if source in found}
    return shapes, fillable | _ignored(getattr(model, "_keys_to_ignore_on_load_missing", None), shapes)


def check_state_matches(model: Any, header_shapes: Mapping[str, Sequence[int]], where: str, *,
                        strict_keys: bool = True) -> None:
    """Raise ``InvalidInputError`` naming the tensors when ``header_shapes`` (a file's tensors, see
    ``weight_shapes``) do not fit ``model`` (best built on the meta device, see ``on_meta``): a tensor of another
    shape under the same name always; with ``strict_keys`` also tensors the model needs that the file lacks
    (tied weights aside) and tensors the file holds that the model has no place for. ``strict_keys=False`` suits
    transformers models, whose loader may rename keys (their key sets are compared after loading, by
    ``check_loading_info``); the counts of names that differ are still given with any shape mismatch."""
    found = {name: tuple(int(n) for n in shape) for name, shape in header_shapes.items()}
    expected, fillable = _expected(model, found)
    mismatched = [(name, found[name], expected[name]) for name in expected.keys() & found.keys()
                  if found[name] != expected[name]]
    missing = set(expected) - set(found) - fillable
    unexpected = set(found) - set(expected) - _ignored(getattr(model, "_keys_to_ignore_on_load_unexpected", None),
                                                       found)
    if not (mismatched or strict_keys):
        return   # only the names differ: the loader may rename them, and reports the rest itself
    error = _disagreement(where, mismatched, missing, unexpected)
    if error is not None:
        raise error


def check_loading_info(info: Mapping[str, Any], where: str, *, allow_unexpected: bool = False) -> list[str]:
    """Raise ``InvalidInputError`` when transformers' ``output_loading_info`` report (after its own renaming,
    tied weights and ignore lists) lists mismatched or missing tensors (left randomly initialised), or
    unexpected ones (weights the model has no place for) unless ``allow_unexpected``. Returns the unexpected
    names that were allowed (for the caller to log)."""
    mismatched = [(str(m[0]), tuple(m[1]), tuple(m[2])) for m in info.get("mismatched_keys") or ()]
    unexpected = sorted(info.get("unexpected_keys") or ())
    error = _disagreement(where, mismatched, info.get("missing_keys") or (), () if allow_unexpected else unexpected)
    if error is not None:
        raise error
    return unexpected if allow_unexpected else []


# -- code in a model folder -------------------------------------------------------------------------------

def read_config(path: str | Path) -> dict:
    """A config.json as a dict, or ``MissingModelFilesError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelFilesError(f"{path} does not exist; a transformers model folder needs its config.json.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingModelFilesError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise MissingModelFilesError(f"{path} is not a JSON object.")
    return data


def _code_refs(auto_map: Any) -> list[str]:
    """The ``module.Class`` references of a config's ``auto_map`` (a tokenizer entry is a [slow, fast] pair)."""
    values = auto_map.values() if isinstance(auto_map, Mapping) else ()
    refs = []
    for value in values:
        refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    return refs


def check_remote_code(folder: str | Path, trust_remote_code: bool, what: str = "model") -> dict:
    """Check that loading ``folder`` (config.json) with transformers runs no code unless the caller allows it;
    return the config.

    A ``model_type`` this transformers knows loads with its own code (an ``auto_map`` beside it is not used
    when ``trust_remote_code`` is False). An unknown one with an ``auto_map`` needs the folder's own Python
    code: ``UnknownModelFamilyError`` unless ``trust_remote_code``, and then the code files must be in the
    folder (``MissingModelFilesError``: nothing is fetched). An unknown one without ``auto_map`` cannot load.
    ``what`` names the model in messages ("LLM", "ARM's language model").
    """
    from transformers import CONFIG_MAPPING

    folder = Path(folder)
    config = read_config(folder / "config.json")
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    known = model_type in CONFIG_MAPPING
    if auto_map and trust_remote_code:
        refs = _code_refs(auto_map)
        remote = [ref for ref in refs if "--" in ref]
        if remote:
            raise MissingModelFilesError(
                f"{folder / 'config.json'} takes its code from another repository ({remote[0]}); this engine loads "
                "local files only. Copy that code into the folder and point auto_map at it.")
        files = {ref.rpartition(".")[0].replace(".", "/") + ".py" for ref in refs if "." in ref}
        absent = sorted(name for name in files if not (folder / name).is_file())
        if absent:
            raise MissingModelFilesError(
                f"The {what} in {folder} names Python code in its config.json auto_map that is not in the folder: "
                f"{', '.join(absent)}. Download the complete model folder (its *.py files included).")
        return config
    if known:
        return config
    if auto_map:
        raise UnknownModelFamilyError(
            f"The {what} in {folder} (model_type={model_type!r}) needs its own Python code. Pass "
            "trust_remote_code=True only if you trust that folder's code.")
    raise UnknownModelFamilyError(
        f"The {what} in {folder} has model_type={model_type!r}, which this transformers version does not know.")
