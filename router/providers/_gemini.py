"""Google Gemini generateContent (Generative Language API).

Tools are ``functionDeclarations`` (the schema as ``parametersJsonSchema``, which takes JSON Schema as
it is); the model's calls come back whole as ``functionCall`` parts, and a ``tool`` turn goes back as a
user ``functionResponse`` part named after the function (``Message.name``, else the name of the call
it answers). Gemini's calls carry no id on older models: one is made up (``call_<random hex>``, unique, so
that it names one call across turns), and never sent back (parts are matched by name and order).
``stream`` reads ``streamGenerateContent?alt=sse``.

Thought signatures (https://ai.google.dev/gemini-api/docs/thought-signatures): a thinking model's
``functionCall`` part carries a ``thoughtSignature`` that must come back on that part in the next request
(Gemini 3 refuses the turn without it). A ``ToolCall`` has no room for it, so the adapter keeps call id ->
signature in this process (``SIGNATURES``, the ``SIGNATURES_KEPT`` most recently seen) and puts it back on
the call's part when the call returns. The limit: the map is per process, so with several replicas a
conversation whose next turn reaches another one (or one that comes back after this process restarted, or
after ``SIGNATURES_KEPT`` newer calls) sends the call without its signature, as a client that dropped it would.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from router.errors import BadResponse, RequestRejected
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
    Usage,
    choice_schema,
)
from router.providers._http import (
    HttpAdapter,
    Pieces,
    count,
    dig,
    key_from_env,
    merged_turns,
    post_json,
    post_sse,
    stream_cut,
    stream_error,
    tool_arguments,
)

_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}


def _finish(reason: Any, calls: bool) -> Finish | None:
    if reason == "STOP":
        return "tool_calls" if calls else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in _FILTERED else None


def _usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict) or "promptTokenCount" not in meta:
        return None
    cached = count(meta.get("cachedContentTokenCount"))
    # Thinking tokens are billed at the output price.
    output = count(meta.get("candidatesTokenCount")) + count(meta.get("thoughtsTokenCount"))
    return Usage(input_tokens=max(0, count(meta["promptTokenCount"]) - cached), output_tokens=output,
                 cached_input_tokens=cached)


# How many call ids the signature map keeps (a signature is some hundred bytes: a few MB at most).
SIGNATURES_KEPT = 10_000


class _Signatures:
    """Call id -> thoughtSignature, the ``kept`` most recently used; safe from several threads (a
    ``SyncBridge`` runs its own loop)."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._map: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, call_id: str, signature: str) -> None:
        with self._lock:
            self._map[call_id] = signature
            self._map.move_to_end(call_id)
            while len(self._map) > self.kept:
                self._map.popitem(last=False)

    def get(self, call_id: str) -> str | None:
        with self._lock:
            signature = self._map.get(call_id)
            if signature is not None:
                self._map.move_to_end(call_id)
            return signature

    def __len__(self) -> int:
        return len(self._map)


SIGNATURES = _Signatures(SIGNATURES_KEPT)


def _call(part: dict[str, Any]) -> ToolCall:
    """A ``functionCall`` part as a ``ToolCall``, its id Gemini's own or a fresh one; its signature kept."""
    call = part["functionCall"]
    call_id = str(call.get("id") or f"call_{secrets.token_hex(12)}")
    if isinstance(part.get("thoughtSignature"), str) and part["thoughtSignature"]:
        SIGNATURES.keep(call_id, part["thoughtSignature"])
    return ToolCall(call_id, str(call.get("name", "")), json.dumps(call.get("args") or {}))


class GeminiGenerate(HttpAdapter):
    """``POST {base_url}/v1beta/models/{model}:generateContent``; JSON answers via responseJsonSchema (a
    structured choice as ``{"intent": enum}``)."""

    default_base = "https://generativelanguage.googleapis.com"

    def _headers(self) -> dict[str, str]:
        key = key_from_env(self.name, self.config.api_key_env)
        return {"x-goog-api-key": key}

    def _parts(self, i: int, m: Message, names: dict[str, str]) -> list[dict[str, Any]]:
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "")
            if not name:
                raise RequestRejected(self.name, f"messages[{i}]: a tool result needs its function's name (name, or "
                                                 f"a tool_call_id of an earlier call: {m.tool_call_id!r})",
                                      reason="invalid_request")
            return [{"functionResponse": {"name": name, "response": {"result": m.content}}}]
        parts: list[dict[str, Any]] = [{"text": m.content}] if m.content or not m.tool_calls else []
        for j, call in enumerate(m.tool_calls):
            names[call.id] = call.name
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": tool_arguments(self.name, i, j, call)}}
            if signature := SIGNATURES.get(call.id):
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts

    def contents(self, request: ChatRequest) -> list[dict[str, Any]]:
        """Adjacent turns of one role merged: a turn's function responses go back together."""
        names: dict[str, str] = {}
        merged = merged_turns(("model" if m.role == "assistant" else "user", self._parts(i, m, names))
                              for i, m in enumerate(request.messages))
        return [{"role": role, "parts": parts} for role, parts in merged]

    def body(self, request: ChatRequest) -> dict[str, Any]:
        config: dict[str, Any] = {"temperature": request.temperature, "maxOutputTokens": request.max_tokens}
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.stop:
            config["stopSequences"] = list(request.stop)
        schema = choice_schema(request.choices) if request.choices is not None else request.json_schema
        if schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = schema
        body: dict[str, Any] = {}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        body["contents"] = self.contents(request)
        if request.tools:
            body["tools"] = [{"functionDeclarations": [
                {"name": t.name, **({"description": t.description} if t.description else {}),
                 "parametersJsonSchema": t.parameters} for t in request.tools]}]
            if request.tool_choice is not None:
                calling: dict[str, Any] = {"mode": _MODES[request.tool_choice.mode]}
                if request.tool_choice.mode == "tool":
                    calling["allowedFunctionNames"] = [request.tool_choice.name]
                body["toolConfig"] = {"functionCallingConfig": calling}
        body["generationConfig"] = config
        return body

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        url = f"{self._base}/v1beta/models/{model}:generateContent"
        data = await post_json(self._http, self.name, url, self._headers(), self.body(request), timeout_s)
        if block := dig(data, "promptFeedback", "blockReason"):
            raise BadResponse(self.name, f"prompt blocked: {block}", reason="blocked")
        parts = dig(data, "candidates", 0, "content", "parts")
        if not isinstance(parts, list) or not parts:
            reason = dig(data, "candidates", 0, "finishReason")
            raise BadResponse(self.name, f"no candidates[0].content.parts (finishReason {reason})", reason="malformed")
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        calls = tuple(_call(p) for p in parts if isinstance(p, dict) and isinstance(p.get("functionCall"), dict))
        reason = dig(data, "candidates", 0, "finishReason")
        return self.completion(request, text, _usage(data.get("usageMetadata")),
                               model=str(data.get("modelVersion", model)), finish_reason=reason, raw=data,
                               tool_calls=calls, finish=_finish(reason, bool(calls)))

    async def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        """Text comes in pieces, each function call whole (one delta with all its arguments); the body ends
        after the chunk with the finishReason. A structured choice is refused (``HttpAdapter.streamable``)."""
        self.streamable(request)
        url = f"{self._base}/v1beta/models/{model}:streamGenerateContent?alt=sse"
        pieces = Pieces()
        usage: Usage | None = None
        reason: Any = None
        answered = model
        # aclosing: the response closes when this generator does, not later in the event loop's finalizer.
        async with aclosing(post_sse(self._http, self.name, url, self._headers(), self.body(request),
                                     timeout_s)) as events:
            async for event in events:
                data = event.json(self.name)
                if "error" in data:
                    raise stream_error(self.name, data)
                if block := dig(data, "promptFeedback", "blockReason"):
                    raise BadResponse(self.name, f"prompt blocked: {block}", reason="blocked")
                answered = str(data.get("modelVersion") or answered)
                usage = _usage(data.get("usageMetadata")) or usage
                reason = dig(data, "candidates", 0, "finishReason") or reason
                for part in dig(data, "candidates", 0, "content", "parts") or ():
                    if not isinstance(part, dict) or part.get("thought"):
                        continue
                    if isinstance(part.get("functionCall"), dict):
                        call = _call(part)
                        yield pieces.add(ToolCallDelta(len(pieces.calls), call.id, call.name, call.arguments))
                    elif part.get("text"):
                        yield pieces.add(TextDelta(str(part["text"])))
        if reason is None:
            raise stream_cut(self.name, "a finishReason")
        calls = pieces.tool_calls()
        yield StreamEnd(self.completion(request, pieces.whole_text(), usage, model=answered, finish_reason=reason,
                                        raw={}, tool_calls=calls, finish=_finish(reason, bool(calls))))
