"""The OpenAI-compatible memory endpoint against hostile servers and hostile workflows.

A workflow file is untrusted: it picks the URL and the name of the key variable. These tests run fake
endpoints on 127.0.0.1 (threads, ephemeral ports); "another host" is another origin: a second server on
another port, or ``localhost`` instead of ``127.0.0.1``. Every test also checks that no secret shows up in
an exception, a repr, a log record or the captured output, and that no other-origin server received anything.
No test measures time: a deadline shows as its message, and as the call having returned at all.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import pytest

from acdc_core.errors import EndpointUnreachableError, InvalidInputError
from acdc_core.memory import OpenAICompatibleLLM
from acdc_core.memory import endpoint
from acdc_core.memory.endpoint import EndpointHTTPError, check_api_key_env, scrub_url

pytestmark = pytest.mark.floors  # also run with every dependency at its floor (.ci/run)

SECRET = "sk-test-SECRET-123"           # ACDC_LLM_API_KEY
URL_SECRET = "sk-url-SECRET-456"        # a key a user pasted into the URL
OTHER_SECRET = "aws-SECRET-789"         # another secret of the host (AWS_SECRET_ACCESS_KEY)
PROXY_SECRET = "proxy-SECRET-000"       # a proxy password
SECRETS = (SECRET, URL_SECRET, OTHER_SECRET, PROXY_SECRET)
MESSAGES = [{"role": "user", "content": "He jumps."}]
OK = {"choices": [{"message": {"role": "assistant", "content": "Benny jumps."}}]}
MODELS = {"object": "list", "data": [{"id": "m"}]}
ENV_CLEARED = ("ACDC_LLM_API_KEY_HOSTS", "ACDC_LLM_API_KEY_OPENAI", "ACDC_LLM_API_KEY_OPENAI_HOSTS",
               "ACDC_LLM_ALLOW_HTTP_KEY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
               "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")


# ------------------------------------------------------------------------------------------------------------
# fake endpoints
# ------------------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server: Hostile = self.server  # type: ignore[assignment]
        server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                "raw": f"{self.requestline}\n{self.headers}".encode() + body})
        behaviours = server.routes.get(self.path.split("?")[0]) or [reply(404, {"error": {"message": "no route"}})]
        behaviour = behaviours.pop(0) if len(behaviours) > 1 else behaviours[0]  # the last one stays
        behaviour(self)

    do_GET = do_POST = do_CONNECT = _handle


class Hostile(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.host = host
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, list[Callable[[_Handler], None]]] = {}
        self.closed = threading.Event()  # a slow handler saw the client go away
        self.stop = threading.Event()
        self.other_origin = False        # must never receive anything
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}"

    @property
    def base(self) -> str:
        return f"{self.origin}/v1"

    def route(self, path: str, *behaviours: Callable[[_Handler], None]) -> None:
        self.routes[path] = list(behaviours)


def reply(status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> Callable[[_Handler], None]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    def behaviour(h: _Handler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return behaviour


def redirect(status: int, location: str) -> Callable[[_Handler], None]:
    return reply(status, b"", {"Location": location})


def raw(data: bytes) -> Callable[[_Handler], None]:
    def behaviour(h: _Handler) -> None:
        h.wfile.write(data)
    return behaviour


def _drip(h: _Handler, data: bytes) -> None:
    server: Hostile = h.server  # type: ignore[assignment]
    for k in range(len(data)):
        if server.stop.wait(0.3):
            return
        try:
            h.wfile.write(data[k:k + 1])
            h.wfile.flush()
        except OSError:
            server.closed.set()
            return


def drip_body(h: _Handler) -> None:
    """Headers at once, then the body a byte every 0.3 s: each read is quick, the whole never comes."""
    body = json.dumps(OK).encode() + b" " * 200
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.flush()
    _drip(h, body)


def drip_headers(h: _Handler) -> None:
    _drip(h, b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: yes\r\n" * 50 + b"\r\n{}")


def hang(h: _Handler) -> None:
    """Read the request, answer nothing, notice when the client gives up."""
    server: Hostile = h.server  # type: ignore[assignment]
    h.connection.settimeout(0.1)
    while not server.stop.is_set():
        try:
            if not h.connection.recv(1):
                server.closed.set()
                return
        except socket.timeout:
            continue
        except OSError:
            server.closed.set()
            return


def huge(size: int, *, content_length: bool) -> Callable[[_Handler], None]:
    def behaviour(h: _Handler) -> None:
        h.send_response(200)
        if content_length:
            h.send_header("Content-Length", str(size))
        h.end_headers()   # HTTP/1.0 without Content-Length: the body runs until the connection closes
        try:
            for _ in range(size // 1000):
                h.wfile.write(b"x" * 1000)
        except OSError:
            h.server.closed.set()  # type: ignore[attr-defined]
    return behaviour


# ------------------------------------------------------------------------------------------------------------
# fixtures and checks
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def servers():
    started: list[Hostile] = []

    def start(host: str = "127.0.0.1", *, other_origin: bool = False) -> Hostile:
        httpd = Hostile(host)
        httpd.other_origin = other_origin
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.thread.join(timeout=10)
    for httpd in started:
        for request in httpd.requests:
            for secret in (OTHER_SECRET, PROXY_SECRET) + ((SECRET, URL_SECRET) if httpd.other_origin else ()):
                assert secret.encode() not in request["raw"], (secret, httpd.origin)
        if httpd.other_origin:
            assert httpd.requests == [], f"the other origin {httpd.origin} was asked: {httpd.requests}"


@pytest.fixture
def server(servers):
    httpd = servers()
    httpd.route("/v1/models", reply(200, MODELS))
    httpd.route("/v1/chat/completions", reply(200, OK))
    return httpd


@pytest.fixture(autouse=True)
def no_leaks(monkeypatch, caplog, capsys):
    """The key in the environment, sleeps recorded (not slept), and at the end: no secret anywhere printed."""
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACDC_LLM_API_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", OTHER_SECRET)
    sleeps: list[float] = []
    monkeypatch.setattr(endpoint, "_sleep", sleeps.append)
    caplog.set_level(logging.DEBUG)
    yield sleeps
    out, err = capsys.readouterr()
    records = caplog.records
    for secret in SECRETS:
        assert secret not in out and secret not in err
        assert secret not in caplog.text
        assert all(secret not in record.getMessage() for record in records)


def _clean(value: Any) -> str:
    """``value`` (an exception, an object, a string) holds no secret in its text, repr or traceback."""
    text = f"{value}\n{value!r}"
    if isinstance(value, BaseException):
        text += "".join(traceback.format_exception(type(value), value, value.__traceback__))
    for secret in SECRETS:
        assert secret not in text, text
    return str(value)


def fails(kind: type, call: Callable[[], Any], *needles: str) -> str:
    with pytest.raises(kind) as info:
        call()
    message = _clean(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def in_thread(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread; it must return (or raise) well within a generous join. Returns what it raised."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the call did not return: the deadline did not hold"
    return outcome.get("error")


def chat(llm: OpenAICompatibleLLM) -> str:
    return llm.chat(MESSAGES, max_new_tokens=8, temperature=0.0, seed=0)


# ------------------------------------------------------------------------------------------------------------
# the key rule: which variable, which hosts, which scheme (construction only: no network)
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "HOME", "acdc_llm_api_key",
                                  "ACDC_LLM_API_KEYX", "ACDC_LLM_API_KEY_HOSTS", "ACDC_LLM_API_KEY_OPENAI_HOSTS",
                                  "ACDC_LLM_API_KEY_", "", "  ", None])
def test_only_acdc_key_variables_may_be_named(name):
    for url in ("https://attacker.example/v1", "http://127.0.0.1:1/v1"):
        message = fails(InvalidInputError, lambda u=url: OpenAICompatibleLLM(u, "m", api_key_env=name),
                        "ACDC_LLM_API_KEY", "ACDC_LLM_API_KEY_")
        assert "api_key_env" in message
    with pytest.raises(InvalidInputError):
        check_api_key_env(name)


def test_the_allowed_key_variables(monkeypatch):
    monkeypatch.setenv("ACDC_LLM_API_KEY_OPENAI", SECRET)
    assert check_api_key_env("ACDC_LLM_API_KEY") == "ACDC_LLM_API_KEY"
    assert check_api_key_env(" ACDC_LLM_API_KEY_OPENAI ") == "ACDC_LLM_API_KEY_OPENAI"
    llm = OpenAICompatibleLLM("http://127.0.0.1:1/v1", "m", api_key_env="ACDC_LLM_API_KEY_OPENAI")
    assert llm.api_key_env == "ACDC_LLM_API_KEY_OPENAI"
    assert OpenAICompatibleLLM("http://127.0.0.1:1/v1", "m").api_key_env == "ACDC_LLM_API_KEY"  # the default
    _clean(llm)
    _clean(vars(llm))


def test_a_set_key_goes_only_to_hosts_allowed_outside_the_workflow(monkeypatch):
    url = "https://api.example.com/v1"
    message = fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m"),
                    "ACDC_LLM_API_KEY", "api.example.com", "ACDC_LLM_API_KEY_HOSTS=api.example.com")
    assert "workflow cannot" in message

    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "other.example, API.example.com")
    _clean(OpenAICompatibleLLM(url, "m"))
    _clean(OpenAICompatibleLLM("https://api.example.com:8443/v1", "m"))  # a bare host name allows any port
    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "api.example.com:8443")
    OpenAICompatibleLLM("https://api.example.com:8443/v1", "m")
    fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m"), "api.example.com:8443")  # 443 is not listed
    fails(InvalidInputError, lambda: OpenAICompatibleLLM("https://api.example.com.evil.example/v1", "m"))

    # each variable has its own list
    monkeypatch.setenv("ACDC_LLM_API_KEY_OPENAI", SECRET)
    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "api.example.com")
    fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m", api_key_env="ACDC_LLM_API_KEY_OPENAI"),
          "ACDC_LLM_API_KEY_OPENAI_HOSTS")
    monkeypatch.setenv("ACDC_LLM_API_KEY_OPENAI_HOSTS", "api.example.com")
    OpenAICompatibleLLM(url, "m", api_key_env="ACDC_LLM_API_KEY_OPENAI")

    # key_hosts (the CLI: the URL its user typed) replaces the environment's list
    monkeypatch.delenv("ACDC_LLM_API_KEY_HOSTS")
    OpenAICompatibleLLM(url, "m", key_hosts=("api.example.com",))
    OpenAICompatibleLLM(url, "m", key_hosts=(url,))
    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "api.example.com")
    fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m", key_hosts=("elsewhere.example",)),
          "api.example.com", "elsewhere.example")


def test_no_key_set_means_no_key_sent_and_no_error(monkeypatch, server):
    for value in (None, "", "   "):
        if value is None:
            monkeypatch.delenv("ACDC_LLM_API_KEY")
        else:
            monkeypatch.setenv("ACDC_LLM_API_KEY", value)
        OpenAICompatibleLLM("https://attacker.example/v1", "m")
        OpenAICompatibleLLM("http://attacker.example/v1", "m")
        assert chat(OpenAICompatibleLLM(server.base, "m")) == "Benny jumps."
        assert "Authorization" not in server.requests[-1]["headers"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1", "http://127.9.8.7:1/v1", "http://localhost:1/v1",
                                 "http://[::1]:1/v1", "http://LOCALHOST:1/v1"])
def test_loopback_hosts_always_get_the_key_even_over_http(url):
    _clean(OpenAICompatibleLLM(url, "m"))


def test_no_key_over_plain_http_to_another_host_unless_allowed(monkeypatch):
    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "llm.lan")
    url = "http://llm.lan:8000/v1"
    fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m"), "http://", "llm.lan", "ACDC_LLM_ALLOW_HTTP_KEY=1")
    OpenAICompatibleLLM(url, "m", allow_http_key=True)
    monkeypatch.setenv("ACDC_LLM_ALLOW_HTTP_KEY", "1")
    OpenAICompatibleLLM(url, "m")
    monkeypatch.delenv("ACDC_LLM_ALLOW_HTTP_KEY")
    monkeypatch.delenv("ACDC_LLM_API_KEY")
    OpenAICompatibleLLM(url, "m")  # no key, nothing to protect


def test_a_key_with_odd_characters_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("ACDC_LLM_API_KEY", f"{SECRET}\r\nX-Injected: 1")
    fails(InvalidInputError, lambda: OpenAICompatibleLLM("http://127.0.0.1:1/v1", "m"), "ACDC_LLM_API_KEY")


def test_the_node_refuses_a_hostile_workflow_before_anything_runs(server):
    from nodes.loaders import MemoryEndpoint

    assert MemoryEndpoint.INPUT_TYPES()["required"]["api_key_env"][1]["default"] == "ACDC_LLM_API_KEY"
    steal = MemoryEndpoint.VALIDATE_INPUTS(base_url=server.base, model="m", api_key_env="AWS_SECRET_ACCESS_KEY")
    assert isinstance(steal, str) and "ACDC_LLM_API_KEY" in steal
    exfiltrate = MemoryEndpoint.VALIDATE_INPUTS(base_url="https://attacker.example/v1", model="m",
                                                api_key_env="ACDC_LLM_API_KEY")
    assert isinstance(exfiltrate, str) and "ACDC_LLM_API_KEY_HOSTS" in exfiltrate
    in_url = MemoryEndpoint.VALIDATE_INPUTS(base_url=f"https://u:{URL_SECRET}@attacker.example/v1", model="m",
                                            api_key_env="ACDC_LLM_API_KEY")
    assert isinstance(in_url, str) and "***@" in in_url
    assert MemoryEndpoint.VALIDATE_INPUTS(base_url=server.base, model="m", api_key_env="ACDC_LLM_API_KEY") is True
    for answer in (steal, exfiltrate, in_url):
        _clean(answer)
    assert server.requests == []  # validation never touches the network

    handle = MemoryEndpoint().load(f"{server.base}?token={URL_SECRET}", "m", "ACDC_LLM_API_KEY", "per-frame",
                                   8, 0.0, 0, "")[0]
    assert "token=***" in handle.name
    _clean(handle)
    _clean(handle.engine.backend)


# ------------------------------------------------------------------------------------------------------------
# keys in the URL: refused (user info) or scrubbed (query values)
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    (f"https://user:{URL_SECRET}@api.example.com/v1?key={URL_SECRET}#{URL_SECRET}",
     "https://***@api.example.com/v1?key=***#***"),
    (f"http://127.0.0.1:8080/v1?api-version=2024-06-01&api_key={URL_SECRET}&flag",
     "http://127.0.0.1:8080/v1?api-version=***&api_key=***&***"),
    (f"http://[::1/v1?token={URL_SECRET}", "http://[::1/v1?token=***"),   # unparsable: still scrubbed
    ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
])
def test_scrub_url(url, shown):
    assert scrub_url(url) == shown


@pytest.mark.parametrize("url", [f"https://user:{URL_SECRET}@api.example.com/v1", f"http://{URL_SECRET}@127.0.0.1:1/v1",
                                 f"http://:{URL_SECRET}@localhost:1/v1"])
def test_user_info_in_the_base_url_is_refused_and_scrubbed(url):
    fails(InvalidInputError, lambda: OpenAICompatibleLLM(url, "m"), "***@", "ACDC_LLM_API_KEY")


def test_query_values_are_kept_for_the_server_and_scrubbed_everywhere_else(server, servers):
    base = f"{server.base}?api-version=2024-06-01&key={URL_SECRET}"
    llm = OpenAICompatibleLLM(base, "not-listed", timeout=5)
    assert "key=***" in repr(llm) and llm.base_url == f"{server.base}?api-version=***&key=***"
    _clean(llm)
    assert llm.check() == ["m"]  # the model is not listed: a warning names the URL, scrubbed
    assert server.requests[-1]["path"] == f"/v1/models?api-version=2024-06-01&key={URL_SECRET}"
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"  # loopback: the key goes there

    server.route("/v1/chat/completions", reply(401, {"error": {"message": f"bad key {SECRET} for {URL_SECRET}"}}))
    message = fails(EndpointHTTPError, lambda: chat(llm), "HTTP 401", "key=***", "ACDC_LLM_API_KEY")
    assert server.requests[-1]["path"] == f"/v1/chat/completions?api-version=2024-06-01&key={URL_SECRET}"
    assert "bad key *** for ***" in message

    other = servers(other_origin=True)
    server.route("/v1/chat/completions", redirect(302, f"{other.base}/chat/completions?token={URL_SECRET}"))
    fails(EndpointUnreachableError, lambda: chat(llm), "key=***", f"{other.base}/chat/completions?token=***")

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1?key={URL_SECRET}", "m", retries=0)
    fails(EndpointUnreachableError, closed.check, "Could not reach", f"127.0.0.1:{port}/v1/models?key=***")


def test_the_model_list_warning_is_scrubbed(server, caplog):
    llm = OpenAICompatibleLLM(f"{server.base}?key={URL_SECRET}", "not-listed")
    llm.check()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("key=***" in w for w in warnings)


# ------------------------------------------------------------------------------------------------------------
# redirects are never followed
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", ["check", "chat"])
@pytest.mark.parametrize("other_host", ["127.0.0.1", "localhost"])
def test_a_redirect_to_another_origin_is_refused_and_the_key_stays_home(servers, status, call, other_host):
    home = servers()
    other = servers(other_host, other_origin=True)
    other.route("/v1/models", reply(200, MODELS))
    other.route("/v1/chat/completions", reply(200, OK))
    route = "/models" if call == "check" else "/chat/completions"
    home.route("/v1" + route, redirect(status, other.base + route))
    llm = OpenAICompatibleLLM(home.base, "m")
    message = fails(EndpointHTTPError, llm.check if call == "check" else lambda: chat(llm),
                    f"HTTP {status}", home.base + route, other.base + route, "final URL as the base URL",
                    f"here probably {other.base})")
    assert len(home.requests) == 1          # no retry either
    assert home.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "redirect" in message


def test_a_relative_redirect_is_refused_too(server):
    server.route("/v1/chat/completions", redirect(307, "/v2/chat/completions"))
    fails(EndpointUnreachableError, lambda: chat(OpenAICompatibleLLM(server.base, "m")),
          f"{server.origin}/v2/chat/completions", f"here probably {server.origin}/v2)")
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"]


# ------------------------------------------------------------------------------------------------------------
# deadlines: total per request, however the server drips
# ------------------------------------------------------------------------------------------------------------

def test_a_dripping_body_fails_at_the_total_deadline(server):
    server.route("/v1/chat/completions", drip_body)
    llm = OpenAICompatibleLLM(server.base, "m", timeout=1, retries=0)
    error = in_thread(lambda: chat(llm))
    assert isinstance(error, EndpointUnreachableError)
    assert "no complete answer within 1 s" in _clean(error)
    assert server.closed.wait(10), "the client never hung up"
    assert len(server.requests) == 1


def test_dripping_headers_fail_check_at_its_deadline(server):
    server.route("/v1/models", drip_headers)
    llm = OpenAICompatibleLLM(server.base, "m", timeout=1)  # check() waits min(timeout, 10) s
    error = in_thread(llm.check)
    assert isinstance(error, EndpointUnreachableError)
    assert "no complete answer within 1 s" in _clean(error)
    assert server.closed.wait(10)


def test_a_server_that_never_answers_is_retried_then_given_up(server, no_leaks):
    server.route("/v1/chat/completions", hang)
    llm = OpenAICompatibleLLM(server.base, "m", timeout=0.5, retries=1)
    error = in_thread(lambda: chat(llm))
    assert isinstance(error, EndpointUnreachableError)
    message = _clean(error)
    assert "no complete answer within 0.5 s" in message and "Gave up after 2 tries" in message
    assert len(server.requests) == 2 and no_leaks == [1.0]
    assert server.closed.wait(10)


# ------------------------------------------------------------------------------------------------------------
# garbage and oversized answers
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"<html>not json</html>", b"\xff\xfe garbage", b"[" * 100_000, b""])
def test_garbage_with_status_200_is_not_json_and_not_retried(server, no_leaks, payload):
    server.route("/v1/chat/completions", reply(200, payload))
    fails(EndpointUnreachableError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), "did not answer with JSON")
    assert len(server.requests) == 1 and no_leaks == []


def test_a_server_that_does_not_speak_http(server, no_leaks):
    server.route("/v1/chat/completions", raw(b"\x00\x01 SSH-2.0-nope " + SECRET.encode() + b"\r\n\r\n"))
    fails(EndpointUnreachableError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), "Could not reach")
    assert len(server.requests) == 1 and no_leaks == []


def test_an_answer_without_choices(server):
    server.route("/v1/chat/completions", reply(200, {"echo": SECRET, "choices": [{"message": "no dict"}]}))
    fails(EndpointUnreachableError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), "choices[0].message.content")


@pytest.mark.parametrize("content_length", [True, False])
def test_an_answer_over_the_size_cap_is_refused(server, no_leaks, content_length):
    server.route("/v1/chat/completions", huge(200_000, content_length=content_length))
    llm = OpenAICompatibleLLM(server.base, "m", max_response_bytes=1000)
    fails(EndpointUnreachableError, lambda: chat(llm), "more than 1000 bytes", "max_response_bytes")
    assert len(server.requests) == 1 and no_leaks == []


def test_a_huge_error_body_is_cut_not_read_whole(server, no_leaks):
    server.route("/v1/chat/completions", reply(400, b"e" * 3_000_000))
    message = fails(EndpointHTTPError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), "HTTP 400")
    assert len(message) < 2000 and no_leaks == []


# ------------------------------------------------------------------------------------------------------------
# retries
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_transient_http_error_is_retried(server, no_leaks, status):
    server.route("/v1/chat/completions", reply(status, {"error": {"message": "busy"}}), reply(200, OK))
    assert chat(OpenAICompatibleLLM(server.base, "m")) == "Benny jumps."
    assert len(server.requests) == 2 and no_leaks == [1.0]


def test_retries_are_bounded_with_backoff(server, no_leaks):
    server.route("/v1/chat/completions", reply(503, {"error": {"message": f"overloaded {SECRET}"}}))
    fails(EndpointHTTPError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), "HTTP 503", "overloaded ***",
          "Gave up after 3 tries")
    assert len(server.requests) == 3 and no_leaks == [1.0, 2.0]


@pytest.mark.parametrize("status, hint", [(401, "Check the API key environment variable ACDC_LLM_API_KEY"),
                                          (403, "ACDC_LLM_API_KEY"), (404, "Check the model name"),
                                          (400, "HTTP 400"), (422, "HTTP 422")])
def test_a_client_error_is_not_retried(server, no_leaks, status, hint):
    server.route("/v1/chat/completions", reply(status, {"error": {"message": f"nope {SECRET}"}}))
    message = fails(EndpointHTTPError, lambda: chat(OpenAICompatibleLLM(server.base, "m")), f"HTTP {status}", hint)
    assert "tries" not in message
    assert len(server.requests) == 1 and no_leaks == []


def test_a_refused_connection_is_retried_then_given_up(no_leaks):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m")
    fails(EndpointUnreachableError, lambda: chat(llm), "Could not reach", f"127.0.0.1:{port}", "Start the server",
          "Gave up after 3 tries")
    assert no_leaks == [1.0, 2.0]
    no_leaks.clear()
    fails(EndpointUnreachableError, llm.check, "Could not reach")  # check() is one quick try
    assert no_leaks == []


# ------------------------------------------------------------------------------------------------------------
# check() once per object
# ------------------------------------------------------------------------------------------------------------

def test_check_asks_once_and_remembers_success(server):
    llm = OpenAICompatibleLLM(server.base, "m")
    assert llm.check() == ["m"] and llm.check() == ["m"]
    assert len(server.requests) == 1
    server.route("/v1/models", reply(404, {"error": {"message": "no list"}}))
    other = OpenAICompatibleLLM(server.base, "m")
    assert other.check() == [] and other.check() == []
    assert len(server.requests) == 2


def test_a_failed_check_is_not_remembered(server):
    server.route("/v1/models", reply(503, {"error": {"message": "starting"}}), reply(200, MODELS))
    llm = OpenAICompatibleLLM(server.base, "m")
    fails(EndpointHTTPError, llm.check, "HTTP 503")
    assert llm.check() == ["m"] and llm.check() == ["m"]
    assert len(server.requests) == 2


# ------------------------------------------------------------------------------------------------------------
# proxies: loopback bypasses them; https goes through a CONNECT tunnel the proxy cannot read
# ------------------------------------------------------------------------------------------------------------

def test_loopback_endpoints_bypass_the_proxy(server, servers, monkeypatch):
    proxy = servers(other_origin=True)
    monkeypatch.setenv("http_proxy", proxy.origin)
    monkeypatch.setenv("HTTP_PROXY", proxy.origin)
    assert chat(OpenAICompatibleLLM(server.base, "m")) == "Benny jumps."


def test_https_goes_through_the_proxy_in_a_tunnel(servers, monkeypatch):
    proxy = servers()
    proxy.route("api.example.com:443", reply(502, b""))  # CONNECT's target is the route
    monkeypatch.setenv("https_proxy", f"http://user:{PROXY_SECRET}@127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("ACDC_LLM_API_KEY_HOSTS", "api.example.com")
    llm = OpenAICompatibleLLM("https://api.example.com/v1", "m", retries=0)
    message = fails(EndpointUnreachableError, lambda: chat(llm), "https://api.example.com/v1/chat/completions",
                    "through the proxy http://***@127.0.0.1")
    assert "502" in message
    [connect] = proxy.requests
    assert connect["method"] == "CONNECT" and connect["path"] == "api.example.com:443"
    assert connect["headers"]["Proxy-Authorization"] == "Basic " + base64.b64encode(
        f"user:{PROXY_SECRET}".encode()).decode()
    assert SECRET.encode() not in connect["raw"]  # the key would travel inside the tunnel only


def test_plain_http_without_a_key_goes_through_the_proxy(servers, monkeypatch):
    proxy = servers()
    proxy.route("http://api.example.com/v1/models", reply(200, MODELS))
    monkeypatch.setenv("http_proxy", proxy.origin)
    monkeypatch.delenv("ACDC_LLM_API_KEY")
    assert OpenAICompatibleLLM("http://api.example.com/v1", "m").check() == ["m"]
    assert [r["path"] for r in proxy.requests] == ["http://api.example.com/v1/models"]
    monkeypatch.setenv("no_proxy", "api.example.com")
    assert endpoint._Proxy.for_url("http", "api.example.com", "api.example.com") is None
