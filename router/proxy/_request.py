"""A proxied chat request, parsed from either wire format, and the checks both parsers share.

Every refusal is a ``BadChatRequest`` whose ``param`` is the field's dotted path (``messages.2.content``)
and whose message starts with that path and shows the value given, cut to a readable length. One
exception on purpose: an unknown top-level OpenAI field is refused in OpenAI's own words ("Unrecognized
request argument supplied: X"), which agents and their tests already match on; its ``param`` is still set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import BadChatRequest, SessionsFull, StateUnavailable
from router.providers._base import ChatRequest, Tool

# OpenAI's rule for function names; Anthropic's is the same set of characters. A name that passes here
# is accepted by every upstream the chain may pick.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# A value longer than this is cut in a message: an error names the value, it does not echo a prompt.
_SHOWN_CHARS = 80
# Neither API documents a default other than 1.0; an agent that sends none expects the model's usual
# sampling, not the greedy 0.0 the router's own classification calls use.
DEFAULT_TEMPERATURE = 1.0
# A 500's whole message: an unexpected error's text may name internals (paths, hosts, code).
INTERNAL_MESSAGE = "the router failed to answer this request (an internal error; see its logs)"


@dataclass(frozen=True)
class WireLimits:
    """What a proxied request may carry. ``max_text_chars``: the last user message's length limit."""

    max_text_chars: int
    max_messages: int = 256
    max_tools: int = 128
    max_output_tokens: int = 200_000


@dataclass(frozen=True)
class ProxyRequest:
    """One chat request, whichever API it came through.

    ``request.system``: the system (and developer) parts joined with a blank line, "" when there are none;
    ``request.output_cap``: the client's max_tokens (None when it gave none); ``request.query``: the last
    user text. ``user``: OpenAI's ``user``, Anthropic's ``metadata.user_id``. ``user_texts``: the text of
    each user turn, oldest first (tool results are not user turns). ``include_usage``: OpenAI's
    ``stream_options.include_usage``; always True for Anthropic, whose stream always carries usage.
    """

    api: Literal["openai", "anthropic"]
    model: str
    request: ChatRequest
    stream: bool
    include_usage: bool
    user: str | None
    user_texts: tuple[str, ...]


def shown(value: Any) -> str:
    """``repr`` of a value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def invalid(param: str, expected: str, value: Any, code: str = "invalid_type") -> BadChatRequest:
    return BadChatRequest(param, f"{param}: expected {expected}, got {shown(value)}", code)


def missing(param: str) -> BadChatRequest:
    return BadChatRequest(param, f"{param}: this field is required", "missing")


def unsupported(param: str, what: str, code: str = "unsupported") -> BadChatRequest:
    return BadChatRequest(param, f"{param}: {what}", code)


def required(body: dict[str, Any], key: str, path: str = "") -> Any:
    """``body[key]``; a missing key and an explicit null are both 'missing'."""
    value = body.get(key)
    if value is None:
        raise missing(join(path, key))
    return value


def need_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(param, "an object", value)
    return value


def need_str(value: Any, param: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(param, "a string", value)
    if non_empty and not value:
        raise BadChatRequest(param, f"{param}: must not be empty, got ''", "empty")
    return value


def need_kind(block: dict[str, Any], path: str) -> str:
    """A block's or part's ``type``: a string (a list or an object there must be a 400, not a lookup error)."""
    return need_str(required(block, "type", path), join(path, "type"))


def need_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(param, "true or false", value)
    return value


def need_int(value: Any, param: str, low: int, high: int) -> int:
    # bool is an int in Python; JSON's true is not a token count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(param, f"an integer from {low:,} to {high:,}", value)
    if not low <= value <= high:
        raise invalid(param, f"an integer from {low:,} to {high:,}", value, "invalid_value")
    return value


def need_number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(param, f"a number from {low:g} to {high:g}", value)
    if not low <= value <= high:
        raise invalid(param, f"a number from {low:g} to {high:g}", value, "invalid_value")
    return float(value)


def need_list(value: Any, param: str, *, most: int | None = None, limit_name: str = "",
              non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(param, "an array", value)
    if non_empty and not value:
        raise BadChatRequest(param, f"{param}: must not be empty, got []", "empty")
    if most is not None and len(value) > most:
        where = f" ({limit_name})" if limit_name else ""
        raise BadChatRequest(param, f"{param}: {len(value):,} items, over the limit of {most:,}{where}", "too_many")
    return value


def need_tool_name(value: Any, param: str) -> str:
    name = need_str(value, param)
    if not TOOL_NAME.match(name):
        raise invalid(param, "a name of 1 to 64 letters, digits, '_' or '-'", name, "invalid_value")
    return name


def optional_number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    return None if value is None else need_number(value, key, low, high)


def only(value: dict[str, Any], keys: Collection[str], path: str,
         extra: Callable[[str], BadChatRequest]) -> None:
    """Refuse a key not in ``keys``; ``extra(param)`` is the API's own wording for an unknown field."""
    for key in value:
        if key not in keys:
            raise extra(join(path, key))


def unique_tool_name(name: str, tools: Iterable[Tool], param: str) -> str:
    if any(t.name == name for t in tools):
        raise BadChatRequest(param, f"{param}: {name!r} names two tools", "duplicate")
    return name


def known_tool(name: str, tools: Iterable[Tool], param: str) -> str:
    """A tool choice's name: one of the request's tools."""
    if not any(t.name == name for t in tools):
        raise invalid(param, "the name of one of the request's tools", name, "invalid_value")
    return name


def checked_user_texts(turns: list[tuple[str, str]], limits: WireLimits) -> tuple[str, ...]:
    """The user texts, oldest first, after the rules on the last one (the one that is routed).

    ``turns``: (the path of its content, its text) for each user text turn.
    """
    if not turns:
        raise BadChatRequest("messages", "messages: there is no user message; the last user message is "
                                         "what the request is routed by", "no_user_message")
    param, last = turns[-1]
    if not last.strip():
        raise BadChatRequest(param, f"{param}: the last user message is empty (got {shown(last)})", "empty")
    if len(last) > limits.max_text_chars:
        raise BadChatRequest(param, f"{param}: the last user message has {len(last):,} characters, over the "
                                    f"limit of {limits.max_text_chars:,} (limits.max_text_chars)", "too_long")
    return tuple(text for _, text in turns)


# -- shared by both error mappers -------------------------------------------------------------------
def unavailable_message(exc: SessionsFull | StateUnavailable) -> str:
    """A 503's message: a state outage's detail (hosts, driver text) stays in the router's logs."""
    if isinstance(exc, SessionsFull):
        return str(exc)
    return (f"the router's shared state is unavailable; nothing was sent to a model; retry after "
            f"{max(1, math.ceil(exc.retry_after))}s")


def retry_after(exc: SessionsFull | StateUnavailable) -> dict[str, str]:
    """The ``Retry-After`` header (whole seconds, at least 1) both SDKs wait on before retrying a 503."""
    return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
