"""Anthropic Messages on the wire: the request parsed, the answer rendered (a body or SSE events), errors.

Parsing follows ``POST /v1/messages``. Forwarded: ``model``, ``max_tokens`` (required), ``messages`` (user and
assistant turns: text, ``tool_use`` and ``tool_result`` blocks; text blocks are joined by a newline),
``system`` (a string or text blocks, joined by a blank line), ``tools`` (custom tools), ``tool_choice``,
``stop_sequences``, ``temperature`` (1.0 when not given, the documented default), ``top_p``, ``stream``,
``metadata.user_id`` (the session, when no header names one) and ``output_config.format`` (a JSON schema).

A user message's ``tool_result`` blocks become tool turns (``Message(role="tool")``, naming the call it
answers), then its text, if any, a user turn. ``is_error`` is accepted but not forwarded: a turn has no field
for it, and the result's own text says what failed. An assistant's ``thinking`` blocks are dropped.

Accepted and not forwarded: ``top_k``, ``thinking``, ``service_tier``, ``inference_geo``, ``speed``,
``cache_control`` (the upstream adapters place their own cache markers), ``cache_control`` on blocks and
tools, a tool's ``defer_loading`` and ``input_examples``, ``output_config.effort``,
``tool_choice.disable_parallel_tool_use``. Refused as ``unsupported``, saying why: ``container``,
``diagnostics``, ``user_profile_id``, ``workspace_id``, and a tool's ``allowed_callers`` without
``"direct"`` (the proxy runs no code execution; a list holding ``"direct"`` is accepted). Any other field
is refused as Anthropic refuses it: ``<field>: Extra inputs are not permitted``. Refused as unsupported:
image and document blocks (``unsupported_content``) and server tools (a ``type`` other than ``custom``).

Rendering: a tool call's ``arguments`` (JSON text) becomes the ``tool_use`` block's ``input``: ``{}`` when
empty, and ``{"_raw": <the text>}`` when it is not a JSON object, so the agent's own validation refuses it
and the model sees what it sent. A stream sends each call's arguments as one ``input_json_delta`` when its
block closes, after that same check: the SDK's accumulator parses every piece as JSON and would fail on
arguments that are not.
"""

from __future__ import annotations

import json
from typing import Any

from router.errors import (
    BadChatRequest,
    BudgetExceeded,
    InputError,
    ProviderError,
    SessionsFull,
    StateUnavailable,
)
from router.providers._base import (
    ChatRequest,
    Completion,
    Message,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from router.proxy._request import (
    DEFAULT_TEMPERATURE,
    INTERNAL_MESSAGE,
    ProxyRequest,
    WireLimits,
    checked_user_texts,
    invalid,
    known_tool,
    need_bool,
    need_int,
    need_kind,
    need_list,
    need_object,
    need_str,
    need_tool_name,
    only,
    optional_number,
    required,
    retry_after,
    shown,
    unavailable_message,
    unique_tool_name,
    unsupported,
)
from router.proxy._sse import new_id, sse

FORWARDED = frozenset({
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "stop_sequences", "temperature",
    "top_p", "metadata", "stream", "output_config",
})
IGNORED = frozenset({"top_k", "thinking", "service_tier", "cache_control", "inference_geo", "speed"})
# Fields the SDK sends that ask for what the proxy cannot do: refused, saying why, rather than dropped.
REFUSED = {
    "container": "containers are not supported: the proxy runs no code execution or server tools",
    "diagnostics": "diagnostics are not supported: the proxy forwards to models of several providers",
    "user_profile_id": "user profiles are Anthropic account settings the proxy cannot apply; name the "
                       "session with metadata.user_id",
    "workspace_id": "workspaces are Anthropic account settings the proxy cannot apply",
}
_TOOL_KEYS = {"name", "description", "input_schema", "type", "cache_control", "strict", "eager_input_streaming",
              "defer_loading", "input_examples", "allowed_callers"}
_MEDIA_BLOCKS = {"image", "document", "search_result", "container_upload"}
_DROPPED_BLOCKS = {"thinking", "redacted_thinking"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _extra(param: str) -> BadChatRequest:
    return BadChatRequest(param, f"{param}: Extra inputs are not permitted", "unknown_parameter")


def _only(value: dict[str, Any], keys: set[str] | frozenset[str], path: str) -> None:
    only(value, keys, path, _extra)


# -- parsing ----------------------------------------------------------------------------------------
def parse_messages_request(body: Any, limits: WireLimits) -> ProxyRequest:
    """The request of ``POST /v1/messages``; ``BadChatRequest`` names the first field it refuses."""
    if not isinstance(body, dict):
        raise BadChatRequest(None, f"the request body must be a JSON object, got {shown(body)}", "invalid_type")
    for key in body:
        if key in REFUSED:
            raise unsupported(key, REFUSED[key])
    _only(body, FORWARDED | IGNORED, "")
    model = need_str(required(body, "model"), "model", non_empty=True)
    cap = need_int(required(body, "max_tokens"), "max_tokens", 1, limits.max_output_tokens)
    items = need_list(required(body, "messages"), "messages", most=limits.max_messages,
                      limit_name="max_messages", non_empty=True)
    messages, turns = _messages(items)
    user_texts = checked_user_texts(turns, limits)
    tools = _tools(body.get("tools"), limits)
    temperature = optional_number(body, "temperature", 0.0, 1.0)
    _check_ignored(body)
    request = ChatRequest(
        system=_system(body.get("system")),
        messages=messages,
        json_schema=_output_schema(body.get("output_config")),
        temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
        query=user_texts[-1],
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        stop=_stop_sequences(body.get("stop_sequences")),
        top_p=optional_number(body, "top_p", 0.0, 1.0),
        output_cap=cap,
    )
    stream = body.get("stream")
    return ProxyRequest(api="anthropic", model=model, request=request,
                        stream=False if stream is None else need_bool(stream, "stream"),
                        include_usage=True, user=_user(body.get("metadata")), user_texts=user_texts)


def _messages(items: list[Any]) -> tuple[tuple[Message, ...], list[tuple[str, str]]]:
    """The turns, and (content path, text) of each user text turn."""
    messages: list[Message] = []
    turns: list[tuple[str, str]] = []
    # A tool result names its call by id only; Gemini needs the function's name too, so it is looked up.
    call_names: dict[str, str] = {}
    for i, item in enumerate(items):
        path = f"messages.{i}"
        message = need_object(item, path)
        _only(message, {"role", "content"}, path)
        role = required(message, "role", path)
        if role not in ("user", "assistant"):
            raise invalid(f"{path}.role", "'user' or 'assistant'", role, "invalid_value")
        content = required(message, "content", path)
        where = f"{path}.content"
        if isinstance(content, str):
            messages.append(Message(role, content))
            if role == "user":
                turns.append((where, content))
            continue
        blocks = need_list(content, where)
        if role == "assistant":
            messages.append(_assistant(blocks, where, call_names))
            continue
        results, texts = _user_blocks(blocks, where, call_names)
        messages.extend(results)
        if texts or not results:
            text = "\n".join(texts)
            messages.append(Message("user", text))
            turns.append((where, text))
    return tuple(messages), turns


def _block(item: Any, path: str) -> tuple[dict[str, Any], str]:
    block = need_object(item, path)
    kind = need_kind(block, path)
    if kind in _MEDIA_BLOCKS:
        raise unsupported(f"{path}.type", f"{kind!r} blocks are not supported: the proxy forwards text only",
                          "unsupported_content")
    return block, kind


def _user_blocks(blocks: list[Any], path: str, call_names: dict[str, str]) -> tuple[list[Message], list[str]]:
    results: list[Message] = []
    texts: list[str] = []
    for j, item in enumerate(blocks):
        where = f"{path}.{j}"
        block, kind = _block(item, where)
        if kind == "text":
            texts.append(need_str(required(block, "text", where), f"{where}.text"))
        elif kind == "tool_result":
            call_id = need_str(required(block, "tool_use_id", where), f"{where}.tool_use_id", non_empty=True)
            if block.get("is_error") is not None:
                need_bool(block["is_error"], f"{where}.is_error")
            results.append(Message("tool", _result_text(block.get("content"), f"{where}.content"),
                                   tool_call_id=call_id, name=call_names.get(call_id)))
        else:
            raise invalid(f"{where}.type", "'text' or 'tool_result' in a user message", kind, "invalid_value")
    return results, texts


def _result_text(value: Any, path: str) -> str:
    """A tool result's content: absent, a string, or text blocks (joined by a newline)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "\n".join(_texts(need_list(value, path), path))


def _texts(items: list[Any], path: str) -> list[str]:
    """The texts of text blocks (a system prompt's, a tool result's); any other block is refused."""
    texts = []
    for j, item in enumerate(items):
        block, kind = _block(item, f"{path}.{j}")
        if kind != "text":
            raise invalid(f"{path}.{j}.type", "'text'", kind, "invalid_value")
        texts.append(need_str(required(block, "text", f"{path}.{j}"), f"{path}.{j}.text"))
    return texts


def _assistant(blocks: list[Any], path: str, call_names: dict[str, str]) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, item in enumerate(blocks):
        where = f"{path}.{j}"
        block, kind = _block(item, where)
        if kind == "text":
            texts.append(need_str(required(block, "text", where), f"{where}.text"))
        elif kind == "tool_use":
            arguments = need_object(required(block, "input", where), f"{where}.input")
            calls.append(ToolCall(
                id=need_str(required(block, "id", where), f"{where}.id", non_empty=True),
                name=need_tool_name(required(block, "name", where), f"{where}.name"),
                arguments=json.dumps(arguments, ensure_ascii=False),
            ))
        elif kind not in _DROPPED_BLOCKS:  # the model's own reasoning is not forwarded to another model
            raise invalid(f"{where}.type", "'text' or 'tool_use' in an assistant message", kind, "invalid_value")
    call_names.update((call.id, call.name) for call in calls)
    return Message("assistant", "\n".join(texts), tool_calls=tuple(calls))


def _system(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid("system", "a string or an array of text blocks", value)
    return "\n\n".join(_texts(value, "system"))


def _tools(value: Any, limits: WireLimits) -> tuple[Tool, ...]:
    if value is None:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(need_list(value, "tools", most=limits.max_tools, limit_name="max_tools")):
        path = f"tools.{i}"
        tool = need_object(item, path)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            raise unsupported(f"{path}.type", f"server tools are not supported (got type {shown(kind)}); "
                                              "define the tool with a name and an input_schema")
        _only(tool, _TOOL_KEYS, path)
        name = unique_tool_name(need_tool_name(required(tool, "name", path), f"{path}.name"), tools, f"{path}.name")
        _check_tool_hints(tool, path)
        description = tool.get("description")
        tools.append(Tool(
            name=name,
            description="" if description is None else need_str(description, f"{path}.description"),
            parameters=need_object(required(tool, "input_schema", path), f"{path}.input_schema"),
        ))
    return tuple(tools)


def _check_tool_hints(tool: dict[str, Any], path: str) -> None:
    """A tool's accepted-not-forwarded keys, still checked; ``allowed_callers`` must let the model call it."""
    if tool.get("defer_loading") is not None:
        need_bool(tool["defer_loading"], f"{path}.defer_loading")
    if tool.get("input_examples") is not None:
        for j, example in enumerate(need_list(tool["input_examples"], f"{path}.input_examples")):
            need_object(example, f"{path}.input_examples.{j}")
    if tool.get("allowed_callers") is not None:
        callers = [need_str(c, f"{path}.allowed_callers.{j}")
                   for j, c in enumerate(need_list(tool["allowed_callers"], f"{path}.allowed_callers"))]
        if "direct" not in callers:
            raise unsupported(f"{path}.allowed_callers", "only the model calls tools here (the proxy runs no code "
                              f"execution): the list must hold 'direct', got {shown(callers)}")


def _tool_choice(value: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if value is None:
        return None
    choice = need_object(value, "tool_choice")
    _only(choice, {"type", "name", "disable_parallel_tool_use"}, "tool_choice")
    kind = need_str(required(choice, "type", "tool_choice"), "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is not None:
        need_bool(choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use")
    if kind == "tool":
        name = need_str(required(choice, "name", "tool_choice"), "tool_choice.name")
        return ToolChoice("tool", known_tool(name, tools, "tool_choice.name"))
    modes = {"auto": ToolChoice("auto"), "any": ToolChoice("required"), "none": ToolChoice("none")}
    if kind not in modes:
        raise invalid("tool_choice.type", "'auto', 'any', 'tool' or 'none'", kind, "invalid_value")
    if not tools:
        if kind == "any":
            raise BadChatRequest("tool_choice", "tool_choice: 'any' needs tools; the request has none",
                                 "invalid_value")
        return None  # auto or none without tools: there is nothing to choose
    return modes[kind]


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(need_str(s, f"stop_sequences.{i}", non_empty=True)
                 for i, s in enumerate(need_list(value, "stop_sequences")))


def _check_ignored(body: dict[str, Any]) -> None:
    """The accepted-not-forwarded fields still have to be well formed, as Anthropic checks them."""
    if body.get("top_k") is not None:
        need_int(body["top_k"], "top_k", 0, 1_000_000)
    if body.get("thinking") is not None:
        need_object(body["thinking"], "thinking")
    for key in ("service_tier", "inference_geo", "speed"):
        if body.get(key) is not None:
            need_str(body[key], key)


def _user(value: Any) -> str | None:
    if value is None:
        return None
    metadata = need_object(value, "metadata")
    _only(metadata, {"user_id"}, "metadata")
    user = metadata.get("user_id")
    return None if user is None else need_str(user, "metadata.user_id")


def _output_schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    config = need_object(value, "output_config")
    _only(config, {"format", "effort"}, "output_config")
    if config.get("format") is None:
        return None
    form = need_object(config["format"], "output_config.format")
    _only(form, {"type", "schema"}, "output_config.format")
    kind = required(form, "type", "output_config.format")
    if kind != "json_schema":
        raise invalid("output_config.format.type", "'json_schema'", kind, "invalid_value")
    return need_object(required(form, "schema", "output_config.format"), "output_config.format.schema")


# -- rendering --------------------------------------------------------------------------------------
def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` are the uncached ones; cache reads and writes are counted apart."""
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens}


def stop_reason(completion: Completion) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)``. An Anthropic upstream's own ``stop_sequence`` is kept; other APIs say
    only "stop", so a matched stop sequence reads as ``end_turn``."""
    if completion.finish_reason == "stop_sequence":
        matched = completion.raw.get("stop_sequence")
        return "stop_sequence", matched if isinstance(matched, str) else None
    if completion.finish is not None:
        return _STOP_REASONS[completion.finish], None
    return ("tool_use" if completion.tool_calls else "end_turn"), None


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as a ``tool_use`` input: ``{}`` when empty, ``{"_raw": text}`` when not an object."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _tool_id(call_id: str | None) -> str:
    return call_id if call_id else new_id("toolu_")


def message_body(completion: Completion, *, model: str, id: str) -> dict[str, Any]:
    """A ``message`` object: a text block (when there is text), then a ``tool_use`` block per call."""
    content: list[dict[str, Any]] = []
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    content.extend({"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": tool_input(c.arguments)}
                   for c in completion.tool_calls)
    reason, sequence = stop_reason(completion)
    return {"id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": usage_body(completion.usage)}


class AnthropicStream:
    """Renders our stream events as Anthropic's SSE events: ``start`` (message_start, ping), ``event`` per delta
    (a content block is opened when the kind of delta changes, and the open one closed), ``end``
    (content_block_stop, message_delta, message_stop) or ``error``.

    The usage is known only at the end: message_start carries zeros and message_delta the whole usage. The
    SDK's stream accumulator overwrites input, cache-read and cache-write tokens from message_delta when they
    are present, so its final message reports the real counts. A tool call's arguments are buffered and sent
    as one ``input_json_delta`` when its block closes (see the module docstring). A piece of a tool call whose
    block was already closed (another call or text came between) cannot be sent: a block cannot be reopened.
    No upstream we translate interleaves calls.
    """

    def __init__(self, *, id: str, model: str) -> None:
        self.id, self.model = id, model
        self._blocks = 0  # content blocks opened so far: the next block's index
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", our delta's index)
        self._tools: set[int] = set()  # our delta indexes that have had a block
        self._arguments: list[str] = []  # the open tool block's argument pieces
        self._text_sent = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return (sse({"type": "message_start", "message": message}, "message_start")
                + sse({"type": "ping"}, "ping"))

    def _begin(self, kind: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = kind
        out += sse({"type": "content_block_start", "index": self._blocks, "content_block": block},
                   "content_block_start")
        return out

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open[0] == "tool":
            arguments = json.dumps(tool_input("".join(self._arguments)), separators=(",", ":"))
            out = self._delta({"type": "input_json_delta", "partial_json": arguments})
            self._arguments = []
        self._open = None
        self._blocks += 1
        return out + sse({"type": "content_block_stop", "index": self._blocks - 1}, "content_block_stop")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": self._blocks, "delta": delta}, "content_block_delta")

    def event(self, event: TextDelta | ToolCallDelta) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            self._text_sent = True
            out = b"" if self._open == ("text", -1) else self._begin(("text", -1), {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": event.text})
        out = b""
        if self._open != ("tool", event.index):
            if event.index in self._tools:
                return b""  # its block is closed (see the class docstring)
            self._tools.add(event.index)
            out = self._begin(("tool", event.index), {"type": "tool_use", "id": _tool_id(event.id),
                                                      "name": event.name or "", "input": {}})
        self._arguments.append(event.arguments)
        return out

    def end(self, completion: Completion, extra: dict[str, Any] | None = None) -> bytes:
        """Closes the open block and ends the message with its stop reason and whole usage. A part the stream
        never carried (a backend that sent its text, or its calls, only in its ``StreamEnd``) is sent first,
        from the completion, as ``OpenAIStream`` does.

        ``extra`` (e.g. ``{"x_router": {...}}``) is merged into the message_delta event: the SDK keeps unknown
        fields of an event and its accumulator ignores them.
        """
        out = b""
        if completion.text and not self._text_sent:
            out += self.event(TextDelta(completion.text))
        if not self._tools:
            for i, call in enumerate(completion.tool_calls):
                out += self.event(ToolCallDelta(i, call.id, call.name, call.arguments))
        out += self._close()
        reason, sequence = stop_reason(completion)
        out += sse({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage_body(completion.usage), **(extra or {})}, "message_delta")
        return out + sse({"type": "message_stop"}, "message_stop")

    def error(self, type: str, message: str) -> bytes:
        """An error after the stream started: the ``error`` event the Anthropic SDK raises on."""
        return sse(error_body(type, message), "error")


# -- errors -----------------------------------------------------------------------------------------
def error_body(type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


_NO_RETRY = {"x-should-retry": "false"}


def error_for(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` of an exception, in Anthropic's error format.

    400 invalid_request_error, 404 not_found_error (an unknown model), 429 rate_limit_error (a budget),
    502 api_error (the upstream failed after the chain's retries and fallbacks), 503 overloaded_error
    (sessions full, shared state down; with ``Retry-After``), 500 api_error (anything else, saying nothing
    of the router's internals). 429 and 502 carry ``x-should-retry: false``: the SDK would retry them, but a
    budget does not refill in seconds and the chain has already retried.
    """
    if isinstance(exc, BadChatRequest):
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return exc.status, error_body(kind, str(exc)), {}
    if isinstance(exc, InputError):
        return 400, error_body("invalid_request_error", str(exc)), {}
    if isinstance(exc, BudgetExceeded):
        return 429, error_body("rate_limit_error", str(exc)), dict(_NO_RETRY)
    if isinstance(exc, SessionsFull | StateUnavailable):
        return 503, error_body("overloaded_error", unavailable_message(exc)), retry_after(exc)
    if isinstance(exc, ProviderError):
        return 502, error_body("api_error", str(exc)), dict(_NO_RETRY)
    return 500, error_body("api_error", INTERNAL_MESSAGE), {}
