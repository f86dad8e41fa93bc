"""The boundary to the network: one POST, with httpx and HTTP errors translated into ProviderError.

Status codes map the same way for every provider: 429 is rate limiting (retryable, honouring
Retry-After) unless the body says the quota or spend limit is gone; 408, 409, 5xx and 529 are
retryable; any other 4xx is the request's own fault and is not retried. Keys travel in headers
only. A provider's error text may echo one back: every key read here is registered with
``router.redact``, and the text is masked before it is cut to length (``ProviderError`` masks
its message again), so no key reaches a trace, a log or an error body.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from typing import Any

import httpx

from router.errors import (
    BadResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
)
from router.redact import redact, register_secret

_RETRYABLE_4XX = {408, 409}
# Error codes that come with a 429 but will not clear by waiting.
_QUOTA_CODES = {"insufficient_quota", "enforced_spend_limit_reached", "billing_hard_limit_reached"}


def key_from_env(backend: str, env: str | None) -> str:
    """The API key from its environment variable, read per call so a rotated key is picked up.

    A missing key fails this provider's calls (not retryable), so a fallback on another provider
    still serves; the message names the variable, never a value.
    """
    key = os.environ.get(env) if env else None
    if not key:
        raise RequestRejected(backend, f"no API key: environment variable {env!r} (api_key_env) is not set",
                              reason="no_key")
    register_secret(key)
    return key


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
    http: httpx.AsyncClient, backend: str, url: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """POST ``body``; the whole exchange, connect to last byte, is bounded by ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
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
