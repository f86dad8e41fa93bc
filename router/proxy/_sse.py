"""Server-Sent Events framing and response ids, shared by the OpenAI and Anthropic renderers."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

import orjson

_ALPHABET = string.ascii_letters + string.digits


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One event: an optional ``event:`` line, one ``data:`` line, a blank line.

    JSON is written on one line (``json.dumps`` escapes newlines inside strings), so one ``data:``
    line always carries the whole payload. ASCII only: a lone surrogate in a model's text (which UTF-8
    cannot encode) goes out as its ``\\u`` escape rather than failing the stream.
    """
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}\n\n".encode()


def json_body(body: dict[str, Any]) -> bytes:
    """A response body as UTF-8 JSON; a lone surrogate in a string (a model's text can hold one, and UTF-8
    cannot encode it) is replaced by U+FFFD rather than failing the answer."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError is one
        return orjson.dumps(_scrubbed(body))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        # Through UTF-16: a surrogate pair held as two code points joins; a lone one becomes U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def new_id(prefix: str, size: int = 24) -> str:
    """An id in the providers' style (``chatcmpl-…``, ``call_…``, ``msg_…``, ``toolu_…``): prefix + base62."""
    # One draw of random bytes, mapped to the alphabet (24 secrets.choice calls cost ~30 µs a response).
    return prefix + "".join(_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(size))
