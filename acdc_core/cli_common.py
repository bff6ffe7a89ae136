"""What the headless commands share (``cli.py``'s story and demo, ``cli_video.py``'s video): reading prompt files,
the device, the memory module's options and backend."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from .devices import pick_device
from .errors import InvalidInputError
from .state import new_story, story_lines


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (blank lines and lines starting with # are skipped); a ``.json`` file is a JSON list of
    strings instead (JSON by the file's name only: a text line may start with '[')."""
    if not path.is_file():
        raise InvalidInputError(f"prompts file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"prompts file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    if path.suffix.lower() != ".json":
        return list(new_story(story_lines(text)).prompts)
    try:
        prompts = json.loads(text)
    except ValueError as error:
        raise InvalidInputError(f"prompts file {path} is not valid JSON: {error}") from None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        bad = next((k for k, p in enumerate(prompts) if not isinstance(p, str)), None) \
            if isinstance(prompts, list) else None
        where = f" (entry {bad + 1} is {json.dumps(prompts[bad])[:40]})" if bad is not None else ""
        raise InvalidInputError(f"prompts file {path} must hold a JSON list of strings, one per frame{where}.")
    return list(new_story(prompts).prompts)


def read_text_file(path: str, what: str) -> str:
    """A UTF-8 text file the user named, or a clear error."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"{what} {file} does not exist.")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} {file} is not UTF-8 text; save it as UTF-8.") from None


def check_device(requested: str) -> torch.device:
    """--device as a torch device that exists here, or a clear error."""
    try:
        device = pick_device(requested)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"--device {requested!r} is not a device name; use auto, cpu, cuda, cuda:1 or mps.") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"--device {requested}: this machine has no CUDA GPU that torch can use; "
                                    "use --device cpu (or auto).")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(f"--device {requested}: there are {torch.cuda.device_count()} CUDA device(s).")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError(f"--device {requested}: MPS is not available here; use --device cpu (or auto).")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"--device {requested}: the engine runs on cpu, cuda or mps.")
    return device


def memory_settings(args):
    from .memory import MemorySettings

    settings = MemorySettings(mode=args.memory, seed=args.seed, strict=args.strict_memory)
    if args.system_prompt:
        text = read_text_file(args.system_prompt, "--system-prompt file")
        field = "whole_story_system_prompt" if args.memory == "whole-story" else "system_prompt"
        settings = replace(settings, **{field: text})
    return settings.validate()


def endpoint_backend(args):
    """The OpenAI-compatible memory endpoint of --endpoint (not contacted yet), or None."""
    from .memory import OpenAICompatibleLLM

    if args.memory == "off" or not args.endpoint:
        return None
    # The person typing the command chose the URL, so the key may go to its host (a workflow file cannot).
    return OpenAICompatibleLLM(args.endpoint, args.llm_model, api_key_env=args.api_key_env, key_hosts=(args.endpoint,),
                               allow_http_key=args.allow_http_key, timeout=args.endpoint_timeout)


def check_local_memory(args) -> None:
    """--memory with a local LLM: --llm names a folder the memory module loads (or --endpoint is given)."""
    from .memory import check_local_llm_folder

    if args.memory != "off" and not args.endpoint:
        if not args.llm:
            raise InvalidInputError(
                f"--memory {args.memory} needs a language model: --llm FOLDER (local) or --endpoint URL "
                "(OpenAI-compatible); or use --memory off.")
        check_local_llm_folder(args.llm, trust_remote_code=args.trust_remote_code)


def add_memory_options(p: argparse.ArgumentParser, default: str = "per-frame") -> None:
    """The memory module's options (``acdc story`` and ``acdc video``)."""
    p.add_argument("--memory", choices=["off", "per-frame", "whole-story"], default=default)
    if not any(a.dest == "system_prompt" for a in p._actions):
        p.add_argument("--system-prompt", help="file with your own memory system prompt (for the chosen mode)")
    p.add_argument("--llm", help="local instruct LLM folder for the memory module")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
    p.add_argument("--llm-model", default="gpt-4o-mini", help="model name at the endpoint")
    p.add_argument("--api-key-env", default="ACDC_LLM_API_KEY",
                   help="environment variable holding the endpoint's key: ACDC_LLM_API_KEY or ACDC_LLM_API_KEY_<NAME> "
                        "(sent only to the --endpoint host, never over plain http to another machine)")
    p.add_argument("--allow-http-key", action="store_true",
                   help="send the key over plain http to a host that is not this machine (it travels unencrypted)")
    p.add_argument("--endpoint-timeout", type=float, default=60,
                   help="seconds one endpoint request may take in all (default 60)")
    p.add_argument("--strict-memory", action="store_true",
                   help="an LLM answer with no usable prompt is an error (default: use the story line, marked in "
                        "run.json)")
