"""The one boundary to the network: the shared clients, one POST, httpx and HTTP errors translated
into the ProviderError tree.

Status codes map the same way for every provider: 429 is rate limiting (retryable, honouring
Retry-After) unless the body says the quota or spend limit is gone; 408, 409, 5xx and 529 are
retryable; any other 4xx is the request's own fault and is not retried. Keys travel in headers
only. A provider's error text may echo one back: every key read here is registered with
``router.redact``, and the text is masked before it is cut to length (``ProviderError`` masks
its message again), so no key reaches a trace, a log or an error body.

``HttpClients`` holds one ``httpx.AsyncClient`` per running event loop (an httpx client belongs to
the loop that opened its connections): the HTTP service's loop, a ``SyncBridge``'s loop, or a
script's ``asyncio.run``. Adapters take a client from it for each call (``client``).

Streams (``post_sse``) are server-sent events over one streaming POST: the same status mapping (the
error body is read first), the first byte and every gap bounded by ``timeout_s``, a connection dropped
mid-stream is ``ProviderUnavailable`` (reason ``connection``), and closing the iterator closes the
response, so the provider sees the client go away and stops generating.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import orjson

from router._redact import redact
from router._settings import secret
from router.errors import (
    BadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
)
from router.providers._base import (
    ChatRequest,
    Completion,
    Finish,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    checked_choice,
    estimated_usage,
    parse_choice_json,
)
from router.providers._config import ProviderConfig
from router.providers._net import AsyncioBackend

_RETRYABLE_4XX = {408, 409}
# Error codes that come with a 429 but will not clear by waiting.
_QUOTA_CODES = {"insufficient_quota", "enforced_spend_limit_reached", "billing_hard_limit_reached"}


def key_from_env(backend: str, env: str | None) -> str:
    """The API key from its environment variable, read per call so a rotated key is picked up.

    A missing key fails this provider's calls (not retryable), so a fallback on another provider
    still serves; the message names the variable, never a value.
    """
    key = secret(env)
    if not key:
        raise RequestRejected(backend, f"no API key: environment variable {env!r} (api_key_env) is not set",
                              reason="no_key")
    return key


class HttpClients:
    """One pooled ``httpx.AsyncClient`` per event loop, opened on first use and closed on that loop.

    An httpx client belongs to the loop that opened its connections, and a loop that ends with its
    client open leaks the sockets. ``aclose`` closes the running loop's client (the HTTP service's
    lifespan, ``async with``, a ``SyncBridge``'s close). A loop that ends without it is covered too:
    each client is tied to an async generator started on its loop, and the loop's shutdown
    (``asyncio.run``, anyio, uvicorn all call ``shutdown_asyncgens``) closes that generator, whose
    ``finally`` closes the client there. So ``asyncio.run(router.aclassify(...))`` leaves nothing open.
    """

    def __init__(self, max_connections: int = 256, max_keepalive: int = 64) -> None:
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[httpx.AsyncClient, AsyncGenerator[None, None], httpcore.AsyncConnectionPool | None]] = (
            weakref.WeakKeyDictionary())

    async def _held(self) -> tuple[httpx.AsyncClient, AsyncGenerator[None, None], httpcore.AsyncConnectionPool | None]:
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is not None and not held[0].is_closed:
            return held
        client = httpx.AsyncClient(limits=self._limits)  # HTTP(S)_PROXY from the environment applies to it
        # The pool itself is the fast path only where no proxy is configured: a proxied request must go
        # through the client, which picks the proxy's transport per URL.
        pool = None if urllib.request.getproxies() else httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=self._limits.max_connections,
            max_keepalive_connections=self._limits.max_keepalive_connections,
            keepalive_expiry=self._limits.keepalive_expiry, network_backend=AsyncioBackend())
        closer = _closed_with_the_loop(client, pool)
        await closer.asend(None)  # started here: the loop now tracks it (the pair keeps it alive)
        self._clients[loop] = held = (client, closer, pool)
        return held

    async def client(self) -> httpx.AsyncClient:
        """The running loop's client; per-call timeouts go on each request."""
        return (await self._held())[0]

    async def pool(self) -> httpcore.AsyncConnectionPool | None:
        """The running loop's own connection pool (httpcore's, on asyncio streams: ``_net.py``), beside its
        client: ``post_json``'s path. None when the environment names an HTTP proxy (then the client routes
        each URL). Used directly because it sits on every model call's path: the client's own layers (URL
        merging, auth and redirect hooks, cookies, per-operation timeouts) and anyio's under httpcore cost
        0.5-0.8 ms a call on the 2-core machine (p50 1.59 vs 0.79 ms a POST to a loopback server, one run);
        the request is complete without them (our headers, an absolute URL, no redirects)."""
        return (await self._held())[2]

    async def aopen(self) -> None:
        """Open the running loop's client now rather than on the first call."""
        await self.client()

    async def aclose(self) -> None:
        """Close the running loop's client (a client can only be closed on its own loop)."""
        held = self._clients.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()


async def _closed_with_the_loop(client: httpx.AsyncClient,
                                pool: httpcore.AsyncConnectionPool | None) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        try:
            await client.aclose()
        finally:
            if pool is not None:
                await pool.aclose()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _gemini_retry_delay(body: Any) -> float | None:
    """Gemini puts the wait in the body: error.details[].retryDelay = "30s"."""
    try:
        for detail in body["error"].get("details", []):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and (m := re.fullmatch(r"(\d+(?:\.\d+)?)s", delay)):
                return float(m.group(1))
    except (KeyError, TypeError, AttributeError):
        pass
    return None


def _error_fields(body: Any) -> tuple[str, str]:
    """(message, code) from OpenAI, Anthropic or Gemini error bodies."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        details = err.get("details")
        code = err.get("code") if isinstance(err.get("code"), str) else (err.get("type") or err.get("status") or "")
        if isinstance(details, dict) and isinstance(details.get("error_code"), str):
            code = details["error_code"]
        # Masked before the cut to 300, so a key split by it cannot survive in part (4000 bounds the work).
        return redact(str(err.get("message", ""))[:4000])[:300], redact(str(code)[:1000])[:100]
    return "", ""


def error_for_status(backend: str, response: httpx.Response) -> ProviderError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message, code = _error_fields(body)
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    retry_after = parse_retry_after(response.headers.get("retry-after")) or _gemini_retry_delay(body)
    if status == 429 and code in _QUOTA_CODES:
        return RequestRejected(backend, f"{detail} (quota exhausted: not retried)", reason="quota")
    if status == 429:
        return RateLimited(backend, detail, retry_after=retry_after)
    if status >= 500 or status in _RETRYABLE_4XX:
        return ProviderUnavailable(backend, detail, reason=f"http_{status}", retry_after=retry_after)
    return RequestRejected(backend, f"{detail} (not retryable: fix the request, key or permissions)",
                           reason=f"http_{status}")


async def post_json(
    clients: HttpClients, backend: str, url: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """POST ``body``; the whole exchange, connect to last byte, is bounded by ``timeout_s`` (the one timeout:
    ``asyncio.timeout``'s). Sent on the loop's pool itself (``HttpClients.pool``), else through the client."""
    content = _json_bytes(body)
    sent = {**headers, "content-type": "application/json", "accept": "application/json",
            "accept-encoding": "identity", "user-agent": USER_AGENT}
    try:
        async with asyncio.timeout(timeout_s):
            pool = await clients.pool()
            if pool is None:
                response = await (await clients.client()).send(httpx.Request("POST", url, content=content,
                                                                             headers=sent))
            else:
                answer = await pool.request("POST", url, headers=list(sent.items()), content=content)
                response = httpx.Response(answer.status, headers=answer.headers, content=answer.content)
    except (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException) as exc:
        raise ProviderTimeout(backend, f"no answer within timeout_s={timeout_s:g}") from exc
    except (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
            httpcore.ProxyError) as exc:
        raise ProviderUnavailable(backend, f"connection failed: {type(exc).__name__}", reason="connection") from exc
    if response.status_code >= 400:
        raise error_for_status(backend, response)
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise BadResponse(backend, f"malformed JSON body ({len(response.content)} bytes)", reason="malformed") from exc
    if not isinstance(data, dict):
        raise BadResponse(backend, f"body is a JSON {type(data).__name__}, not an object", reason="malformed")
    return data


USER_AGENT = "tiered-router"


def _json_bytes(body: dict[str, Any]) -> bytes:
    """orjson (several times faster than json.dumps: a chat's whole history goes out on every call); a
    string orjson refuses (a lone surrogate) goes through json.dumps, which escapes it as httpx would."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body).encode()


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its ``event:`` name (None when unnamed) and its ``data:`` lines joined."""

    event: str | None
    data: str

    def json(self, backend: str) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except ValueError as exc:
            raise BadResponse(backend, f"malformed JSON in a stream event: {self.data[:200]!r}",
                              reason="malformed") from exc
        if not isinstance(value, dict):
            raise BadResponse(backend, f"a stream event is a JSON {type(value).__name__}, not an object",
                              reason="malformed")
        return value


def _dropped(backend: str, exc: BaseException) -> ProviderError:
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return ProviderTimeout(backend, "no answer within timeout_s")
    return ProviderUnavailable(backend, f"connection failed: {type(exc).__name__}", reason="connection")


async def post_sse(
    clients: HttpClients, backend: str, url: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
) -> AsyncGenerator[SseEvent, None]:
    """POST ``body`` and yield the answer's server-sent events as they come; ``timeout_s`` bounds the
    wait for the response head and for each line after it (not the whole stream)."""
    http = await clients.client()
    request = http.build_request("POST", url, json=body, headers={**headers, "accept": "text/event-stream"},
                                 timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.send(request, stream=True)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ProviderTimeout(backend, f"no answer within timeout_s={timeout_s:g}") from exc
    except httpx.TransportError as exc:
        raise _dropped(backend, exc) from exc
    try:  # the response is closed however this ends: the upstream request ends with it
        if response.status_code >= 400:
            try:
                async with asyncio.timeout(timeout_s):
                    await response.aread()
            except (TimeoutError, httpx.HTTPError) as exc:
                raise _dropped(backend, exc) from exc
            raise error_for_status(backend, response)
        lines = response.aiter_lines()
        name: str | None = None
        data: list[str] = []
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    line = await anext(lines)
            except StopAsyncIteration:
                break
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise ProviderTimeout(backend, f"the stream stalled for timeout_s={timeout_s:g}") from exc
            except httpx.HTTPError as exc:
                raise _dropped(backend, exc) from exc
            if not line:  # a blank line ends an event
                if data:
                    yield SseEvent(name, "\n".join(data))
                name, data = None, []
                continue
            field_name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field_name == "data":
                data.append(value)
            elif field_name == "event":
                name = value
            # comments (":...") and the id/retry fields mean nothing to a one-shot answer
        if data:  # a last event without its blank line
            yield SseEvent(name, "\n".join(data))
    finally:
        await response.aclose()


# Error types sent inside a stream (Anthropic's ``event: error``, OpenAI's ``data: {"error": ...}``).
_STREAM_ERRORS: dict[str, type[ProviderError]] = {
    "rate_limit_error": RateLimited, "rate_limit_exceeded": RateLimited, "overloaded_error": ProviderUnavailable,
    "api_error": ProviderUnavailable, "server_error": ProviderUnavailable, "timeout_error": ProviderUnavailable,
    "invalid_request_error": RequestRejected, "authentication_error": RequestRejected,
    "permission_error": RequestRejected, "not_found_error": RequestRejected, "request_too_large": RequestRejected,
    # Gemini's google.rpc status words
    "RESOURCE_EXHAUSTED": RateLimited, "INVALID_ARGUMENT": RequestRejected, "PERMISSION_DENIED": RequestRejected,
}


def stream_error(backend: str, body: dict[str, Any]) -> ProviderError:
    """The error an in-stream error event carries, as its HTTP status would have mapped it (an unknown
    type is taken for the provider's own failure: retryable)."""
    err = body.get("error")
    kind = str(err.get("type") or err.get("code") or "") if isinstance(err, dict) else ""
    message, code = _error_fields(body)
    detail = f"error in the stream: {kind or code or 'unknown'}" + (f": {message}" if message else "")
    cls = _STREAM_ERRORS.get(kind) or _STREAM_ERRORS.get(code) or ProviderUnavailable
    return cls(backend, detail, reason="stream_error" if cls is ProviderUnavailable else None)


def stream_cut(backend: str, missing: str) -> ProviderUnavailable:
    """The body ended cleanly without the provider's last event: the answer is incomplete."""
    return ProviderUnavailable(backend, f"the stream ended without {missing}", reason="connection")


class Pieces:
    """What a stream has said so far (its text, each tool call's pieces by index), so that its
    ``StreamEnd`` carries the whole answer."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, argument pieces...]

    def add(self, delta: TextDelta | ToolCallDelta) -> TextDelta | ToolCallDelta:
        if isinstance(delta, TextDelta):
            self.text.append(delta.text)
        else:
            call = self.calls.setdefault(delta.index, ["", ""])
            call[0] = delta.id or call[0]
            call[1] = delta.name or call[1]
            call.append(delta.arguments)
        return delta

    def whole_text(self) -> str:
        return "".join(self.text)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls in index order; a call that sent no arguments has ``{}``."""
        return tuple(ToolCall(c[0], c[1], "".join(c[2:]) or "{}") for _, c in sorted(self.calls.items()))


def tool_arguments(backend: str, i: int, j: int, call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the JSON object that Anthropic (``input``) and Gemini (``args``) take back;
    anything else is refused before sending, naming where it stands in the conversation."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise RequestRejected(backend, f"messages[{i}].tool_calls[{j}].arguments is not a JSON object: "
                                       f"{call.arguments[:100]!r}", reason="invalid_request")
    return arguments


def merged_turns(turns: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(role, parts) turns with adjacent turns of one role merged into one: Anthropic and Gemini want the
    roles to alternate, and a turn's tool results to go back together."""
    merged: list[tuple[str, list[dict[str, Any]]]] = []
    for role, parts in turns:
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(parts)
        else:
            merged.append((role, parts))
    return merged


async def get_ok(clients: HttpClients, url: str, headers: dict[str, str], timeout_s: float) -> bool:
    """Whether ``GET url`` answers 200 within ``timeout_s`` (readiness probes)."""
    try:
        async with asyncio.timeout(timeout_s):
            http = await clients.client()
            response = await http.get(url, headers=headers, timeout=timeout_s)
    except (TimeoutError, httpx.HTTPError):
        return False
    return response.status_code == 200


def dig(data: Any, *path: str | int) -> Any:
    """data[path0][path1]...; None when any step is missing or of the wrong type."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def member(data: dict[str, Any], key: str) -> dict[str, Any]:
    """data[key] when it is an object, else an empty one (a stream event's optional parts)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class HttpAdapter:
    """What every hosted-API adapter shares: its name, config, the shared clients and the base URL
    (``config.base_url``, else the provider's public endpoint ``default_base``)."""

    default_base: str

    def __init__(self, name: str, config: ProviderConfig, http: HttpClients) -> None:
        self.name = name
        self.config = config
        self._http = http
        self._base = (config.base_url or self.default_base).rstrip("/")

    async def ping(self) -> bool:
        """No probe endpoint that costs nothing and needs no model: reachable until a call says otherwise."""
        return True

    async def aclose(self) -> None:
        """The shared clients belong to whoever made the ``HttpClients``, who closes them."""

    def parse_choice(self, text: str) -> str:
        """The label in a structured-choice answer, ``{"intent": label}``."""
        return parse_choice_json(self.name, text)

    def completion(self, request: ChatRequest, text: str, usage: Usage | None, *, model: str,
                   finish_reason: Any, raw: dict[str, Any], tool_calls: tuple[ToolCall, ...] = (),
                   finish: Finish | None = None) -> Completion:
        """The answer: a structured choice's label checked against the choices, and the usage the
        provider reported, else an estimate."""
        if request.choices is not None:
            text = checked_choice(self.name, self.parse_choice(text), request.choices)
        return Completion(text=text, usage=usage or estimated_usage(request), model=model,
                          finish_reason=finish_reason, raw=raw, tool_calls=tool_calls, finish=finish)

    def streamable(self, request: ChatRequest) -> None:
        """A structured choice is not streamed: its answer is the label parsed from the whole text, so a
        caller that needs one calls ``complete``. A ``json_schema`` answer streams as its JSON text."""
        if request.choices is not None:
            raise RequestRejected(self.name, "a structured choice (choices) is not streamed: use complete()",
                                  reason="unsupported")
