"""OpenAI chat completions on the wire: the request parsed, the answer rendered (a body or SSE chunks), errors.

Parsing follows ``POST /v1/chat/completions``. Forwarded: ``model``, ``messages`` (roles system, developer,
user, assistant, tool; text content as a string or text parts, joined by a newline), ``tools``,
``tool_choice``, ``max_completion_tokens`` / ``max_tokens`` (the former wins when both are given),
``temperature`` (1.0 when not given: the documented default, not the router's own 0.0), ``top_p``,
``stop``, ``response_format`` (``json_schema``), ``stream``, ``stream_options.include_usage``, ``user``
(the session, when no header names one) and ``n`` (1 only).

Accepted and not forwarded (no upstream of every route can honour them, and refusing them would break
agents that always send them): ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``,
``logprobs``, ``top_logprobs``, ``parallel_tool_calls``, ``metadata``, ``store``, ``service_tier``,
``reasoning_effort``, ``modalities``, ``prediction``, ``safety_identifier``, ``prompt_cache_key``,
``verbosity``, ``prompt_cache_retention``, ``prompt_cache_options``. Refused as ``unsupported``, saying
why: ``moderation``, ``web_search_options``, ``audio``, ``functions`` and ``function_call`` (use ``tools``
and ``tool_choice``). Any other field is refused as OpenAI refuses it: 400 ``unknown_parameter``.

Refused as unsupported: image, audio and file content parts (``unsupported_content``), the legacy
``function`` role and an assistant's ``function_call``, custom tools, ``response_format`` ``json_object``
(use ``json_schema``), ``n`` above 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from router.errors import (
    BadChatRequest,
    BudgetExceeded,
    FallbacksExhausted,
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
    missing,
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
    "model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "stop", "n", "stream", "stream_options", "response_format", "user",
})
IGNORED = frozenset({
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "parallel_tool_calls", "metadata", "store", "service_tier", "reasoning_effort", "modalities", "prediction",
    "safety_identifier", "prompt_cache_key", "verbosity", "prompt_cache_retention", "prompt_cache_options",
})
# Fields the SDK sends that ask for something the proxy cannot do: refused, saying why, rather than dropped.
REFUSED = {
    "moderation": "moderation is not supported: the proxy forwards to models of several providers, none "
                  "of which runs OpenAI's moderation",
    "web_search_options": "web search is not supported: the proxy forwards plain chat to the route's models",
    "audio": "audio output is not supported: the proxy forwards text only",
    "functions": "the legacy functions are not supported; use tools",
    "function_call": "the legacy function_call is not supported; use tool_choice (with tools)",
}
# The keys each role's message may carry (OpenAI refuses others too).
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "function_call", "audio"},
    "tool": {"role", "content", "tool_call_id"},
}
_CHOICES = {"auto": ToolChoice("auto"), "none": ToolChoice("none"), "required": ToolChoice("required")}
_MEDIA_PARTS = {"image_url", "input_audio", "file"}
_MAX_STOP = 4
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


# -- parsing ----------------------------------------------------------------------------------------
def parse_chat_request(body: Any, limits: WireLimits) -> ProxyRequest:
    """The request of ``POST /v1/chat/completions``; ``BadChatRequest`` names the first field it refuses."""
    if not isinstance(body, dict):
        raise BadChatRequest(None, f"the request body must be a JSON object, got {shown(body)}", "invalid_type")
    for key in body:
        if key in REFUSED:
            raise unsupported(key, REFUSED[key])
        if key not in FORWARDED and key not in IGNORED:
            # OpenAI's own wording, on purpose (see router/proxy/_request.py)
            raise BadChatRequest(key, f"Unrecognized request argument supplied: {key}", "unknown_parameter")
    model = need_str(required(body, "model"), "model", non_empty=True)
    items = need_list(required(body, "messages"), "messages", most=limits.max_messages,
                      limit_name="max_messages", non_empty=True)
    system, messages, turns = _messages(items)
    user_texts = checked_user_texts(turns, limits)
    tools = _tools(body.get("tools"), limits)
    schema, schema_name = _response_format(body.get("response_format"))
    stream = need_bool(body["stream"], "stream") if body.get("stream") is not None else False
    temperature = optional_number(body, "temperature", 0.0, 2.0)
    request = ChatRequest(
        system=system,
        messages=messages,
        json_schema=schema,
        schema_name=schema_name,
        temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
        query=user_texts[-1],
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        stop=_stop(body.get("stop")),
        top_p=optional_number(body, "top_p", 0.0, 1.0),
        output_cap=_output_cap(body, limits),
    )
    _check_n(body.get("n"))
    user = body.get("user")
    return ProxyRequest(api="openai", model=model, request=request, stream=stream,
                        include_usage=_include_usage(body.get("stream_options")),
                        user=None if user is None else need_str(user, "user"), user_texts=user_texts)


def _messages(items: list[Any]) -> tuple[str, tuple[Message, ...], list[tuple[str, str]]]:
    """The system text, the other turns, and (content path, text) of each user turn."""
    system: list[str] = []
    messages: list[Message] = []
    turns: list[tuple[str, str]] = []
    # A tool result names its call by id only; Gemini needs the function's name too, so it is looked up.
    call_names: dict[str, str] = {}
    for i, item in enumerate(items):
        path = f"messages.{i}"
        message = need_object(item, path)
        role = required(message, "role", path)
        if role == "function":
            raise unsupported(f"{path}.role", "the legacy 'function' role is not supported; send a tool result "
                                              "as a 'tool' message with its tool_call_id")
        if not isinstance(role, str) or role not in _MESSAGE_KEYS:
            raise invalid(f"{path}.role", "one of 'system', 'developer', 'user', 'assistant', 'tool'", role,
                          "invalid_value")
        for key in message:
            if key not in _MESSAGE_KEYS[role]:
                raise BadChatRequest(f"{path}.{key}", f"Unrecognized argument supplied in a {role} message: "
                                                      f"{path}.{key}", "unknown_parameter")
        content = f"{path}.content"
        if role in ("system", "developer"):
            system.append(_text(required(message, "content", path), content))
        elif role == "user":
            text = _text(required(message, "content", path), content)
            messages.append(Message("user", text))
            turns.append((content, text))
        elif role == "assistant":
            messages.append(_assistant(message, path, call_names))
        else:
            call_id = need_str(required(message, "tool_call_id", path), f"{path}.tool_call_id", non_empty=True)
            messages.append(Message("tool", _text(required(message, "content", path), content),
                                    tool_call_id=call_id, name=call_names.get(call_id)))
    return "\n\n".join(system), tuple(messages), turns


def _assistant(message: dict[str, Any], path: str, call_names: dict[str, str]) -> Message:
    for key, what in (("function_call", "the legacy function_call is not supported; use tool_calls"),
                      ("audio", "audio answers are not supported: the proxy forwards text only")):
        if message.get(key) is not None:
            raise unsupported(f"{path}.{key}", what)
    calls = _tool_calls(message.get("tool_calls"), f"{path}.tool_calls")
    content, refusal = message.get("content"), message.get("refusal")
    if content is not None:
        text = _text(content, f"{path}.content", assistant=True)
    elif refusal is not None:
        text = need_str(refusal, f"{path}.refusal")
    elif calls:
        text = ""
    else:
        raise BadChatRequest(f"{path}.content", f"{path}.content: an assistant message needs content when it "
                                                "has no tool_calls", "missing")
    call_names.update((call.id, call.name) for call in calls)
    return Message("assistant", text, tool_calls=calls)


def _text(value: Any, path: str, *, assistant: bool = False) -> str:
    """A message's text: a string, or its text parts joined by a newline."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(path, "a string or an array of text parts", value)
    texts = []
    for j, item in enumerate(value):
        part = need_object(item, f"{path}.{j}")
        kind = need_kind(part, f"{path}.{j}")
        if kind == "text":
            texts.append(need_str(required(part, "text", f"{path}.{j}"), f"{path}.{j}.text"))
        elif kind == "refusal" and assistant:
            texts.append(need_str(required(part, "refusal", f"{path}.{j}"), f"{path}.{j}.refusal"))
        elif kind in _MEDIA_PARTS:
            raise unsupported(f"{path}.{j}.type", f"{kind!r} content parts are not supported: the proxy forwards "
                                                  "text only", "unsupported_content")
        else:
            raise invalid(f"{path}.{j}.type", "'text'" + (" or 'refusal'" if assistant else ""), kind,
                          "invalid_value")
    return "\n".join(texts)


def _tool_calls(value: Any, path: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    calls = []
    for j, item in enumerate(need_list(value, path)):
        where = f"{path}.{j}"
        call = need_object(item, where)
        kind = required(call, "type", where)
        if kind != "function":
            raise unsupported(f"{where}.type", f"only 'function' tool calls are supported, got {shown(kind)}")
        function = need_object(required(call, "function", where), f"{where}.function")
        calls.append(ToolCall(
            id=need_str(required(call, "id", where), f"{where}.id", non_empty=True),
            name=need_tool_name(required(function, "name", f"{where}.function"), f"{where}.function.name"),
            arguments=need_str(required(function, "arguments", f"{where}.function"), f"{where}.function.arguments"),
        ))
    return tuple(calls)


def _tools(value: Any, limits: WireLimits) -> tuple[Tool, ...]:
    if value is None:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(need_list(value, "tools", most=limits.max_tools, limit_name="max_tools")):
        path = f"tools.{i}"
        tool = need_object(item, path)
        kind = required(tool, "type", path)
        if kind != "function":
            raise unsupported(f"{path}.type", f"only 'function' tools are supported, got {shown(kind)}")
        only(tool, {"type", "function"}, path, _unrecognized)
        function = need_object(required(tool, "function", path), f"{path}.function")
        only(function, {"name", "description", "parameters", "strict"}, f"{path}.function", _unrecognized)
        name = unique_tool_name(need_tool_name(required(function, "name", f"{path}.function"),
                                               f"{path}.function.name"), tools, f"{path}.function.name")
        description = function.get("description")
        parameters = function.get("parameters")
        if function.get("strict") is not None:
            need_bool(function["strict"], f"{path}.function.strict")
        tools.append(Tool(
            name=name,
            description="" if description is None else need_str(description, f"{path}.function.description"),
            parameters=dict(_NO_PARAMETERS) if parameters is None
            else need_object(parameters, f"{path}.function.parameters"),
        ))
    return tuple(tools)


def _unrecognized(param: str) -> BadChatRequest:
    return BadChatRequest(param, f"Unrecognized argument supplied: {param}", "unknown_parameter")


def _tool_choice(value: Any, tools: tuple[Tool, ...]) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        choice = _CHOICES.get(value)
        if choice is None:
            raise invalid("tool_choice", "'auto', 'none', 'required' or a named function", value, "invalid_value")
    else:
        named = need_object(value, "tool_choice")
        kind = required(named, "type", "tool_choice")
        if kind != "function":
            raise unsupported("tool_choice.type", f"only a named 'function' choice is supported, got {shown(kind)}")
        function = need_object(required(named, "function", "tool_choice"), "tool_choice.function")
        name = need_str(required(function, "name", "tool_choice.function"), "tool_choice.function.name")
        choice = ToolChoice("tool", known_tool(name, tools, "tool_choice.function.name"))
    if not tools:
        if choice.mode == "required":
            raise BadChatRequest("tool_choice", "tool_choice: 'required' needs tools; the request has none",
                                 "invalid_value")
        return None  # auto or none without tools: there is nothing to choose
    return choice


def _output_cap(body: dict[str, Any], limits: WireLimits) -> int | None:
    caps = [need_int(body[key], key, 1, limits.max_output_tokens)
            for key in ("max_completion_tokens", "max_tokens") if body.get(key) is not None]
    return caps[0] if caps else None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (need_str(value, "stop", non_empty=True),)
    expected = f"a string or an array of up to {_MAX_STOP} strings"
    if not isinstance(value, list):
        raise invalid("stop", expected, value)
    if len(value) > _MAX_STOP:
        raise invalid("stop", expected, value, "too_many")
    return tuple(need_str(s, f"stop.{i}", non_empty=True) for i, s in enumerate(value))


def _check_n(value: Any) -> None:
    if value is not None and need_int(value, "n", 1, 128) != 1:
        raise unsupported("n", f"only one choice is served (n=1), got {value}")


def _include_usage(value: Any) -> bool:
    if value is None:
        return False
    options = need_object(value, "stream_options")
    only(options, {"include_usage", "include_obfuscation"}, "stream_options", _unrecognized)
    usage = options.get("include_usage")
    return False if usage is None else need_bool(usage, "stream_options.include_usage")


def _response_format(value: Any) -> tuple[dict[str, Any] | None, str]:
    """``(json_schema, schema_name)``; (None, "result") for plain text."""
    if value is None:
        return None, "result"
    form = need_object(value, "response_format")
    kind = required(form, "type", "response_format")
    if kind == "text":
        return None, "result"
    if kind == "json_object":
        raise unsupported("response_format.type", "'json_object' is not supported; use {'type': 'json_schema', "
                                                  "'json_schema': {'name': ..., 'schema': {...}}}")
    if kind != "json_schema":
        raise invalid("response_format.type", "'text' or 'json_schema'", kind, "invalid_value")
    spec = need_object(required(form, "json_schema", "response_format"), "response_format.json_schema")
    only(spec, {"name", "schema", "strict", "description"}, "response_format.json_schema", _unrecognized)
    name = need_tool_name(required(spec, "name", "response_format.json_schema"), "response_format.json_schema.name")
    schema = spec.get("schema")
    if spec.get("strict") is not None:
        need_bool(spec["strict"], "response_format.json_schema.strict")
    if spec.get("description") is not None:
        need_str(spec["description"], "response_format.json_schema.description")
    if schema is None:
        raise missing("response_format.json_schema.schema")
    return need_object(schema, "response_format.json_schema.schema"), name


# -- rendering --------------------------------------------------------------------------------------
def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: prompt_tokens counts every input token, cache reads and writes included."""
    prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens}}


def finish_reason(completion: Completion) -> str:
    if completion.finish is not None:
        return completion.finish
    return "tool_calls" if completion.tool_calls else "stop"


def _call_id(call_id: str | None) -> str:
    return call_id if call_id else new_id("call_")


def completion_body(completion: Completion, *, model: str, id: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object: one choice, its text (None when it only calls tools) and tool calls."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if completion.tool_calls and not completion.text else completion.text,
        "refusal": None,
        "annotations": [],
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": _call_id(c.id), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(completion)}],
        "usage": usage_body(completion.usage),
    }


class OpenAIStream:
    """Renders our stream events as OpenAI ``chat.completion.chunk`` SSE bytes: ``start``, then ``event`` per
    delta, then ``end`` (or ``error`` when the upstream fails mid-stream).

    Tool calls are numbered in the order they first appear (OpenAI's ``index``); a call's first chunk carries
    its id, type and name with empty arguments, the next ones its argument pieces, as OpenAI sends them.
    """

    def __init__(self, *, id: str, model: str, created: int, include_usage: bool) -> None:
        self.id, self.model, self.created, self.include_usage = id, model, created, include_usage
        self._indexes: dict[int, int] = {}  # our delta's index -> the OpenAI tool call index
        self._text_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk but the last carries a null usage
        return chunk

    def start(self) -> bytes:
        return sse(self._chunk({"role": "assistant", "content": ""}))

    def event(self, event: TextDelta | ToolCallDelta) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            self._text_sent = True
            return sse(self._chunk({"content": event.text}))
        out = b""
        index = self._indexes.get(event.index)
        if index is None:
            index = self._indexes[event.index] = len(self._indexes)
            out += sse(self._chunk({"tool_calls": [{"index": index, "id": _call_id(event.id), "type": "function",
                                                    "function": {"name": event.name or "", "arguments": ""}}]}))
        if event.arguments:
            out += sse(self._chunk({"tool_calls": [{"index": index, "function": {"arguments": event.arguments}}]}))
        return out

    def end(self, completion: Completion, extra: dict[str, Any] | None = None) -> bytes:
        """The finish chunk, the usage chunk (include_usage), ``[DONE]``; ``extra`` is merged into the last chunk.

        A part the stream never carried (a backend that only sent its ``StreamEnd``) is sent first, from the
        completion.
        """
        out = self._unsent(completion)
        last = self._chunk({}, finish_reason(completion))
        if self.include_usage:
            out += sse(last)
            last = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [], "usage": usage_body(completion.usage)}
        return out + sse({**last, **(extra or {})}) + sse("[DONE]")

    def _unsent(self, completion: Completion) -> bytes:
        out = b""
        if completion.text and not self._text_sent:
            out += self.event(TextDelta(completion.text))
        if not self._indexes:
            for i, call in enumerate(completion.tool_calls):
                out += self.event(ToolCallDelta(i, call.id, call.name, call.arguments))
        return out

    def error(self, status: int, message: str, type: str, code: str | None) -> bytes:
        """An error after the stream started: the ``data: {"error": ...}`` event the OpenAI SDK raises on.

        ``status`` is what the response's status would have been; OpenAI's error object has no field for it.
        """
        del status
        return sse(error_body(message, type, code, None))


def models_body(ids: Iterable[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``: ``owned_by`` is the provider part of a ``provider/model`` id, else tiered-router."""
    return {"object": "list", "data": [
        {"id": i, "object": "model", "created": created,
         "owned_by": i.split("/", 1)[0] if "/" in i else "tiered-router"} for i in ids]}


# -- errors -----------------------------------------------------------------------------------------
def error_body(message: str, type: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_NO_RETRY = {"x-should-retry": "false"}


def error_for(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` of an exception, in OpenAI's error format.

    429 (a budget) and 502 (upstream failure) carry ``x-should-retry: false``: the OpenAI SDK retries both
    by default, but a budget does not refill in seconds and the chain has already retried and fallen back.
    503 (sessions full, shared state down) carries ``Retry-After``. Anything unexpected is a 500 that
    says nothing of the router's internals.
    """
    if isinstance(exc, BadChatRequest):  # an unknown model too: OpenAI's own 404 is an invalid_request_error
        return exc.status, error_body(str(exc), "invalid_request_error", exc.code, exc.param), {}
    if isinstance(exc, InputError):
        return 400, error_body(str(exc), "invalid_request_error", "invalid_value", None), {}
    if isinstance(exc, BudgetExceeded):
        return 429, error_body(str(exc), "insufficient_quota", "budget_exceeded", exc.budget), dict(_NO_RETRY)
    if isinstance(exc, SessionsFull | StateUnavailable):
        code = "sessions_full" if isinstance(exc, SessionsFull) else "state_unavailable"
        return 503, error_body(unavailable_message(exc), "server_error", code, None), retry_after(exc)
    if isinstance(exc, FallbacksExhausted):
        return 502, error_body(str(exc), "server_error", "fallbacks_exhausted", None), dict(_NO_RETRY)
    if isinstance(exc, ProviderError):
        return 502, error_body(str(exc), "server_error", f"upstream_{exc.reason}", None), dict(_NO_RETRY)
    return 500, error_body(INTERNAL_MESSAGE, "server_error", None, None), {}
