"""Memory module: modes, cleaning, whole-story parsing, local LLM plumbing, OpenAI-compatible endpoint."""
from __future__ import annotations

import copy
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from acdc_core.errors import EndpointUnreachableError, InvalidInputError, MissingModelFilesError
from acdc_core.memory import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_WHOLE_STORY_SYSTEM_PROMPT,
    LocalLLM,
    Weightless,
    MemoryModule,
    MemorySettings,
    OpenAICompatibleLLM,
    clean_prompt,
    load_local_llm,
    parse_numbered_list,
)
from acdc_core.tiny.llm import build_tiny_llm

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

STORY = [
    "Benny, a golden retriever with a red collar, runs through a sunlit meadow.",
    "He jumps over a log.",
    "He falls asleep under a tree.",
]


class RecordingBackend(Weightless):
    """A fake ChatBackend: records every call and answers from a function of the messages."""

    def __init__(self, answer=None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer = answer or (lambda messages: f"Prompt: \"answer {len(self.calls)}\"")

    def chat(self, messages, *, max_new_tokens, temperature, seed):
        self.calls.append({"messages": [dict(m) for m in messages], "max_new_tokens": max_new_tokens,
                           "temperature": temperature, "seed": seed})
        return self.answer(messages)


def _user(call: dict[str, Any]) -> str:
    return [m for m in call["messages"] if m["role"] == "user"][-1]["content"]


# ------------------------------------------------------------------------------------------------------------
# Fixtures: tiny local LLMs (built once per module)
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"), seed=0)


@pytest.fixture(scope="module")
def tiny_llm(tiny_llm_dir) -> LocalLLM:
    return load_local_llm(tiny_llm_dir)


@pytest.fixture(scope="module")
def tiny_llm_no_system(tmp_path_factory) -> LocalLLM:
    folder = build_tiny_llm(tmp_path_factory.mktemp("tiny_llm_nosys"), seed=1, system_role=False,
                            model_type="qwen2")
    return load_local_llm(folder)


# ------------------------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------------------------

def test_default_system_prompts_are_loaded_data():
    assert "self-contained" in DEFAULT_SYSTEM_PROMPT and "New sentence" in DEFAULT_SYSTEM_PROMPT
    assert "numbered list" in DEFAULT_WHOLE_STORY_SYSTEM_PROMPT
    assert MemorySettings().system_prompt == DEFAULT_SYSTEM_PROMPT


def test_off_passes_prompts_through_after_fit():
    mem = MemoryModule(None, MemorySettings(mode="off"), fit=lambda s: f"<{s}>")
    assert mem.prompts_for_story(STORY) == [f"<{s}>" for s in STORY]
    assert [mem.prompt_for(i, STORY, []) for i in range(3)] == [f"<{s}>" for s in STORY]
    assert MemoryModule(None, MemorySettings(mode="off")).prompt_for(1, STORY, []) == STORY[1]


def test_backend_required_unless_off():
    for mode in ("per-frame", "whole-story"):
        with pytest.raises(InvalidInputError, match="needs an LLM backend"):
            MemoryModule(None, MemorySettings(mode=mode))
    with pytest.raises(InvalidInputError, match="memory mode"):
        MemoryModule(RecordingBackend(), MemorySettings(mode="sometimes"))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["off", "per-frame", "whole-story"])
def test_empty_story_and_empty_sentence_are_refused(mode):
    mem = MemoryModule(RecordingBackend(), MemorySettings(mode=mode))
    with pytest.raises(InvalidInputError, match="empty"):
        mem.prompts_for_story([])
    with pytest.raises(InvalidInputError, match="empty"):
        mem.prompt_for(0, [], [])
    with pytest.raises(InvalidInputError, match="frame 1"):
        mem.prompts_for_story(["A cat.", "   ", "It sleeps."])
    with pytest.raises(InvalidInputError, match="out of range"):
        mem.prompt_for(3, STORY, [])


def test_per_frame_makes_one_query_per_frame_with_earlier_prompts_only():
    backend = RecordingBackend()
    mem = MemoryModule(backend, MemorySettings(mode="per-frame", seed=7, temperature=0.5),
                       fit=lambda s: s.upper())
    out = mem.prompts_for_story(STORY)
    assert out == ["ANSWER 1", "ANSWER 2", "ANSWER 3"]  # cleaned ("Prompt:", quotes) then fit
    assert len(backend.calls) == len(STORY)
    assert all(c["seed"] == 7 and c["temperature"] == 0.5 and c["max_new_tokens"] == 96 for c in backend.calls)
    assert backend.calls[0]["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    third = _user(backend.calls[2])
    assert "1. ANSWER 1\n2. ANSWER 2" in third and STORY[2] in third
    for k, call in enumerate(backend.calls):  # causal: no later sentence in any query
        assert not any(later in _user(call) for later in STORY[k + 1:])


def test_prompt_for_per_frame_uses_only_the_prefix():
    backend = RecordingBackend()
    mem = MemoryModule(backend, MemorySettings())
    y1 = mem.prompt_for(1, STORY, ["Benny the dog in a meadow.", "stale extra prompt"])
    assert y1 == "answer 1" and len(backend.calls) == 1
    user = _user(backend.calls[0])
    assert "1. Benny the dog in a meadow." in user and "stale extra" not in user
    assert STORY[1] in user and STORY[2] not in user
    with pytest.raises(InvalidInputError, match="earlier memory prompts"):
        mem.prompt_for(2, STORY, ["only one"])


def _numbered_answer(messages) -> str:
    return "Here are the prompts:\n" + "\n".join(f"{k}. Rewritten {k}" for k in range(1, len(STORY) + 1))


def test_whole_story_makes_one_query_and_memoises():
    backend = RecordingBackend(_numbered_answer)
    mem = MemoryModule(backend, MemorySettings(mode="whole-story", max_new_tokens=50), fit=lambda s: s + "!")
    got = [mem.prompt_for(i, STORY, []) for i in range(len(STORY))]
    assert got == ["Rewritten 1!", "Rewritten 2!", "Rewritten 3!"]
    assert mem.prompts_for_story(STORY) == got
    assert len(backend.calls) == 1
    call = backend.calls[0]
    assert call["messages"][0]["content"] == DEFAULT_WHOLE_STORY_SYSTEM_PROMPT
    assert all(f"{k}. {s}" in _user(call) for k, s in enumerate(STORY, start=1))
    assert call["max_new_tokens"] >= 50 * len(STORY)
    mem.prompts_for_story(STORY[:2])  # another story is another query
    assert len(backend.calls) == 2


def test_whole_story_falls_back_per_frame_for_missing_items(caplog):
    def answer(messages):
        if "Story sentences" in messages[-1]["content"]:
            return "1. Benny runs.\n3. Benny sleeps."  # item 2 missing
        return "Benny jumps over a log in the meadow."

    backend = RecordingBackend(answer)
    mem = MemoryModule(backend, MemorySettings(mode="whole-story"))
    with caplog.at_level(logging.WARNING, logger="acdc_core.memory"):
        out = mem.prompts_for_story(STORY)
    assert out == ["Benny runs.", "Benny jumps over a log in the meadow.", "Benny sleeps."]
    assert len(backend.calls) == 2
    assert "1. Benny runs." in _user(backend.calls[1])  # the fallback query sees the earlier prompt
    assert "2 of 3" in caplog.text and "[1]" in caplog.text


@pytest.mark.parametrize("mode", ["per-frame", "whole-story"])
def test_a_fallback_is_marked_per_frame_and_strict_memory_makes_it_an_error(mode):
    from acdc_core.errors import MemoryAnswerError
    from acdc_core.memory import MemoryAnswer

    # Frame 2's answer is an unclosed <think>: nothing usable, so the story sentence stands in, marked.
    def answer(messages):
        text = messages[-1]["content"]
        if "Story sentences" in text:
            return "1. Benny the dog runs in a meadow.\n2.\n3. Benny sleeps under a tree."
        return "<think>who is he" if f"New sentence: {STORY[1]}" in text else "Benny the dog, in a meadow."

    mem = MemoryModule(RecordingBackend(answer), MemorySettings(mode=mode))
    answers = mem.answers_for_story(STORY)
    assert [a.fallback for a in answers] == [False, True, False]
    assert answers[1] == MemoryAnswer(STORY[1], fallback=True)
    assert mem.answer_for(1, STORY, [a.text for a in answers[:1]]).fallback
    strict = MemoryModule(RecordingBackend(answer), MemorySettings(mode=mode, strict=True))
    with pytest.raises(MemoryAnswerError, match="no usable prompt for frame 2"):
        strict.answers_for_story(STORY)


def test_the_story_records_which_frames_fell_back():
    from acdc_core.state import StorySettings
    from acdc_core.story import run_story
    from tests.fakes import FakeARM, FakeCorrector

    backend = RecordingBackend(lambda m: "" if STORY[2] in m[-1]["content"] else "Benny the dog, in a meadow.")
    state = run_story(STORY, FakeARM(), FakeCorrector(), MemoryModule(backend, MemorySettings()),
                      StorySettings(steps=2, strength=1.0))
    assert [r.summary()["memory_fallback"] for r in state.records] == [False, False, True]
    assert state.records[2].memory_prompt == STORY[2]


def test_whole_story_unparseable_answer_never_crashes(caplog):
    backend = RecordingBackend(lambda m: "I cannot help with that." if "Story sentences" in m[-1]["content"]
                               else "<think>hmm</think>")
    mem = MemoryModule(backend, MemorySettings(mode="whole-story"))
    with caplog.at_level(logging.WARNING, logger="acdc_core.memory"):
        out = mem.prompts_for_story(STORY)
    assert out == STORY  # per-frame fallback, whose empty answers fall back to the sentences
    assert len(backend.calls) == 1 + len(STORY)
    assert "0 of 3" in caplog.text and "no usable memory prompt" in caplog.text


# ------------------------------------------------------------------------------------------------------------
# Cleaning and parsing
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Benny jumps over a log.", "Benny jumps over a log."),
    ("  Benny   jumps\tover a log.  ", "Benny jumps over a log."),
    ('"Benny jumps over a log."', "Benny jumps over a log."),
    ("\u201cBenny jumps over a log.\u201d", "Benny jumps over a log."),
    ("Prompt: Benny jumps over a log.", "Benny jumps over a log."),
    ("Rewritten prompt: 'Benny jumps over a log.'", "Benny jumps over a log."),
    ("**Rewritten prompt:** Benny jumps.", "Benny jumps."),
    ("Answer: Benny jumps.", "Benny jumps."),
    ("1. Benny jumps over a log.", "Benny jumps over a log."),
    ("- Benny jumps over a log.", "Benny jumps over a log."),
    ("<think>The user wants a prompt. He = Benny.</think>\nBenny jumps over a log.", "Benny jumps over a log."),
    ("<reasoning>\nstep 1\nstep 2\n</reasoning>Benny jumps.", "Benny jumps."),
    ("<think>I am still thinking about who he is", ""),
    ("He is Benny, so...</think>\n\nBenny jumps.", "Benny jumps."),
    ("```\nBenny jumps over a log.\n```", "Benny jumps over a log."),
    ("```text\nPrompt: Benny jumps.\n```", "Benny jumps."),
    ("Sure! Here is the rewritten prompt:\n\nBenny jumps over a log.\n\nNote: I resolved the pronoun.",
     "Benny jumps over a log."),
    ("Rewritten prompt:\nBenny jumps over a log.", "Benny jumps over a log."),
    ("Benny, a golden retriever,\njumps over a log in a meadow.\nThis keeps the setting.",
     "Benny, a golden retriever, jumps over a log in a meadow."),
    ("Benny jumps over a log.\nBenny jumps again.", "Benny jumps over a log."),
    ("Benny jumps.<|im_end|>\n<|im_start|>user\nmore", "Benny jumps."),
    ("Benny\x00 jumps\ufffd over\x1b a log.", "Benny jumps over a log."),
    ("", ""),
    ("   \n\n  ", ""),
    ('""', ""),
    ("Here is the prompt:", ""),
])
def test_clean_prompt(raw, expected):
    assert clean_prompt(raw) == expected


@pytest.mark.parametrize("raw", [
    "1. A dog runs.\n2. The dog jumps.\n3. The dog sleeps.",
    "Here are the prompts:\n\n1) A dog runs.\n2) The dog jumps.\n3) The dog sleeps.\n\nHope this helps!",
    "(1) A dog runs.\n(2) The dog jumps.\n(3) The dog sleeps.",
    "**1.** A dog runs.\n**2.** The dog jumps.\n**3.** The dog sleeps.",
    "Frame 1: A dog runs.\nFrame 2: The dog jumps.\nFrame 3: The dog sleeps.",
    "Prompt 1 - \"A dog runs.\"\nPrompt 2 - \"The dog jumps.\"\nPrompt 3 - \"The dog sleeps.\"",
    "**Frame 1:**\nA dog runs.\n\n**Frame 2:**\nThe dog jumps.\n\n**Frame 3:**\nThe dog sleeps.",
    "0. A dog runs.\n1. The dog jumps.\n2. The dog sleeps.",
    "<think>three lines</think>\n```\n1. A dog runs.\n2. The dog jumps.\n3. The dog sleeps.\n```",
    "- A dog runs.\n- The dog jumps.\n- The dog sleeps.",
    "A dog runs.\nThe dog jumps.\nThe dog sleeps.",
    "1. A dog\n   runs.\n2. The dog jumps.\n3. The dog sleeps.",
])
def test_parse_numbered_list_formats(raw):
    assert parse_numbered_list(raw, 3) == ["A dog runs.", "The dog jumps.", "The dog sleeps."]


@pytest.mark.parametrize("raw, expected", [
    ("1. A.\n3. C.", ["A.", None, "C."]),
    ("1. A.\n2. B.\n3. C.\n4. D.", ["A.", "B.", "C."]),
    ("1. A.\n2.\n3. C.", ["A.", None, "C."]),
    ("1. A.\n1. again\n2. B.\n3. C.", ["A.", "B.", "C."]),
    ("Just one paragraph with no list.", [None, None, None]),
    ("", [None, None, None]),
])
def test_parse_numbered_list_partial(raw, expected):
    assert parse_numbered_list(raw, 3) == expected


# ------------------------------------------------------------------------------------------------------------
# Local LLM (tiny, random weights: the plumbing, not the quality)
# ------------------------------------------------------------------------------------------------------------

def test_per_frame_with_tiny_local_llm_gives_one_clean_line_per_frame(tiny_llm):
    settings = MemorySettings(mode="per-frame", max_new_tokens=16)
    out = MemoryModule(tiny_llm, settings).prompts_for_story(STORY)
    assert len(out) == len(STORY) and out != STORY  # the LLM's (gibberish) answers, not the fallback
    for prompt in out:
        assert prompt.strip() == prompt and prompt
        assert "\n" not in prompt and all(ch.isprintable() for ch in prompt)
    again = MemoryModule(tiny_llm, settings).prompts_for_story(STORY)
    assert again == out  # greedy is deterministic
    assert MemoryModule(tiny_llm, settings).prompt_for(2, STORY, out[:2]) == out[2]


def test_tiny_local_llm_sampling_is_seeded_and_leaves_global_rng_alone(tiny_llm):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "He jumps."}]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = tiny_llm.chat(messages, max_new_tokens=16, temperature=1.0, seed=5)
    b = tiny_llm.chat(messages, max_new_tokens=16, temperature=1.0, seed=5)
    assert a == b
    assert torch.equal(torch.get_rng_state(), state)
    greedy = tiny_llm.chat(messages, max_new_tokens=16, temperature=0.0, seed=0)
    assert greedy == tiny_llm.chat(messages, max_new_tokens=16, temperature=0.0, seed=99)


def test_template_with_system_role_keeps_it(tiny_llm):
    assert tiny_llm.supports_system_role
    rendered = tiny_llm.render([{"role": "system", "content": "SYSTEM TEXT"}, {"role": "user", "content": "hi"}])
    assert "<|im_start|>system\nSYSTEM TEXT" in rendered


def test_template_without_system_role_merges_it_into_first_user_turn(tiny_llm_no_system):
    llm = tiny_llm_no_system
    assert not llm.supports_system_role
    rendered = llm.render([{"role": "system", "content": "SYSTEM TEXT"}, {"role": "user", "content": "He jumps."}])
    assert "system" not in rendered
    assert "<|im_start|>user\nSYSTEM TEXT\n\nHe jumps." in rendered
    out = MemoryModule(llm, MemorySettings(max_new_tokens=12)).prompts_for_story(STORY[:2])
    assert len(out) == 2 and all(p and "\n" not in p for p in out)


def test_reasoning_templates_are_asked_not_to_think(tiny_llm):
    tokenizer = copy.deepcopy(tiny_llm.tokenizer)
    tokenizer.chat_template += ("{% if add_generation_prompt and enable_thinking is defined "
                                "and not enable_thinking %}<think></think>{% endif %}")
    llm = LocalLLM(tiny_llm.model, tokenizer)
    assert llm.render([{"role": "user", "content": "hi"}]).endswith("assistant\n<think></think>")


def test_qwen2_folder_tokenizer_loads_as_saved(tiny_llm_no_system, tmp_path_factory):
    from tokenizers import Tokenizer

    folder = Path(tmp_path_factory.getbasetemp()) / "tiny_llm_nosys0"
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "Hello   world 12345 it's\n\n  done \u201cquoted\u201d"
    assert tiny_llm_no_system.tokenizer(text, add_special_tokens=False).input_ids == raw.encode(text).ids


def test_local_llm_folder_errors(tmp_path, tiny_llm_dir):
    with pytest.raises(MissingModelFilesError, match="not found"):
        load_local_llm(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingModelFilesError, match="config.json"):
        load_local_llm(empty)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_llm_dir / "config.json").read_text())
    with pytest.raises(MissingModelFilesError, match=r"No \*\.safetensors"):
        load_local_llm(no_weights)

    (no_weights / "pytorch_model.bin").write_bytes(b"not really pickle")
    with pytest.raises(MissingModelFilesError, match=r"pytorch_model\.bin.*refused.*safetensors"):
        load_local_llm(no_weights)

    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tok / name).write_bytes((tiny_llm_dir / name).read_bytes())
    with pytest.raises(MissingModelFilesError, match="tokenizer.json"):
        load_local_llm(no_tok)

    (no_tok / "tokenizer.json").write_bytes((tiny_llm_dir / "tokenizer.json").read_bytes())
    (no_tok / "tokenizer_config.json").write_bytes((tiny_llm_dir / "tokenizer_config.json").read_bytes())
    with pytest.raises(MissingModelFilesError, match="chat template"):
        load_local_llm(no_tok)


# ------------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint against a local http.server
# ------------------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path,  # type: ignore[attr-defined]
                                     "headers": dict(self.headers), "body": json.loads(body) if body else None})
        status, payload = self.server.responses.get(self.path, (404, {"error": {"message": "no route"}}))  # type: ignore[attr-defined]
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _reply
    do_POST = _reply


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.responses = {  # type: ignore[attr-defined]
        "/v1/chat/completions": (200, {"choices": [{"message": {"role": "assistant",
                                                                 "content": "Prompt: \"Benny jumps.\""}}]}),
        "/v1/models": (200, {"object": "list", "data": [{"id": "tiny-model"}, {"id": "other"}]}),
    }
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _base(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_openai_backend_request_and_parsing_without_key(server, monkeypatch):
    monkeypatch.delenv("ACDC_LLM_API_KEY_TEST", raising=False)
    llm = OpenAICompatibleLLM(_base(server), "tiny-model", api_key_env="ACDC_LLM_API_KEY_TEST", timeout=5)
    assert llm.check() == ["tiny-model", "other"]
    MemoryModule(llm, MemorySettings()).check()
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "He jumps."}]
    assert llm.chat(messages, max_new_tokens=40, temperature=0.0, seed=3) == "Prompt: \"Benny jumps.\""
    req = server.requests[-1]
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["body"] == {"model": "tiny-model", "messages": messages, "temperature": 0.0,
                           "max_tokens": 40, "seed": 3}
    assert "Authorization" not in req["headers"]
    assert req["headers"]["Content-Type"] == "application/json"
    out = MemoryModule(llm, MemorySettings()).prompts_for_story(STORY[:2])
    assert out == ["Benny jumps.", "Benny jumps."]


def test_openai_backend_sends_key_only_from_env_and_never_shows_it(server, monkeypatch):
    monkeypatch.setenv("ACDC_LLM_API_KEY_TEST", "sk-secret-123")
    llm = OpenAICompatibleLLM(_base(server) + "/chat/completions", "tiny-model", api_key_env="ACDC_LLM_API_KEY_TEST")
    assert llm.base_url == _base(server)
    llm.chat([{"role": "user", "content": "x"}], max_new_tokens=8, temperature=0.7, seed=0)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(llm) and "sk-secret" not in str(vars(llm))

    server.responses["/v1/chat/completions"] = (401, {"error": {"message": "Incorrect API key sk-secret-123"}})
    with pytest.raises(EndpointUnreachableError) as info:
        llm.chat([{"role": "user", "content": "x"}], max_new_tokens=8, temperature=0.0, seed=0)
    assert "401" in str(info.value) and "ACDC_LLM_API_KEY_TEST" in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_openai_backend_http_500_and_malformed_json(server, monkeypatch):
    monkeypatch.setattr("acdc_core.memory.endpoint._sleep", lambda seconds: None)  # HTTP 500 is retried
    llm = OpenAICompatibleLLM(_base(server), "tiny-model", timeout=5)
    server.responses["/v1/chat/completions"] = (500, {"error": {"message": "model crashed"}})
    with pytest.raises(EndpointUnreachableError, match=r"HTTP 500.*model crashed"):
        llm.chat([{"role": "user", "content": "x"}], max_new_tokens=8, temperature=0.0, seed=0)
    server.responses["/v1/chat/completions"] = (200, b"<html>not json</html>")
    with pytest.raises(EndpointUnreachableError, match="did not answer with JSON"):
        llm.chat([{"role": "user", "content": "x"}], max_new_tokens=8, temperature=0.0, seed=0)
    server.responses["/v1/chat/completions"] = (200, {"unexpected": True})
    with pytest.raises(EndpointUnreachableError, match="choices"):
        llm.chat([{"role": "user", "content": "x"}], max_new_tokens=8, temperature=0.0, seed=0)
    del server.responses["/v1/models"]
    assert llm.check() == []  # the server is up; it just has no model list


def test_openai_backend_unreachable_endpoint(monkeypatch):
    monkeypatch.setattr("acdc_core.memory.endpoint._sleep", lambda seconds: None)  # a refused chat() is retried
    monkeypatch.setenv("ACDC_LLM_API_KEY_TEST", "sk-secret-456")
    with socket.socket() as sock:  # a port that was free a moment ago and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAICompatibleLLM(url, "tiny-model", api_key_env="ACDC_LLM_API_KEY_TEST", timeout=2)
    memory = MemoryModule(llm, MemorySettings())
    for call in (memory.check, llm.check, lambda: llm.chat([{"role": "user", "content": "x"}], max_new_tokens=4,
                                             temperature=0.0, seed=0)):
        with pytest.raises(EndpointUnreachableError) as info:
            call()
        message = str(info.value)
        assert url in message and "Start the server" in message and "sk-secret" not in message


def test_openai_backend_rejects_bad_configuration():
    with pytest.raises(InvalidInputError, match="http"):
        OpenAICompatibleLLM("127.0.0.1:11434/v1", "m")
    with pytest.raises(InvalidInputError, match="model name"):
        OpenAICompatibleLLM("http://127.0.0.1:11434/v1", " ")
