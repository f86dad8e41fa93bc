"""Anthropic messages API, with prompt-cache markers on the static system and tool part.

Tool turns are Anthropic's content blocks: an assistant's calls are ``tool_use`` blocks, a ``tool`` turn
is a ``tool_result`` block in a user message; adjacent turns of one role merge into one message (the
API wants the roles to alternate, and a turn's tool results together). ``stream`` maps the event
stream (message_start, content_block_*, message_delta, message_stop; ``error`` events raise); a
structured answer's forced tool input streams as text (its JSON).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from router.errors import BadResponse
from router.providers._base import (
    ChatRequest,
    Completion,
    Finish,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    choice_schema,
)
from router.providers._http import (
    HttpAdapter,
    Pieces,
    count,
    dig,
    key_from_env,
    member,
    merged_turns,
    post_json,
    post_sse,
    stream_cut,
    stream_error,
    tool_arguments,
)

API_VERSION = "2023-06-01"
_CACHE = {"type": "ephemeral"}
_FINISH: dict[str, Finish] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                               "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                               "refusal": "content_filter"}
_CHOICE = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    return {"type": "tool", "name": choice.name} if choice.mode == "tool" else dict(_CHOICE[choice.mode])


def _blocks(backend: str, i: int, m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content or not m.tool_calls else []
    blocks += [{"type": "tool_use", "id": call.id, "name": call.name, "input": tool_arguments(backend, i, j, call)}
               for j, call in enumerate(m.tool_calls)]
    return blocks


def messages(backend: str, request: ChatRequest) -> list[dict[str, Any]]:
    """Anthropic's messages: adjacent turns of one role merged; a lone text turn stays a plain string."""
    merged = merged_turns(("assistant" if m.role == "assistant" else "user", _blocks(backend, i, m))
                          for i, m in enumerate(request.messages))
    return [{"role": role, "content": blocks[0]["text"] if len(blocks) == 1 and blocks[0]["type"] == "text"
             else [b for b in blocks if b["type"] != "text" or b["text"]]}  # empty text blocks are refused
            for role, blocks in merged]


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or "input_tokens" not in usage:
        return None
    return Usage(input_tokens=count(usage["input_tokens"]), output_tokens=count(usage.get("output_tokens")),
                 cached_input_tokens=count(usage.get("cache_read_input_tokens")),
                 cache_write_tokens=count(usage.get("cache_creation_input_tokens")))


class AnthropicMessages(HttpAdapter):
    """``POST {base_url}/v1/messages``. Structured output is a forced tool call whose input is the answer;
    a structured choice is one whose input schema is ``{"intent": enum}``."""

    default_base = "https://api.anthropic.com"

    def _headers(self) -> dict[str, str]:
        key = key_from_env(self.name, self.config.api_key_env)
        return {"x-api-key": key, "anthropic-version": API_VERSION}

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens}
        # Newer models refuse temperature and top_p together: an explicit top_p wins.
        if request.top_p is not None:
            body["top_p"] = request.top_p
        else:
            body["temperature"] = request.temperature
        if request.system:
            # The static part is byte-identical across calls; the marker caches it (reads bill at 10%).
            body["system"] = [{"type": "text", "text": request.system, "cache_control": _CACHE}]
        body["messages"] = messages(self.name, request)
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        tools = [{"name": t.name, **({"description": t.description} if t.description else {}),
                  "input_schema": t.parameters} for t in request.tools]
        schema, name = _schema(request)
        if schema is not None:
            tools.append({"name": name, "description": "Record the answer.", "input_schema": schema})
            # With the agent's own tools too, it must call one of them or record the answer.
            body["tool_choice"] = {"type": "tool", "name": name} if not request.tools else {"type": "any"}
        elif request.tools and request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if tools:
            tools[-1]["cache_control"] = _CACHE  # the tools are static too
            body["tools"] = tools
        return body

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        data = await post_json(self._http, self.name, f"{self._base}/v1/messages", self._headers(),
                               self.body(model, request), timeout_s)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise BadResponse(self.name, "response has no content list", reason="malformed")
        uses = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
        schema, name = _schema(request)
        answer = next((b for b in uses if b.get("name") == name), None) if schema is not None else None
        calls = tuple(ToolCall(str(b.get("id", "")), str(b.get("name", "")), json.dumps(b.get("input", {})))
                      for b in uses if b is not answer)
        if schema is not None and not calls:
            if answer is None or not isinstance(answer.get("input"), dict):
                raise BadResponse(self.name, f"no tool_use block named {name!r} in the answer",
                                  reason="malformed")
            text = json.dumps(answer["input"])
        else:
            text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        reason = data.get("stop_reason")
        return self.completion(request, text, _usage(data.get("usage")), model=str(data.get("model", model)),
                               finish_reason=reason, raw=data, tool_calls=calls, finish=_FINISH.get(str(reason)))

    async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        """A structured choice is refused (``RequestRejected``): see ``HttpAdapter.streamable``."""
        self.streamable(request)
        body = {**self.body(model, request), "stream": True}
        pieces = Pieces()
        tools: dict[int, int] = {}  # content block index -> tool call index
        schema, name = _schema(request)
        answers: set[int] = set()  # blocks of the structured-output tool: its input is the answer's text
        usage: dict[str, Any] = {}
        reason: Any = None
        answered = model
        # aclosing: the response closes when this generator does, not later in the event loop's finalizer.
        async with aclosing(post_sse(self._http, self.name, f"{self._base}/v1/messages", self._headers(), body,
                                     timeout_s)) as events:
            async for event in events:
                data = event.json(self.name)
                kind = data.get("type") or event.event
                if kind == "error":
                    raise stream_error(self.name, data)
                if kind == "message_start":
                    answered = str(dig(data, "message", "model") or answered)
                    usage.update(member(member(data, "message"), "usage"))
                elif kind == "content_block_start":
                    block, index = member(data, "content_block"), count(data.get("index"))
                    if block.get("type") == "tool_use" and schema is not None and block.get("name") == name:
                        answers.add(index)
                    elif block.get("type") == "tool_use":
                        tools[index] = len(tools)
                        yield pieces.add(ToolCallDelta(tools[index], str(block.get("id", "")),
                                                       str(block.get("name", "")), ""))
                    elif block.get("text"):
                        yield pieces.add(TextDelta(str(block["text"])))
                elif kind == "content_block_delta":
                    delta, index = member(data, "delta"), count(data.get("index"))
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield pieces.add(TextDelta(str(delta["text"])))
                    elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                        if index in answers:
                            yield pieces.add(TextDelta(str(delta["partial_json"])))
                        elif index in tools:
                            yield pieces.add(ToolCallDelta(tools[index], None, None, str(delta["partial_json"])))
                elif kind == "message_delta":
                    reason = dig(data, "delta", "stop_reason") or reason
                    # Cumulative counts: output_tokens always, the input counts where the API sends them.
                    usage.update({k: v for k, v in member(data, "usage").items() if v is not None})
                elif kind == "message_stop":
                    break
            else:
                raise stream_cut(self.name, "message_stop")
        yield StreamEnd(self.completion(request, pieces.whole_text(), _usage(usage), model=answered,
                                        finish_reason=reason, raw={}, tool_calls=pieces.tool_calls(),
                                        finish=_FINISH.get(str(reason))))


def _schema(request: ChatRequest) -> tuple[dict[str, Any] | None, str]:
    """The tool's input schema and name: a structured choice's, else the request's own."""
    if request.choices is not None:
        return choice_schema(request.choices), "intent"
    return request.json_schema, request.schema_name
