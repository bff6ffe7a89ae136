"""Chat backends for the memory module: a local transformers LLM, or an OpenAI-compatible HTTP endpoint.

Both meet :class:`ChatBackend`: ``chat(messages, max_new_tokens=, temperature=, seed=) -> str``, where
``messages`` are ``{"role": ..., "content": ...}`` dicts and the answer is the raw text the model wrote
(cleaning is the memory module's job). ``check()`` is cheap and lets a caller fail early, before
expensive work, on an endpoint that is down.

Security: local weights load from safetensors only, from a local folder, with ``trust_remote_code``
off unless the caller turns it on. The endpoint's API key is read from an environment variable at
request time; it is never stored on the object, logged, or put in an error message.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

import torch

from ..errors import EndpointUnreachableError, InvalidInputError, MissingModelFilesError, UnknownModelFamilyError
from ..weights import pickle_files

logger = logging.getLogger("acdc_core.memory")

__all__ = ["ChatBackend", "Weightless", "LocalLLM", "load_local_llm", "check_local_llm_folder", "OpenAICompatibleLLM",
           "EndpointHTTPError", "merge_system_into_user"]

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


def check_local_llm_folder(folder: Union[str, os.PathLike]) -> Path:
    """Check a local LLM folder has what loading needs, without loading anything. Returns the path."""
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
    if not any(path.glob("*.safetensors")):
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


def _check_model_type(path: Path, trust_remote_code: bool) -> None:
    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MissingModelFilesError(f"config.json in {path} is not readable JSON: {exc}") from exc
    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return
    if "auto_map" in config and not trust_remote_code:
        raise UnknownModelFamilyError(
            f"The LLM in {path} (model_type={model_type!r}) needs its own Python code. Pass "
            "trust_remote_code=True only if you trust that folder's code.")
    if "auto_map" not in config:
        raise UnknownModelFamilyError(
            f"The LLM in {path} has model_type={model_type!r}, which this transformers version does not know.")


def load_local_llm(folder: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu",
                   dtype: Union[None, str, torch.dtype] = None, trust_remote_code: bool = False) -> LocalLLM:
    """Load a chat LLM from a LOCAL folder (never the hub), safetensors weights only."""
    from transformers import AutoModelForCausalLM

    path = check_local_llm_folder(folder)
    _check_model_type(path, trust_remote_code)
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
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return LocalLLM(model, tokenizer, name=path.name).to(device)


# ----------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint (OpenAI, Ollama, llama.cpp server, vLLM, LM Studio ...)
# ----------------------------------------------------------------------------------------------------------

class EndpointHTTPError(EndpointUnreachableError):
    """The endpoint answered with an HTTP error status (kept in ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAICompatibleLLM(Weightless):
    """POST {base_url}/chat/completions with the standard JSON body; the key comes from an env variable."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60) -> None:
        url = (base_url or "").strip().rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if url.endswith(suffix):  # a full endpoint URL pasted by the user
                url = url[: -len(suffix)]
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInputError(
                f"The LLM endpoint base URL must start with http:// or https://, like "
                f"http://127.0.0.1:11434/v1 (Ollama) or https://api.openai.com/v1; got {base_url!r}.")
        if not model or not model.strip():
            raise InvalidInputError("The LLM endpoint needs a model name (e.g. gpt-4o-mini, or the model's name in Ollama).")
        if not api_key_env or not api_key_env.strip():
            raise InvalidInputError("api_key_env must name an environment variable (default OPENAI_API_KEY).")
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0 seconds, got {timeout}.")
        self.base_url = url
        self.model = model.strip()
        self.api_key_env = api_key_env.strip()
        self.timeout = float(timeout)
        # Local servers must not go through an HTTP proxy configured for the outside world.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return (f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _api_key(self) -> Optional[str]:
        key = os.environ.get(self.api_key_env)
        return key.strip() if key and key.strip() else None

    def _scrub(self, text: str) -> str:
        key = self._api_key()
        return text.replace(key, "***") if key else text

    def _request(self, method: str, path: str, body: Optional[dict[str, Any]], timeout: float) -> Any:
        url = f"{self.base_url}{path}"
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = self._scrub(_error_detail(exc))
            raise EndpointHTTPError(
                f"The LLM endpoint {url} answered HTTP {exc.code} {exc.reason}: {detail}"
                + (" Check the API key environment variable "
                   f"{self.api_key_env}." if exc.code in (401, 403) else "")
                + (f" Check the model name {self.model!r}." if exc.code == 404 and path != "/models" else ""),
                exc.code,
            ) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, (socket.timeout, TimeoutError)):
                why = f"no answer within {timeout:g} s"
            else:
                why = self._scrub(str(reason)) or type(reason).__name__
            raise EndpointUnreachableError(
                f"Could not reach the LLM endpoint {url} ({why}). Start the server (e.g. `ollama serve`, "
                "llama.cpp's llama-server, vLLM) or fix the base URL.") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            snippet = self._scrub(raw[:200].decode("utf-8", "replace"))
            raise EndpointUnreachableError(
                f"The LLM endpoint {url} did not answer with JSON (got {snippet!r}). Is the base URL the "
                "OpenAI-compatible API root (often ending in /v1)?") from None

    # -- API ----------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """GET {base_url}/models: raises EndpointUnreachableError if the server is down or refuses the key.

        Returns the model ids the server lists (empty where it has no /models route). A model name not in
        a non-empty list only logs a warning: some servers accept aliases they do not list.
        """
        try:
            answer = self._request("GET", "/models", None, timeout=min(self.timeout, 10.0))
        except EndpointHTTPError as exc:
            if exc.status in (404, 405):
                return []  # the server is up, it just has no model list
            raise
        data = answer.get("data") if isinstance(answer, dict) else None
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(data, list) else []
        if ids and self.model not in ids:
            logger.warning("The LLM endpoint %s does not list the model %r (it lists %s).",
                           self.base_url, self.model, ", ".join(ids[:8]))
        return ids

    def chat(self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int) -> str:
        _check_generation_args(max_new_tokens, temperature)
        body = {"model": self.model, "messages": _check_messages(messages), "temperature": float(temperature),
                "max_tokens": int(max_new_tokens), "seed": int(seed)}
        answer = self._request("POST", "/chat/completions", body, timeout=self.timeout)
        try:
            content = answer["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            snippet = self._scrub(json.dumps(answer)[:200])
            raise EndpointUnreachableError(
                f"The LLM endpoint {self.base_url}/chat/completions answered JSON without "
                f"choices[0].message.content: {snippet}") from None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message from an HTTP error body (OpenAI, Ollama and vLLM shapes)."""
    try:
        raw = exc.read()
    except Exception:
        return "(no body)"
    text = raw[:2000].decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or "(no body)"
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("message", payload.get("detail")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if err is not None:
            return " ".join(str(err).split())[:300]
    return " ".join(text.split())[:300]
