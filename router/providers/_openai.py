"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, llama.cpp's server).

A structured choice (``ChatRequest.choices``) is sent as OpenAI's strict JSON schema
``{"intent": enum}``; an OpenAI-compatible server takes it per its ``constraint`` (json_schema,
json_object + schema, or a GBNF grammar), and vLLM as ``structured_outputs: {"choice": [...]}``
(``guided_choice`` before v0.12), which answers the bare label.

Tools, tool turns, ``stop`` and ``top_p`` are sent in OpenAI's own shape (an assistant turn carrying
``tool_calls``, a ``tool`` turn answering one by ``tool_call_id``). ``stream`` sends ``stream: true`` with
``stream_options.include_usage``: the usage comes in a last chunk with no choices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from router.errors import BadResponse, RequestRejected
from router.providers._base import (
    ChatRequest,
    Completion,
    Finish,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    choice_schema,
    label_grammar,
)
from router.providers._http import (
    HttpAdapter,
    Pieces,
    count,
    dig,
    get_ok,
    key_from_env,
    member,
    post_json,
    post_sse,
    stream_cut,
    stream_error,
)

# A readiness probe waits no longer than this.
PING_TIMEOUT_S = 2.0


def strict_schema_ok(schema: dict[str, Any]) -> bool:
    """OpenAI's strict mode needs every object closed and every property required."""
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(props):
            return False
        if not all(strict_schema_ok(p) for p in props.values() if isinstance(p, dict)):
            return False
    for key in ("items", "anyOf", "$defs"):
        sub = schema.get(key)
        subs = sub.values() if isinstance(sub, dict) and key == "$defs" else sub if isinstance(sub, list) else [sub]
        if not all(strict_schema_ok(s) for s in subs if isinstance(s, dict)):
            return False
    return True


_FINISH: dict[str, Finish] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                               "function_call": "tool_calls", "content_filter": "content_filter"}


def messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The OpenAI message list: the system part first (none when it is empty), tool turns as OpenAI's."""
    out: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    for m in request.messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.tool_calls:
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls]})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    cached = count(dig(usage, "prompt_tokens_details", "cached_tokens"))
    return Usage(input_tokens=max(0, count(usage["prompt_tokens"]) - cached),
                 output_tokens=count(usage.get("completion_tokens")), cached_input_tokens=cached)


def _finish(reason: Any, calls: bool) -> Finish | None:
    """The finish in our words. A turn with tool calls is ``tool_calls`` even where the server said ``stop``
    (Google's OpenAI-compatible endpoint does); a cut one stays ``length``."""
    finish = _FINISH.get(str(reason))
    return "tool_calls" if calls and finish in {None, "stop"} else finish


class _CallIndexes:
    """A streamed tool call's index. OpenAI numbers each piece (``index``); Google's OpenAI-compatible endpoint
    sends none: a new ``id`` then starts the next call, and a piece without one continues the last. The id and
    the name go on an index's first piece only (some servers repeat them on every piece)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.seen: set[int] = set()
        self.last = -1

    def delta(self, call: dict[str, Any]) -> ToolCallDelta:
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        index = call.get("index")
        if not isinstance(index, int):
            if call_id is None:
                index = max(self.last, 0)
            else:
                index = self.ids.get(call_id, max(self.seen, default=-1) + 1)
        if call_id is not None:
            self.ids.setdefault(call_id, index)
        first = index not in self.seen
        self.seen.add(index)
        self.last = index
        name = dig(call, "function", "name")
        return ToolCallDelta(index, call_id if first else None, name if first and isinstance(name, str) else None,
                             str(dig(call, "function", "arguments") or ""))


def _tool_calls(backend: str, calls: Any) -> tuple[ToolCall, ...]:
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise BadResponse(backend, "choices[0].message.tool_calls is not a list", reason="malformed")
    out = []
    for i, call in enumerate(calls):
        name, arguments = dig(call, "function", "name"), dig(call, "function", "arguments")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise BadResponse(backend, f"choices[0].message.tool_calls[{i}] has no function name and arguments",
                              reason="malformed")
        out.append(ToolCall(str(call.get("id") or f"call_{i}"), name, arguments))
    return tuple(out)


class OpenAIChat(HttpAdapter):
    """``POST {base_url}/chat/completions``; usage from ``usage`` (cached under prompt_tokens_details)."""

    default_base = "https://api.openai.com/v1"
    key_required = True

    def _headers(self) -> dict[str, str]:
        if not self.key_required and self.config.api_key_env is None:
            return {}  # a self-hosted server without auth
        return {"Authorization": f"Bearer {key_from_env(self.name, self.config.api_key_env)}"}

    # -- per-protocol parts ------------------------------------------------------------------
    def choice_fields(self, choices: tuple[str, ...]) -> dict[str, Any]:
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "intent", "strict": True, "schema": choice_schema(choices)}}}

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        # GPT-5-family models take max_completion_tokens and only the default temperature.
        body: dict[str, Any] = {"model": model, "messages": messages(request),
                                "max_completion_tokens": request.max_tokens}
        if request.tools:
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, **({"description": t.description} if t.description else {}),
                "parameters": t.parameters}} for t in request.tools]
            if request.tool_choice is not None:  # OpenAI refuses a tool_choice without tools
                body["tool_choice"] = tool_choice(request.tool_choice)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.choices is not None:
            body.update(self.choice_fields(request.choices))
        elif request.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": request.schema_name, "schema": request.json_schema,
                "strict": strict_schema_ok(request.json_schema)}}
        return body

    # -- the call ----------------------------------------------------------------------------
    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        data = await post_json(self._http, self.name, f"{self._base}/chat/completions", self._headers(),
                               self.body(model, request), timeout_s)
        message = dig(data, "choices", 0, "message")
        if not isinstance(message, dict):
            raise BadResponse(self.name, "response has no choices[0].message", reason="malformed")
        if message.get("refusal"):
            raise BadResponse(self.name, f"the model refused: {str(message['refusal'])[:200]}", reason="refusal")
        calls = _tool_calls(self.name, message.get("tool_calls"))
        text = message.get("content")
        if text is None and calls:  # a turn of tool calls only has no content
            text = ""
        if not isinstance(text, str):
            raise BadResponse(self.name, "choices[0].message.content is not a string", reason="malformed")
        reason = dig(data, "choices", 0, "finish_reason")
        return self.completion(request, text, _usage(data.get("usage")), model=str(data.get("model") or model),
                               finish_reason=reason, raw=data, tool_calls=calls, finish=_finish(reason, bool(calls)))

    async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        """A structured choice is refused (``RequestRejected``): see ``HttpAdapter.streamable``."""
        self.streamable(request)
        body = {**self.body(model, request), "stream": True, "stream_options": {"include_usage": True}}
        pieces = Pieces()
        usage: Usage | None = None
        reason: Any = None
        answered = model
        calls = _CallIndexes()
        # aclosing: the response closes when this generator does, not later in the event loop's finalizer.
        async with aclosing(post_sse(self._http, self.name, f"{self._base}/chat/completions", self._headers(),
                                     body, timeout_s)) as events:
            async for event in events:
                if event.data.strip() == "[DONE]":
                    break
                chunk = event.json(self.name)
                if "error" in chunk:
                    raise stream_error(self.name, chunk)
                answered = str(chunk.get("model") or answered)
                usage = _usage(chunk.get("usage")) or usage
                choice = dig(chunk, "choices", 0)
                if not isinstance(choice, dict):
                    continue  # the usage chunk has no choices
                reason = choice.get("finish_reason") or reason
                delta = member(choice, "delta")
                if delta.get("refusal"):
                    raise BadResponse(self.name, f"the model refused: {str(delta['refusal'])[:200]}",
                                      reason="refusal")
                if isinstance(delta.get("content"), str) and delta["content"]:
                    yield pieces.add(TextDelta(delta["content"]))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        yield pieces.add(calls.delta(call))
            else:
                raise stream_cut(self.name, "data: [DONE]")
        found = pieces.tool_calls()
        yield StreamEnd(self.completion(request, pieces.whole_text(), usage, model=answered, finish_reason=reason,
                                        raw={}, tool_calls=found, finish=_finish(reason, bool(found))))

    async def ping(self) -> bool:
        """``GET {base}/models`` answers 200."""
        try:
            headers = self._headers()
        except RequestRejected:
            return False
        return await get_ok(self._http, f"{self._base}/models", headers, PING_TIMEOUT_S)


class OpenAICompatibleChat(OpenAIChat):
    """vLLM, llama.cpp and the like: ``max_tokens``, a temperature, an optional key."""

    default_base = "http://127.0.0.1:8000/v1"
    key_required = False

    def choice_fields(self, choices: tuple[str, ...]) -> dict[str, Any]:
        if self.config.constraint == "grammar":
            return {"grammar": label_grammar(choices)}
        if self.config.constraint == "json_object":
            return {"response_format": {"type": "json_object", "schema": choice_schema(choices)}}
        # The schema must sit under json_schema.schema: llama.cpp ignores a flat "schema" key there.
        return super().choice_fields(choices)

    def parse_choice(self, text: str) -> str:
        if self.config.constraint == "grammar":
            return text.strip()
        return super().parse_choice(text)

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        body = super().body(model, request)
        body["max_tokens"] = body.pop("max_completion_tokens")
        body["temperature"] = request.temperature
        if request.choices is None and request.json_schema is not None and self.config.structured == "json_object":
            body["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return body


class VLLMChat(OpenAICompatibleChat):
    """vLLM: ``structured_outputs: {"choice": labels}`` (or ``guided_choice`` before v0.12); the answer is the label."""

    def choice_fields(self, choices: tuple[str, ...]) -> dict[str, Any]:
        if self.config.structured == "guided_choice":
            return {"guided_choice": list(choices)}
        return {"structured_outputs": {"choice": list(choices)}}

    def parse_choice(self, text: str) -> str:
        return text.strip()
