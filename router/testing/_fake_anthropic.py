"""``FakeAnthropic``: a loopback Anthropic Messages server. It checks requests as Anthropic does (x-api-key,
anthropic-version, roles that alternate, content blocks, tool_use/tool_result pairing, tools and
tool_choice, cache markers), answers text, scripted ``tool_use`` blocks or the forced tool of structured
output, and streams the Messages events.
"""

from __future__ import annotations

import json
from typing import Any

from router.testing._loopback import ApiError, Event, LoopbackServer, object_body, pieces, sse

_BLOCKS = {"text": {"text"}, "image": {"source"}, "document": {"source", "title", "context", "citations"},
           "tool_use": {"id", "name", "input"}, "tool_result": {"tool_use_id", "content", "is_error"},
           "thinking": {"thinking", "signature"}, "redacted_thinking": {"data"}}
_CHOICES = {"auto", "any", "none", "tool"}


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _text(content: Any) -> str:
    """The text of a message's content: the string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _check_cache(block: Any, where: str) -> None:
    marker = block.get("cache_control") if isinstance(block, dict) else None
    if marker is not None and marker != {"type": "ephemeral"} and not (
            isinstance(marker, dict) and marker.get("type") == "ephemeral" and set(marker) <= {"type", "ttl"}):
        raise _bad(f"{where}.cache_control: Input tag found, expected 'ephemeral'")


def _check_block(block: Any, where: str, role: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in _BLOCKS:
        raise _bad(f"{where}.type: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
                   f"{', '.join(repr(k) for k in _BLOCKS)}")
    if unknown := sorted(set(block) - _BLOCKS[kind] - {"type", "cache_control"}):
        raise _bad(f"{where}.{kind}.{unknown[0]}: Extra inputs are not permitted")
    _check_cache(block, where)
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _bad(f"{where}.text.text: Field required")
    if kind == "tool_use":
        if role != "assistant":
            raise _bad(f"{where}: tool_use blocks can only be in assistant messages")
        for field, typ in (("id", str), ("name", str), ("input", dict)):
            if not isinstance(block.get(field), typ):
                raise _bad(f"{where}.tool_use.{field}: Field required")
    if kind == "tool_result":
        if role != "user":
            raise _bad(f"{where}: tool_result blocks can only be in user messages")
        if not isinstance(block.get("tool_use_id"), str):
            raise _bad(f"{where}.tool_result.tool_use_id: Field required")
        content = block.get("content", "")
        if not isinstance(content, str) and not (isinstance(content, list) and all(
                isinstance(b, dict) and b.get("type") in {"text", "image"} for b in content)):
            raise _bad(f"{where}.tool_result.content: Input should be a valid string or a list of text or image "
                       "blocks")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise _bad(f"{where}.tool_result.is_error: Input should be a valid boolean")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict) or \
            messages[0].get("role") != "user":
        raise _bad("messages: first message must use the \"user\" role")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in {"user", "assistant"} or not isinstance(
                m.get("content"), str | list):
            raise _bad(f"messages.{i}: role must be user or assistant with content")
        if unknown := sorted(set(m) - {"role", "content"}):
            raise _bad(f"messages.{i}.{unknown[0]}: Extra inputs are not permitted")
        if i and m["role"] == messages[i - 1]["role"]:
            raise _bad("messages: roles must alternate between \"user\" and \"assistant\"")
        blocks = m["content"] if isinstance(m["content"], list) else []
        for j, block in enumerate(blocks):
            _check_block(block, f"messages.{i}.content.{j}", m["role"])
        # Each tool_result answers a tool_use of the message just before; each tool_use gets its result next.
        before = messages[i - 1]["content"] if i else []
        used = {b["id"] for b in before if b.get("type") == "tool_use"} if isinstance(before, list) else set()
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if stray := [r for r in results if r not in used]:
            raise _bad(f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                       f"{', '.join(stray)}. Each `tool_result` block must have a corresponding `tool_use` block "
                       "in the previous message.")
        if m["role"] == "user" and (missing := sorted(used - set(results))):
            raise _bad(f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                       f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                       "`tool_result` block in the next message.")


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not isinstance(
                tool.get("input_schema"), dict) or tool["input_schema"].get("type") != "object":
            raise _bad(f"tools.{i}: name and an object input_schema are required")
        if unknown := sorted(set(tool) - {"name", "description", "input_schema", "cache_control", "type"}):
            raise _bad(f"tools.{i}.custom.{unknown[0]}: Extra inputs are not permitted")
        _check_cache(tool, f"tools.{i}")
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
            raise _bad("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if unknown := sorted(set(choice) - {"type", "name", "disable_parallel_tool_use"}):
            raise _bad(f"tool_choice.{choice['type']}.{unknown[0]}: Extra inputs are not permitted")
        if choice["type"] == "tool" and choice.get("name") not in {t["name"] for t in tools}:
            raise _bad(f"tool_choice.name: no tool named {choice.get('name')!r}")
    return tools


class FakeAnthropic(LoopbackServer):
    """``/v1/messages``: the key (x-api-key or Bearer) and anthropic-version required; 529 overloaded_error.

    The query for scripts is the last user message with text (then the first). With tools offered and
    ``tool_choice`` not none, scripted tool calls answer as ``tool_use`` blocks (ids ``toolu_<n>``,
    stop_reason "tool_use"); else a forced tool (``tool_choice`` type tool) gets the scripted JSON answer as
    its input; else text. ``stream: true`` answers message_start (usage with the input and cache counts,
    output_tokens 1), ping, content_block_start/delta (text_delta, input_json_delta)/stop per block,
    message_delta (stop_reason, output_tokens), message_stop; the mid-stream error is an ``error`` event.
    """

    overloaded_status = 529
    _FIELDS = {"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
               "tools", "tool_choice", "metadata", "stream", "thinking"}
    _KINDS = {"rate_limit": "rate_limit_error", "quota": "rate_limit_error", "overloaded": "overloaded_error",
              "server": "api_error", "invalid_request": "invalid_request_error",
              "authentication": "authentication_error"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self, status: int, kind: str, message: str, param: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self._KINDS.get(kind, "invalid_request_error"), "message": message}
        if kind == "quota":
            error["details"] = {"error_code": "enforced_spend_limit_reached"}
        return {"type": "error", "error": error, "request_id": f"req_{len(self.requests)}"}

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usage", None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        if path != "/v1/messages":
            raise ApiError(404, "invalid_request", f"Not found: {path}")
        # The key comes as x-api-key, or as a Bearer token (what the anthropic SDK 2.x sends).
        if self.api_key not in {headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer ")}:
            raise ApiError(401, "authentication", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise _bad("anthropic-version: header is required")
        body = object_body(body, self._FIELDS, "body: Input should be an object", "{}: Extra inputs are not permitted")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                raise _bad(f"{field}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise _bad("max_tokens: Input should be a positive integer")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _bad("stream: Input should be a valid boolean")
        stops = body.get("stop_sequences", [])
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences: Input should be a valid list of strings")
        messages = body["messages"]
        _check_messages(messages)
        system = body.get("system", "")
        if isinstance(system, list):
            for i, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                    raise _bad(f"system.{i}: expected a text block")
                _check_cache(block, f"system.{i}")
            system = "".join(b["text"] for b in system)
        tools = _check_tools(body)
        choice = body.get("tool_choice")
        model = str(body["model"])
        users = [i for i, m in enumerate(messages) if m["role"] == "user" and _text(m["content"])]
        queries = [_text(messages[i]["content"]) for i in (users[-1:] + users[:1])] or [""]
        calls = self._scripted_calls(model, tools, choice, queries, messages[users[-1] + 1:] if users else [])
        forced = choice is not None and choice.get("type") == "tool"
        content: list[dict[str, Any]]
        if calls:
            content = [{"type": "tool_use", "id": self.call_id("toolu"), "name": name, "input": args}
                       for name, args in calls]
            answer, stop = json.dumps(calls), "tool_use"
        else:
            answer = self.answer_for(model, queries, "{}" if forced else "ok")
            try:
                tool_input = json.loads(answer) if forced else None
            except ValueError:
                tool_input = None
            if isinstance(tool_input, dict):
                content = [{"type": "tool_use", "id": f"toolu_{len(self.requests)}", "name": choice["name"],
                            "input": tool_input}]
                stop = "tool_use"
            else:
                content, stop = [{"type": "text", "text": answer}], "end_turn"
        static = str(system) + json.dumps(tools)
        fresh, cached, out = self.usage_counts(static, " ".join(_text(m["content"]) for m in messages), answer)
        # A cache write happens the first time the static part is seen; later calls read it.
        write = len(static.split()) if (cached == 0 and self.fixed_usage is None) else 0
        return {
            "id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": max(0, fresh - write), "output_tokens": out,
                      "cache_creation_input_tokens": write, "cache_read_input_tokens": cached},
        }, model

    def _scripted_calls(self, model: str, tools: list[dict[str, Any]], choice: dict[str, Any] | None,
                        queries: list[str], after_user: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        if not tools or (choice is not None and choice["type"] == "none"):
            return []
        allowed = {choice["name"]} if choice is not None and choice["type"] == "tool" else {t["name"] for t in tools}
        round_ = sum(1 for m in after_user if m["role"] == "assistant" and isinstance(m["content"], list)
                     and any(b.get("type") == "tool_use" for b in m["content"]))
        return self.tool_calls_for(model, queries, round_, allowed)

    # -- streaming ---------------------------------------------------------------------------------------
    def stream_events(self, path: str, body: dict[str, Any], payload: dict[str, Any]) -> list[Event]:
        usage = payload.get("usage")
        start = {k: v for k, v in payload.items() if k != "usage"} | {"content": [], "stop_reason": None}
        if usage is not None:
            start["usage"] = {**usage, "output_tokens": 1}
        events = [sse({"type": "message_start", "message": start}, "message_start"),
                  sse({"type": "ping"}, "ping")]
        for index, block in enumerate(payload["content"]):
            if block["type"] == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                kind, key = "text_delta", "text"
                parts = pieces(block["text"], self.stream_chunks)
            else:
                opening, kind, key = {**block, "input": {}}, "input_json_delta", "partial_json"
                parts = ["", *pieces(json.dumps(block["input"]))]  # Anthropic opens with an empty partial_json
            events.append(sse({"type": "content_block_start", "index": index, "content_block": opening},
                              "content_block_start"))
            events += [sse({"type": "content_block_delta", "index": index, "delta": {"type": kind, key: part}},
                           "content_block_delta", content=True) for part in parts]
            events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        delta: dict[str, Any] = {"type": "message_delta",
                                 "delta": {"stop_reason": payload["stop_reason"], "stop_sequence": None}}
        if usage is not None:
            delta["usage"] = {"output_tokens": usage["output_tokens"]}
        return [*events, sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    def stream_error_event(self, path: str, err: ApiError) -> Event:
        body = self.error_body(err.status, err.kind, err.message)
        return sse({"type": "error", "error": body["error"]}, "error")
