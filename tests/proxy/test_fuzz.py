"""Every field of a full valid request, at every depth, replaced by a value of the wrong shape: the parsers
answer each with a ``BadChatRequest`` naming a field (a 400), or accept it; nothing else escapes (a
``TypeError`` from hashing a list, say, would be a 500)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from router.errors import BadChatRequest
from router.proxy._anthropic_wire import parse_messages_request
from router.proxy._openai_wire import parse_chat_request
from router.proxy._request import ProxyRequest, WireLimits

LIMITS = WireLimits(max_text_chars=1000)
WRONG: list[Any] = [[], {}, 1, None, [{}], "x", True]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}

OPENAI = {
    "model": "auto", "temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 90,
    "stop": ["END"], "n": 1, "stream": True, "stream_options": {"include_usage": True}, "user": "u1",
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}},
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": SCHEMA,
                                                 "strict": False}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "messages": [
        {"role": "system", "content": "be terse"},
        {"role": "developer", "content": [{"type": "text", "text": "in French"}]},
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}], "name": "sam"},
        {"role": "assistant", "content": [{"type": "text", "text": "checking"}, {"type": "refusal", "refusal": "no"}],
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "18C"}]},
        {"role": "user", "content": "and Rome?"},
    ],
}
ANTHROPIC = {
    "model": "auto", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stream": True,
    "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "service_tier": "auto", "speed": "fast",
    "thinking": {"type": "enabled", "budget_tokens": 1024}, "cache_control": {"type": "ephemeral"},
    "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low"},
    "system": [{"type": "text", "text": "be terse", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "get_weather", "description": "d", "input_schema": SCHEMA, "type": "custom",
               "defer_loading": False, "input_examples": [{"city": "Paris"}], "allowed_callers": ["direct"]}],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": False,
             "content": [{"type": "text", "text": "18C"}]},
            {"type": "text", "text": "and Rome?"}]},
    ],
}


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """The path of every field and item under ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*path, key)
        yield from _paths(child, (*path, key))


def _replaced(body: dict[str, Any], path: tuple[str | int, ...], wrong: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = copy.deepcopy(wrong)
    return out


PARSERS: dict[str, tuple[dict[str, Any], Callable[[Any, WireLimits], ProxyRequest]]] = {
    "openai": (OPENAI, parse_chat_request), "anthropic": (ANTHROPIC, parse_messages_request)}


@pytest.mark.parametrize("api", list(PARSERS))
def test_the_full_request_is_valid(api: str) -> None:
    body, parse = PARSERS[api]
    assert parse(copy.deepcopy(body), LIMITS).request.query == "and Rome?"


@pytest.mark.parametrize("api", list(PARSERS))
def test_a_wrong_shape_anywhere_is_a_bad_request_naming_a_field(api: str) -> None:
    body, parse = PARSERS[api]
    paths = list(_paths(body))
    assert len(paths) > 60  # every depth is reached
    refused = 0
    for path in paths:
        for wrong in WRONG:
            try:
                parse(_replaced(body, path, wrong), LIMITS)
            except BadChatRequest as exc:
                assert exc.param, (path, wrong, str(exc))
                assert str(exc).startswith(exc.param) or exc.code == "unknown_parameter" or \
                    exc.code == "no_user_message", (path, wrong, str(exc))
                refused += 1
            # anything else (TypeError, KeyError, AttributeError...) fails the test with its path in the trace
    assert refused > len(paths)
