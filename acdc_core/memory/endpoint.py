"""The memory's chat backend over an OpenAI-compatible HTTP endpoint (OpenAI, Ollama, llama.cpp server, vLLM,
LM Studio ...): ``OpenAICompatibleLLM`` meets ``backends.ChatBackend`` with no weights here.

Security: the API key is read at request time from an environment variable named ``ACDC_LLM_API_KEY`` or
``ACDC_LLM_API_KEY_<NAME>`` only, and sent only to a host the user allowed outside the workflow; it is never
stored on the object, logged, or put in an error message, and URLs are printed through :func:`scrub_url`.
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Optional, Sequence

from ..errors import EndpointUnreachableError, InvalidInputError
from .backends import Message, Weightless, _check_generation_args, _check_messages

logger = logging.getLogger("acdc_core.memory")

__all__ = ["OpenAICompatibleLLM", "EndpointHTTPError", "scrub_url", "check_api_key_env", "API_KEY_ENV",
           "ALLOW_HTTP_KEY_ENV"]


# ----------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint (OpenAI, Ollama, llama.cpp server, vLLM, LM Studio ...)
# ----------------------------------------------------------------------------------------------------------
#
# A workflow file is untrusted input: it picks the URL and the *name* of the key variable. So the key rule
# lives here, in one place, for the node and the CLI alike:
#   - the key is read only from ACDC_LLM_API_KEY or ACDC_LLM_API_KEY_<NAME>;
#   - it is sent only to a loopback host or a host the user allowed outside the workflow (key_hosts, or the
#     environment variable <VAR>_HOSTS), never over plain http:// to another host unless allowed
#     (ACDC_LLM_ALLOW_HTTP_KEY=1), and never after a redirect (redirects are refused);
#   - every request has a total deadline and a size cap; every URL printed goes through scrub_url().

API_KEY_ENV = "ACDC_LLM_API_KEY"            # the default key variable; others are ACDC_LLM_API_KEY_<NAME>
HOSTS_SUFFIX = "_HOSTS"                      # <VAR>_HOSTS: hosts the key in <VAR> may be sent to
ALLOW_HTTP_KEY_ENV = "ACDC_LLM_ALLOW_HTTP_KEY"
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
CHECK_TIMEOUT_S = 10.0                       # check() waits at most this long (or timeout, if shorter)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_BACKOFF_S = 1.0                        # the wait before the first retry of chat(); doubled for each next one
_sleep = time.sleep                          # tests replace it
_KEY_ENV_RULE = re.compile(r"ACDC_LLM_API_KEY(?:_[A-Z0-9_]+)?")
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")     # printable ASCII, no spaces: what an HTTP header value may carry
_ERROR_BODY_BYTES = 64 * 1024                # read at most this much of an HTTP error answer
_CHUNK = 64 * 1024


class EndpointHTTPError(EndpointUnreachableError):
    """The endpoint answered with an HTTP error status (kept in ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _is_loopback(host: Optional[str]) -> bool:
    """localhost, 127.0.0.0/8 or ::1, decided from the text alone (no name is resolved)."""
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _scrub_query(query: str) -> str:
    params = []
    for param in query.split("&"):
        if "=" in param:
            params.append(param.split("=", 1)[0] + "=***")
        elif param:
            params.append("***")
    return "&".join(params)


def scrub_url(url: object) -> str:
    """``url`` safe to print: user info -> ``***@``, every query value -> ``***`` (names kept), no fragment text.

    Used for every URL this module prints (messages, repr, logs). Never raises.
    """
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:  # e.g. an unbalanced "[" in the host: scrub by pattern
        text = re.sub(r"(//)[^/?#]*@", r"\1***@", text)
        text = re.sub(r"#.*", "#***", text, flags=re.S)
        return re.sub(r"(\?)(.*)", lambda m: "?" + _scrub_query(m.group(2)), text, flags=re.S)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _scrub_query(parts.query) if parts.query else ""
    fragment = "***" if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def check_api_key_env(name: object) -> str:
    """The key variable's name if the key rule admits it (``ACDC_LLM_API_KEY`` or ``ACDC_LLM_API_KEY_<NAME>``).

    A workflow names the variable, and must not be able to send any other secret of the host (e.g.
    ``AWS_SECRET_ACCESS_KEY``) as the API key.
    """
    text = name.strip() if isinstance(name, str) else ""
    if not _KEY_ENV_RULE.fullmatch(text) or text.endswith(HOSTS_SUFFIX):
        shown = repr(name)[:80]
        raise InvalidInputError(
            f"api_key_env must be {API_KEY_ENV} or start with {API_KEY_ENV}_ (e.g. {API_KEY_ENV}_OPENAI; capitals, "
            f"digits and _ only, not ending in {HOSTS_SUFFIX}); got {shown}. The API key is read only from such a "
            "variable, so that a shared workflow cannot send another secret of this machine anywhere. Put the key "
            f"in {API_KEY_ENV} (or {API_KEY_ENV}_<NAME>) in the environment.")
    return text


def _host_entry(entry: str) -> Optional[tuple[str, Optional[int]]]:
    """(host, port or None) from a hostname, host:port, [v6]:port or URL; None if it is not one."""
    text = entry.strip().lower()
    if not text:
        return None
    if "://" not in text:
        if text.count(":") > 1 and not text.startswith("["):  # a bare IPv6 address
            text = f"[{text}]"
        text = "//" + text
    try:
        parts = urllib.parse.urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host.rstrip("."), port) if host else None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _hostport(host: str, port: Optional[int]) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


_SSL_CONTEXT: Optional[ssl.SSLContext] = None


def _ssl_context() -> ssl.SSLContext:
    """The default context (certificates verified), as urllib would use."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


class _Proxy:
    """The environment's proxy for one scheme (urllib's rules: ``http_proxy``/``https_proxy``, ``no_proxy``)."""

    def __init__(self, url: str) -> None:
        text = url if "://" in url else f"http://{url}"
        parts = urllib.parse.urlsplit(text)  # ValueError on a malformed setting
        if not parts.hostname:
            raise ValueError("no host")
        self.host = parts.hostname
        self.port = parts.port or _default_port(parts.scheme.lower())
        self.shown = scrub_url(text)
        self.headers: dict[str, str] = {}
        if parts.username is not None:  # user:password@proxy: Basic proxy authentication, as urllib does
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    @classmethod
    def for_url(cls, scheme: str, host: str, netloc: str) -> Optional["_Proxy"]:
        if _is_loopback(host):
            return None  # local servers never go through a proxy meant for the outside world
        setting = urllib.request.getproxies().get(scheme)
        if not setting or urllib.request.proxy_bypass(netloc):
            return None
        try:
            return cls(setting)
        except ValueError:
            raise EndpointUnreachableError(
                f"The {scheme}_proxy setting of the environment ({scrub_url(setting)}) is not a proxy URL like "
                "http://proxy.example:3128; fix or unset it.") from None


class _DeadlinePassed(TimeoutError):
    pass


class _TooLarge(Exception):
    pass


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed()
    return left


class _Watchdog:
    """Shuts the connection's socket down at the request's deadline.

    Socket timeouts bound each read only; a server sending one byte at a time would never trip them. Shutting
    the socket down wakes any read in progress (headers, TLS, a proxy's CONNECT answer, the body).
    """

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self._conn = conn
        # the connected socket: http.client drops conn.sock once a closing response holds it
        self.sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sock = self.sock if self.sock is not None else self._conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, deadline: float, limit: int, *,
               truncate: bool) -> bytes:
    """The body in chunks, each read bounded by the time left; past ``limit`` bytes: _TooLarge, or cut there."""
    length = response.getheader("Content-Length")
    if not truncate and length and length.strip().isdigit() and int(length) > limit:
        raise _TooLarge()
    chunks, size = [], 0
    while True:
        sock.settimeout(_remaining(deadline))
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            if truncate:
                chunks.append(chunk[: len(chunk) - (size - limit)])
                return b"".join(chunks)
            raise _TooLarge()
        chunks.append(chunk)


def _error_detail(raw: bytes) -> str:
    """The server's own error message from an HTTP error body (OpenAI, Ollama and vLLM shapes)."""
    text = raw[:2000].decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return " ".join(text.split())[:300] or "(no body)"
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("message", payload.get("detail")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if err is not None:
            return " ".join(str(err).split())[:300]
    return " ".join(text.split())[:300]


def _failure(message: str, *, status: Optional[int] = None, transient: bool = False) -> EndpointUnreachableError:
    error = EndpointHTTPError(message, status) if status is not None else EndpointUnreachableError(message)
    error.transient = transient  # type: ignore[attr-defined]
    return error


class OpenAICompatibleLLM(Weightless):
    """POST {base_url}/chat/completions with the standard JSON body; the key comes from an env variable.

    The key (from ``api_key_env``, which must be ``ACDC_LLM_API_KEY`` or ``ACDC_LLM_API_KEY_<NAME>``) is read
    at request time and sent only to a loopback host or to a host in ``key_hosts`` (default: the
    comma-separated environment variable ``<api_key_env>_HOSTS``), over https (or http only with
    ``allow_http_key`` or ``ACDC_LLM_ALLOW_HTTP_KEY=1``). Breaking that rule is an InvalidInputError here in
    the constructor (and at request time, should the environment change). With the variable unset or
    empty, no key is sent. Redirects are never followed.

    ``timeout`` is the total seconds one request may take (connect, send, the whole answer); ``check()``
    waits at most ``min(timeout, 10)``. Answers over ``max_response_bytes`` are refused. ``chat()`` tries
    ``retries`` more times on a refused or reset connection, a timeout and HTTP 429/500/502/503/504, waiting
    ``RETRY_BACKOFF_S`` (1 s), then twice as long each time.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = API_KEY_ENV,
                 key_hosts: Optional[Sequence[str]] = None, allow_http_key: bool = False, timeout: float = 60,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, retries: int = 2) -> None:
        raw = base_url.strip() if isinstance(base_url, str) else ""
        try:
            parts = urllib.parse.urlsplit(raw)
            host, port = parts.hostname, parts.port
        except ValueError:
            parts, host, port = None, None, None
        if (parts is None or parts.scheme.lower() not in ("http", "https") or not host
                or any(ord(c) <= 0x20 or ord(c) == 0x7f for c in raw)):
            raise InvalidInputError(
                f"The LLM endpoint base URL must start with http:// or https://, like "
                f"http://127.0.0.1:11434/v1 (Ollama) or https://api.openai.com/v1; got {scrub_url(raw)[:200]!r}.")
        if "@" in parts.netloc:
            raise InvalidInputError(
                f"The LLM endpoint base URL {scrub_url(raw)} holds a user name or password; a URL is shown and "
                f"shared with the workflow, so put the API key in the environment variable {API_KEY_ENV} instead "
                "and give the URL without it.")
        if parts.fragment:
            raise InvalidInputError(f"The LLM endpoint base URL {scrub_url(raw)} has a #fragment; remove it.")
        if not (parts.path + parts.query).isascii():
            raise InvalidInputError(f"The path of the LLM endpoint base URL {scrub_url(raw)} has non-ASCII "
                                    "characters; percent-encode them.")
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError("The LLM endpoint needs a model name (e.g. gpt-4o-mini, or the model's name in Ollama).")
        self.api_key_env = check_api_key_env(api_key_env)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise InvalidInputError(f"timeout must be a number of seconds > 0, got {timeout!r}.")
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int) or max_response_bytes < 1:
            raise InvalidInputError(f"max_response_bytes must be a whole number >= 1, got {max_response_bytes!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise InvalidInputError(f"retries must be a whole number in [0, 10], got {retries!r}.")

        path = parts.path.rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if path.endswith(suffix):  # a full endpoint URL pasted by the user
                path = path[: -len(suffix)]
        self._scheme = parts.scheme.lower()
        self._host = host.rstrip(".")
        self._port = port if port is not None else _default_port(self._scheme)
        self._netloc = parts.netloc
        self._path = path
        self._query = parts.query
        self._url = urllib.parse.urlunsplit((self._scheme, self._netloc, path, self._query, ""))
        self.base_url = scrub_url(self._url)  # the printable form: query values scrubbed
        self.model = model.strip()
        self.timeout = float(timeout)
        self.max_response_bytes = max_response_bytes
        self.retries = retries
        self.allow_http_key = bool(allow_http_key)
        self._key_hosts = self._parse_key_hosts(key_hosts)
        self._checked: Optional[list[str]] = None
        self._key()  # a key that may not go to this URL fails here, before anything runs

    def __repr__(self) -> str:
        return (f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    # -- the key rule ---------------------------------------------------------------------------------------
    @staticmethod
    def _parse_key_hosts(key_hosts: Optional[Sequence[str]]) -> Optional[tuple[tuple[str, Optional[int]], ...]]:
        if key_hosts is None:
            return None
        items = key_hosts.split(",") if isinstance(key_hosts, str) else list(key_hosts)
        parsed = []
        for item in items:
            entry = _host_entry(item) if isinstance(item, str) else None
            if entry is None:
                if isinstance(item, str) and not item.strip():
                    continue
                raise InvalidInputError(f"key_hosts entries must be host names, host:port or URLs; got {item!r:.80}.")
            parsed.append(entry)
        return tuple(parsed)

    def _allowed_hosts(self) -> tuple[list[tuple[str, Optional[int]]], str]:
        """The hosts the key may go to and, for messages, where that list came from."""
        if self._key_hosts is not None:
            return list(self._key_hosts), "the hosts allowed by the caller"
        variable = self.api_key_env + HOSTS_SUFFIX
        entries = [_host_entry(item) for item in os.environ.get(variable, "").split(",")]
        return [e for e in entries if e is not None], variable

    def _key(self) -> Optional[str]:
        """The key to send to this endpoint, or None when the variable is unset or empty.

        Raises InvalidInputError (never showing the key) if the rule forbids sending it here.
        """
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            return None
        if not _KEY_CHARS.fullmatch(key):
            raise InvalidInputError(
                f"The value of {self.api_key_env} has spaces, control or non-ASCII characters inside; an API key "
                "has none (the value is not shown). Check the variable.")
        if _is_loopback(self._host):
            return key
        where = _hostport(self._host, self._port)
        allowed, source = self._allowed_hosts()
        if not any(host == self._host and (port is None or port == self._port) for host, port in allowed):
            if self._key_hosts is not None:
                how = (f"it is not among {source} ({', '.join(_hostport(*e) for e in allowed) or 'none'}). "
                       f"Unset {self.api_key_env} if the endpoint needs no key.")
            else:
                held = os.environ.get(source, "").strip()
                how = (f"{source} does not list it ({'it holds ' + repr(held[:200]) if held else 'it is not set'}). "
                       f"If you trust that host, set {source}={_hostport(self._host, None)} (comma-separated host "
                       f"names or host:port) in the environment ComfyUI or acdc runs in (a workflow cannot allow "
                       f"it), or unset {self.api_key_env} if the endpoint needs no key.")
            raise InvalidInputError(
                f"The API key in {self.api_key_env} would be sent to {where} (the LLM endpoint {self.base_url}), "
                f"but {how}")
        if self._scheme == "http" and not (self.allow_http_key or _env_flag(ALLOW_HTTP_KEY_ENV)):
            raise InvalidInputError(
                f"The API key in {self.api_key_env} would be sent unencrypted over http:// to {where} (the LLM "
                f"endpoint {self.base_url}). Use https://, or, on a network you trust, set {ALLOW_HTTP_KEY_ENV}=1 "
                f"in the environment; or unset {self.api_key_env} if the endpoint needs no key.")
        return key

    def _scrub(self, text: str) -> str:
        """Text from the server or the network with the key and the URL's query values replaced by ***."""
        secrets = [value for values in urllib.parse.parse_qs(self._query).values() for value in values]
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            secrets.append(key)
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= 6:
                text = text.replace(secret, "***")
        return text

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _url_for(self, route: str) -> str:
        return urllib.parse.urlunsplit((self._scheme, self._netloc, self._path + route, self._query, ""))

    def _connection(self, route: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str],
                                                               Optional[_Proxy]]:
        """A new connection for one request, the request target, extra headers, and the proxy used (if any)."""
        target = self._path + route + (f"?{self._query}" if self._query else "")
        proxy = _Proxy.for_url(self._scheme, self._host, self._netloc)
        host, port = (proxy.host, proxy.port) if proxy else (self._host, self._port)
        if self._scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                                          context=_ssl_context())
            if proxy:  # a CONNECT tunnel: the proxy sees the host name only, never the key
                conn.set_tunnel(self._host, self._port, headers=proxy.headers)
            return conn, target, {}, proxy
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        if proxy:  # plain http through a proxy: the absolute URL as the target
            return conn, self._url_for(route), dict(proxy.headers), proxy
        return conn, target, {}, None

    def _request(self, method: str, route: str, body: Optional[dict[str, Any]], timeout: float) -> Any:
        shown = scrub_url(self._url_for(route))
        headers = {"Accept": "application/json", "User-Agent": "acdc-story"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        deadline = time.monotonic() + timeout
        conn, target, extra, proxy = self._connection(route, timeout)
        headers.update(extra)
        via = f" through the proxy {proxy.shown}" if proxy else ""
        watchdog = _Watchdog(conn, timeout)
        response: Optional[http.client.HTTPResponse] = None
        try:
            with watchdog:
                conn.timeout = _remaining(deadline)
                conn.connect()
                sock = watchdog.sock = conn.sock
                sock.settimeout(_remaining(deadline))
                conn.request(method, target, body=data, headers=headers)
                sock.settimeout(_remaining(deadline))
                response = conn.getresponse()
                status, reason = response.status, response.reason
                location = response.getheader("Location")
                raw = b""
                if not 300 <= status < 400:
                    ok = 200 <= status < 300
                    raw = _read_body(response, sock, deadline,
                                     self.max_response_bytes if ok else min(self.max_response_bytes, _ERROR_BODY_BYTES),
                                     truncate=not ok)
                if watchdog.fired:
                    raise _DeadlinePassed()
        except _TooLarge:
            raise _failure(f"The LLM endpoint {shown} answered more than {self.max_response_bytes} bytes "
                           "(max_response_bytes); that is no chat answer. Check the base URL.") from None
        except Exception as exc:
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise _failure(f"The LLM endpoint {shown}{via} sent no complete answer within {timeout:g} s (the "
                               "total time allowed per request). Is the server overloaded, or the model too slow "
                               "for that timeout?", transient=True) from None
            if not isinstance(exc, (OSError, http.client.HTTPException)):
                raise
            if isinstance(exc, socket.gaierror):
                why, transient = f"cannot resolve the host {self._host}", False
            else:
                why = self._scrub(str(exc))[:300] or type(exc).__name__
                transient = isinstance(exc, (ConnectionError, http.client.IncompleteRead)) \
                    and not isinstance(exc, ssl.SSLError)
            raise _failure(f"Could not reach the LLM endpoint {shown}{via} ({why}). Start the server (e.g. "
                           "`ollama serve`, llama.cpp's llama-server, vLLM) or fix the base URL.",
                           transient=transient) from None
        finally:
            if response is not None:
                response.close()
            conn.close()

        if 300 <= status < 400:
            raise _failure(self._redirect_message(shown, route, status, reason, location), status=status)
        if not 200 <= status < 300:
            detail = self._scrub(_error_detail(raw))
            hint = ""
            if status in (401, 403):
                hint = (f" Check the API key environment variable {self.api_key_env}." if key else
                        f" No API key was sent: {self.api_key_env} is not set.")
            elif status == 404 and route != "/models":
                hint = f" Check the model name {self.model!r} and the base URL."
            raise _failure(f"The LLM endpoint {shown} answered HTTP {status} {self._scrub(str(reason))[:100]}: "
                           f"{detail}{hint}", status=status, transient=status in RETRY_STATUSES)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            snippet = self._scrub(raw[:200].decode("utf-8", "replace"))
            raise _failure(
                f"The LLM endpoint {shown} did not answer with JSON (got {snippet!r}). Is the base URL the "
                "OpenAI-compatible API root (often ending in /v1)?") from None

    def _redirect_message(self, shown: str, route: str, status: int, reason: str, location: Optional[str]) -> str:
        target, hint = "(no Location given)", ""
        if location:
            try:
                url = urllib.parse.urljoin(self._url_for(route), self._scrub(location)[:500])
                split = urllib.parse.urlsplit(url)
            except ValueError:
                url, split = location[:500], None
            target = scrub_url(self._scrub(url))
            path = split.path.rstrip("/") if split is not None else ""
            if path.endswith(route):  # the new home of the same route: suggest its API root
                hint = f" (here probably {scrub_url(split._replace(path=path[: -len(route)], fragment='').geturl())})"
        return (f"The LLM endpoint {shown} answered HTTP {status} {self._scrub(str(reason))[:100]}, a redirect to "
                f"{target}. Redirects are not followed (the API key must not travel to another URL, and a POST "
                f"would turn into a GET): use the final URL as the base URL{hint}.")

    # -- API ----------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """GET {base_url}/models: raises EndpointUnreachableError if the server is down or refuses the key.

        Returns the model ids the server lists (empty where it has no /models route). A model name not in
        a non-empty list only logs a warning: some servers accept aliases they do not list. Runs once per
        object: a later call returns the remembered answer without asking again.
        """
        if self._checked is not None:
            return list(self._checked)
        try:
            answer = self._request("GET", "/models", None, timeout=min(self.timeout, CHECK_TIMEOUT_S))
        except EndpointHTTPError as exc:
            if exc.status not in (404, 405):
                raise
            answer = None  # the server is up, it just has no model list
        data = answer.get("data") if isinstance(answer, dict) else None
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(data, list) else []
        if ids and self.model not in ids:
            logger.warning("The LLM endpoint %s does not list the model %r (it lists %s).",
                           self.base_url, self.model, ", ".join(self._scrub(i)[:80] for i in ids[:8]))
        self._checked = ids
        return list(ids)

    def chat(self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int) -> str:
        _check_generation_args(max_new_tokens, temperature)
        body = {"model": self.model, "messages": _check_messages(messages), "temperature": float(temperature),
                "max_tokens": int(max_new_tokens), "seed": int(seed)}
        tries = self.retries + 1
        for attempt in range(tries):
            try:
                answer = self._request("POST", "/chat/completions", body, timeout=self.timeout)
                break
            except EndpointUnreachableError as exc:
                if not getattr(exc, "transient", False):
                    raise
                if attempt + 1 == tries:
                    exc.args = (f"{exc.args[0]} Gave up after {tries} {'try' if tries == 1 else 'tries'}.",)
                    raise
                wait = RETRY_BACKOFF_S * 2 ** attempt
                logger.warning("%s Trying again in %g s (try %d of %d).", exc, wait, attempt + 2, tries)
                _sleep(wait)
        try:
            content = answer["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            snippet = self._scrub(json.dumps(answer)[:200])
            raise EndpointUnreachableError(
                f"The LLM endpoint {scrub_url(self._url_for('/chat/completions'))} answered JSON without "
                f"choices[0].message.content: {snippet}") from None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return content if isinstance(content, str) else ""
