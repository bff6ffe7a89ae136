"""Chat backends for the memory module: the protocol, and a local transformers LLM (the OpenAI-compatible HTTP
endpoint is ``endpoint.py``).

Both meet :class:`ChatBackend`: ``chat(messages, max_new_tokens=, temperature=, seed=) -> str``, where
``messages`` are ``{"role": ..., "content": ...}`` dicts and the answer is the raw text the model wrote
(cleaning is the memory module's job). ``check()`` is cheap and lets a caller fail early, before
expensive work, on an endpoint that is down.

Security: local weights load from safetensors only, from a local folder, with ``trust_remote_code``
off unless the caller turns it on. The endpoint's API key is read at request time from an environment
variable named ``ACDC_LLM_API_KEY`` or ``ACDC_LLM_API_KEY_<NAME>`` only, and sent only to a host the user
allowed outside the workflow (see :class:`OpenAICompatibleLLM`); it is never stored on the object, logged,
or put in an error message, and URLs are printed through :func:`scrub_url`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, Union, runtime_checkable

import torch

from ..errors import InvalidInputError, MissingModelFilesError
from ..weights import check_loading_info, check_remote_code, check_weight_folder, pickle_files

logger = logging.getLogger("acdc_core.memory")

__all__ = ["ChatBackend", "Weightless", "LocalLLM", "load_local_llm", "check_local_llm_folder",
           "merge_system_into_user"]

Message = dict[str, str]


@runtime_checkable
class ChatBackend(Protocol):
    """An LLM the memory module talks to: a local model, an HTTP endpoint, or a rule-based stand-in."""

    def chat(self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int) -> str:
        """The raw answer text to ``messages`` (``{"role", "content"}`` dicts)."""
        ...

    def check(self) -> None:
        """Raise before any expensive work if the backend cannot answer (an endpoint that is down)."""
        ...

    def to(self, device: Union[str, torch.device]) -> "ChatBackend":
        """Move the weights, if it has any (an endpoint has none here)."""
        ...

    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules holding its weights, for a host's memory manager (empty for an endpoint)."""
        ...


class Weightless:
    """The ``ChatBackend`` methods of a backend that holds no weights here (an endpoint, a rule-based stand-in):
    nothing to check, nothing to move. Subclasses add ``chat`` (and may override ``check``)."""

    def check(self) -> None:
        """Nothing to check."""

    def to(self, device: Union[str, torch.device]) -> "Weightless":
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}


def _check_messages(messages: Sequence[Message]) -> list[Message]:
    if not messages:
        raise InvalidInputError("chat() needs at least one message.")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InvalidInputError(f"message {k} must be a dict with string 'role' and 'content', got {m!r:.80}.")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _check_generation_args(max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if temperature < 0:
        raise InvalidInputError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")


def merge_system_into_user(messages: Sequence[Message]) -> list[Message]:
    """For chat templates without a system role (gemma): put the system text at the top of the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"].strip())
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    if rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


# ----------------------------------------------------------------------------------------------------------
# Local transformers LLM
# ----------------------------------------------------------------------------------------------------------

_SYSTEM_PROBE = "acdc-system-role-probe"
# Extra chat-template variables. Reasoning models (Qwen3 and similar) would otherwise spend the whole
# token budget inside <think>; templates that do not use a variable ignore it.
_TEMPLATE_VARIABLES: dict[str, Any] = {"enable_thinking": False}


def _template_supports_system_role(tokenizer: Any) -> bool:
    """Render a system message: a template error, or the text not showing up, means no system role."""
    probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hi"}]
    try:
        rendered = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja2 TemplateError from raise_exception(), or anything a custom template raises
        return False
    return isinstance(rendered, str) and _SYSTEM_PROBE in rendered


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for one generate() call and restore the global RNG state afterwards."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        rng = torch.random.fork_rng(devices=[index], device_type="cuda")
    else:
        rng = torch.random.fork_rng(devices=[])
    with rng:
        torch.manual_seed(seed)
        yield


class LocalLLM:
    """A transformers causal LM and its tokenizer, prompted through the tokenizer's chat template."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "") -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidInputError(
                f"The tokenizer of {name or 'this LLM'} has no chat template; the memory module needs an "
                "instruct/chat model (or add a chat_template.jinja to its folder)."
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.supports_system_role = _template_supports_system_role(tokenizer)

    def __repr__(self) -> str:
        return (f"LocalLLM(name={self.name!r}, model={type(self.model).__name__}, device={self.device}, "
                f"system_role={self.supports_system_role})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Union[str, torch.device]) -> "LocalLLM":
        """Move the model (for offloading between stages); returns self."""
        self.model.to(device)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"llm": self.model}

    def check(self) -> None:
        """Nothing to check for a model already in memory (here for symmetry with the endpoint)."""

    def prepare_messages(self, messages: Sequence[Message]) -> list[Message]:
        messages = _check_messages(messages)
        return messages if self.supports_system_role else merge_system_into_user(messages)

    def render(self, messages: Sequence[Message]) -> str:
        """The exact text the model is prompted with (for debugging and tests)."""
        return self.tokenizer.apply_chat_template(
            self.prepare_messages(messages), tokenize=False, add_generation_prompt=True, **_TEMPLATE_VARIABLES)

    def chat(self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int) -> str:
        _check_generation_args(max_new_tokens, temperature)
        device = self.device
        # transformers 5.x returns a dict-like BatchEncoding here.
        enc = self.tokenizer.apply_chat_template(
            self.prepare_messages(messages), add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", **_TEMPLATE_VARIABLES)
        input_ids = enc["input_ids"].to(device)
        attention_mask = enc.get("attention_mask")
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)

        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:  # greedy; clear sampling knobs the model's generation config may set
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if getattr(self.model.generation_config, "pad_token_id", None) is None:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            if pad is not None:
                kwargs["pad_token_id"] = pad
        if getattr(self.model.generation_config, "eos_token_id", None) is None and self.tokenizer.eos_token_id is not None:
            kwargs["eos_token_id"] = self.tokenizer.eos_token_id

        with torch.inference_mode(), _seeded(seed, device):
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = out[0, input_ids.shape[1]:]  # decode only what the model wrote
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def _has_chat_template_file(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    if (folder / "additional_chat_templates").is_dir():
        return True
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
        except (OSError, ValueError):
            return False
    return False


def check_local_llm_folder(folder: Union[str, os.PathLike], *, trust_remote_code: bool = False) -> Path:
    """Check a local LLM folder has what loading needs, without loading anything: config.json (and no custom
    code unless ``trust_remote_code``), whole safetensors weights (headers only), tokenizer files and a chat
    template. Returns the path."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise MissingModelFilesError(f"LLM folder not found: {path}. Point to a local folder holding a "
                                     "transformers chat model (config.json, *.safetensors, tokenizer files).")
    if not path.is_dir():
        hint = (" GGUF files are not loaded directly: serve them with llama.cpp or Ollama and use the "
                "OpenAI-compatible endpoint." if path.suffix.lower() == ".gguf" else "")
        raise MissingModelFilesError(f"The LLM path {path} is a file, not a model folder.{hint}")
    if not (path / "config.json").is_file():
        raise MissingModelFilesError(f"No config.json in the LLM folder {path}: it is not a transformers model folder.")
    check_remote_code(path, trust_remote_code, "LLM")   # a known model_type, or custom code the caller trusts
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
        pickles = pickle_files(path)
        if pickles:
            raise MissingModelFilesError(
                f"The LLM folder {path} has only pickle weights ({', '.join(pickles[:4])}); they are refused "
                "because loading pickle can run arbitrary code. Convert them to *.safetensors "
                "(e.g. load once in a trusted environment and save_pretrained(..., safe_serialization=True)).")
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = (f" It holds GGUF files ({', '.join(ggufs[:2])}): serve them with llama.cpp or Ollama and use "
                "the OpenAI-compatible endpoint." if ggufs else "")
        raise MissingModelFilesError(f"No *.safetensors weights in the LLM folder {path}.{hint}")
    check_weight_folder(path)   # truncated, empty, or a pickle renamed to .safetensors: named, with what to do
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise MissingModelFilesError(
            f"No tokenizer files in the LLM folder {path}: expected one of {', '.join(_TOKENIZER_FILES)} "
            "(with tokenizer_config.json).")
    if not _has_chat_template_file(path):
        raise MissingModelFilesError(
            f"The tokenizer in {path} has no chat template (looked for chat_template.jinja, chat_template.json "
            "and a 'chat_template' entry in tokenizer_config.json). Use an instruct/chat model, or add its "
            "chat_template.jinja.")
    return path


def _load_tokenizer(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    declared = None
    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            declared = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        except (OSError, ValueError):
            declared = None
    if (path / "tokenizer.json").is_file() and declared in (None, "PreTrainedTokenizerFast", "TokenizersBackend"):
        # A generic tokenizer.json: load it as saved. AutoTokenizer would pick a class from config.json's
        # model_type (e.g. Qwen2Tokenizer for qwen2), which rebuilds its own pre-tokenizer.
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def load_local_llm(folder: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu",
                   dtype: Union[None, str, torch.dtype] = None, trust_remote_code: bool = False) -> LocalLLM:
    """Load a chat LLM from a LOCAL folder (never the hub), safetensors weights only."""
    from transformers import AutoModelForCausalLM

    path = check_local_llm_folder(folder, trust_remote_code=trust_remote_code)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise MissingModelFilesError(f"The tokenizer in {path} has no chat template after loading; use an "
                                     "instruct/chat model, or add its chat_template.jinja.")
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True,
                              "trust_remote_code": trust_remote_code}
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise InvalidInputError(f"dtype must be a torch dtype name like 'bfloat16', 'float16', 'float32' "
                                    f"or 'auto'; got {dtype!r}.")
        dtype = getattr(torch, dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    # Weights of another size or config: named from transformers' own report instead of its traceback.
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=True,
                                                       **kwargs)
    ignored = check_loading_info(info, f"The weights in {path}", allow_unexpected=True)
    if ignored:
        logger.warning("The LLM in %s has %d tensor(s) the model does not use (ignored): %s", path, len(ignored),
                       ", ".join(ignored[:4]))
    return LocalLLM(model, tokenizer, name=path.name).to(device)
