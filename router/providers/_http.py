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
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import httpx

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
from router.providers._base import ChatRequest, Completion, Usage, checked_choice, estimated_usage, parse_choice_json
from router.providers._config import ProviderConfig

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
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]] = (
            weakref.WeakKeyDictionary())

    async def client(self) -> httpx.AsyncClient:
        """The running loop's client; per-call timeouts go on each request."""
        loop = asyncio.get_running_loop()
        held = self._clients.get(loop)
        if held is not None and not held[0].is_closed:
            return held[0]
        client = httpx.AsyncClient(limits=self._limits)
        closer = _closed_with_the_loop(client)
        await closer.asend(None)  # started here: the loop now tracks it (the pair keeps it alive)
        self._clients[loop] = (client, closer)
        return client

    async def aopen(self) -> None:
        """Open the running loop's client now rather than on the first call."""
        await self.client()

    async def aclose(self) -> None:
        """Close the running loop's client (a client can only be closed on its own loop)."""
        held = self._clients.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()


async def _closed_with_the_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


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
    """POST ``body``; the whole exchange, connect to last byte, is bounded by ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            http = await clients.client()
            response = await http.post(url, json=body, headers=headers, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ProviderTimeout(backend, f"no answer within timeout_s={timeout_s:g}") from exc
    except httpx.TransportError as exc:
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
                   finish_reason: Any, raw: dict[str, Any]) -> Completion:
        """The answer: a structured choice's label checked against the choices, and the usage the
        provider reported, else an estimate."""
        if request.choices is not None:
            text = checked_choice(self.name, self.parse_choice(text), request.choices)
        return Completion(text=text, usage=usage or estimated_usage(request), model=model,
                          finish_reason=finish_reason, raw=raw)
