"""Loopback servers for the premium providers we cannot reach from tests: OpenAI chat completions,
Anthropic messages and Gemini generateContent. Each checks requests the way the provider does
(auth header, required and unknown fields, structured-output shape) and answers with the
provider's own success and error bodies; faults come from ``LoopbackServer``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from router.testing._loopback import ApiError, LoopbackServer


def _text(content: Any) -> str:
    return content if isinstance(content, str) else ""


def _object_body(body: Any, fields: set[str], not_object: str, unknown_field: str) -> dict[str, Any]:
    """Every provider rejects a body that is not an object, and names the first unknown field, each
    in its own words (``unknown_field`` has one ``{}`` for the field)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", not_object)
    if unknown := sorted(set(body) - fields):
        raise ApiError(400, "invalid_request", unknown_field.format(unknown[0]))
    return body


class FakeOpenAI(LoopbackServer):
    """``/v1/chat/completions``. ``compatible=True`` acts as vLLM/llama.cpp: no key, max_tokens allowed."""

    _FIELDS = {"model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "n", "stop",
               "response_format", "seed", "user", "stream", "reasoning_effort", "store", "metadata"}
    _KINDS = {"rate_limit": "rate_limit_exceeded", "quota": "insufficient_quota", "overloaded": "server_error",
              "server": "server_error", "invalid_request": "invalid_request_error",
              "authentication": "invalid_request_error"}

    def __init__(self, *args: Any, compatible: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compatible = compatible

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def error_body(self, status: int, kind: str, message: str) -> dict[str, Any]:
        code = {"quota": "insufficient_quota", "authentication": "invalid_api_key"}.get(kind)
        return {"error": {"message": message, "type": self._KINDS.get(kind, "invalid_request_error"),
                          "param": None, "code": code}}

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usage", None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        if path != "/v1/chat/completions":
            raise ApiError(404, "invalid_request", f"Invalid URL (POST {path})")
        if not self.compatible and headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "authentication", "Incorrect API key provided.")
        body = _object_body(body, self._FIELDS, "The request body must be a JSON object.",
                            "Unrecognized request argument supplied: {}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "invalid_request", "you must provide a model parameter")
        if not self.compatible and "max_tokens" in body:
            raise ApiError(400, "invalid_request", "Unsupported parameter: 'max_tokens' is not supported with this "
                                                   "model. Use 'max_completion_tokens' instead.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in {"system", "developer", "user", "assistant"}
            and isinstance(m.get("content"), str) for m in messages
        ):
            raise ApiError(400, "invalid_request", "'messages' must be a non-empty array of {role, content}.")
        fmt = body.get("response_format")
        if fmt is not None:
            ok = isinstance(fmt, dict) and (
                (fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict)
                 and isinstance(fmt["json_schema"].get("name"), str) and isinstance(fmt["json_schema"].get("schema"),
                                                                                    dict))
                or (self.compatible and fmt.get("type") == "json_object") or fmt.get("type") == "text")
            if not ok:
                raise ApiError(400, "invalid_request", "Invalid 'response_format': expected json_schema with a "
                                                       "name and a schema.")
        system = "".join(_text(m["content"]) for m in messages if m["role"] in {"system", "developer"})
        users = [m["content"] for m in messages if m["role"] == "user"]
        answer = self.answer_for(model, users[0] if users else "", "{}" if fmt else "ok")
        fresh, cached, out = self.usage_counts(system, " ".join(m["content"] for m in messages
                                                                  if m["role"] not in {"system", "developer"}), answer)
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": fresh + cached, "completion_tokens": out,
                      "total_tokens": fresh + cached + out, "prompt_tokens_details": {"cached_tokens": cached}},
        }, model


class FakeAnthropic(LoopbackServer):
    """``/v1/messages``: x-api-key and anthropic-version required; 529 overloaded_error."""

    overloaded_status = 529
    _FIELDS = {"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
               "tools", "tool_choice", "metadata", "stream", "thinking"}
    _KINDS = {"rate_limit": "rate_limit_error", "quota": "rate_limit_error", "overloaded": "overloaded_error",
              "server": "api_error", "invalid_request": "invalid_request_error",
              "authentication": "authentication_error"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self, status: int, kind: str, message: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self._KINDS.get(kind, "invalid_request_error"), "message": message}
        if kind == "quota":
            error["details"] = {"error_code": "enforced_spend_limit_reached"}
        return {"type": "error", "error": error, "request_id": f"req_{len(self.requests)}"}

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usage", None)

    @staticmethod
    def _check_cache(block: Any, where: str) -> None:
        marker = block.get("cache_control") if isinstance(block, dict) else None
        if marker is not None and marker != {"type": "ephemeral"} and not (
                isinstance(marker, dict) and marker.get("type") == "ephemeral" and set(marker) <= {"type", "ttl"}):
            raise ApiError(400, "invalid_request", f"{where}.cache_control: Input tag found, expected 'ephemeral'")

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        if path != "/v1/messages":
            raise ApiError(404, "invalid_request", f"Not found: {path}")
        if headers.get("x-api-key") != self.api_key:
            raise ApiError(401, "authentication", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise ApiError(400, "invalid_request", "anthropic-version: header is required")
        body = _object_body(body, self._FIELDS, "body: Input should be an object", "{}: Extra inputs are not permitted")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                raise ApiError(400, "invalid_request", f"{field}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise ApiError(400, "invalid_request", "max_tokens: Input should be a positive integer")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            raise ApiError(400, "invalid_request", "messages: first message must use the \"user\" role")
        for i, m in enumerate(messages):
            if m.get("role") not in {"user", "assistant"} or not isinstance(m.get("content"), str | list):
                raise ApiError(400, "invalid_request", f"messages.{i}: role must be user or assistant with content")
            if i and m["role"] == messages[i - 1]["role"]:
                raise ApiError(400, "invalid_request", "messages: roles must alternate between \"user\" and "
                                                       "\"assistant\"")
        system = body.get("system", "")
        if isinstance(system, list):
            for i, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                    raise ApiError(400, "invalid_request", f"system.{i}: expected a text block")
                self._check_cache(block, f"system.{i}")
            system = "".join(b["text"] for b in system)
        tools = body.get("tools", [])
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not isinstance(
                    tool.get("input_schema"), dict) or tool["input_schema"].get("type") != "object":
                raise ApiError(400, "invalid_request", f"tools.{i}: name and an object input_schema are required")
            self._check_cache(tool, f"tools.{i}")
        choice = body.get("tool_choice")
        if choice is not None and choice.get("type") == "tool" and choice.get("name") not in {t["name"] for t in tools}:
            raise ApiError(400, "invalid_request", f"tool_choice.name: no tool named {choice.get('name')!r}")
        model = str(body["model"])
        query = _text(messages[0]["content"])
        forced = choice is not None and choice.get("type") == "tool"
        answer = self.answer_for(model, query, "{}" if forced else "ok")
        static = str(system) + json.dumps(tools)
        fresh, cached, out = self.usage_counts(static, " ".join(_text(m["content"]) for m in messages), answer)
        content: list[dict[str, Any]]
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
        # A cache write happens the first time the static part is seen; later calls read it.
        write = len(static.split()) if (cached == 0 and self.fixed_usage is None) else 0
        return {
            "id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": max(0, fresh - write), "output_tokens": out,
                      "cache_creation_input_tokens": write, "cache_read_input_tokens": cached},
        }, model


class FakeGemini(LoopbackServer):
    """``/v1beta/models/{model}:generateContent``: x-goog-api-key; errors carry google.rpc status."""

    _STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    _FIELDS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig",
               "cachedContent"}
    _CONFIG = {"temperature", "maxOutputTokens", "topP", "topK", "candidateCount", "stopSequences",
               "responseMimeType", "responseSchema", "responseJsonSchema", "thinkingConfig", "seed"}
    _PATH = re.compile(r"^/v1beta/models/([\w.\-]+):generateContent$")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self, status: int, kind: str, message: str) -> dict[str, Any]:
        error: dict[str, Any] = {"code": status, "message": message, "status": self._STATUS.get(status, "UNKNOWN")}
        if kind == "rate_limit":
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{self.retry_after}s"}]
        return {"error": error}

    def fault_error(self, kind: str) -> ApiError:
        err = super().fault_error(kind)
        err.headers = {}  # Gemini says how long to wait in the body (RetryInfo), not in a header
        return err

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usageMetadata", None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        match = self._PATH.match(path)
        if not match:
            raise ApiError(404, "invalid_request", f"Method not found: {path}")
        if not headers.get("x-goog-api-key"):
            raise ApiError(403, "authentication", "Method doesn't allow unregistered callers. Please use an API key.")
        if headers["x-goog-api-key"] != self.api_key:
            raise ApiError(400, "invalid_request", "API key not valid. Please pass a valid API key.")
        body = _object_body(body, self._FIELDS, "Invalid JSON payload received.",
                            'Invalid JSON payload received. Unknown name "{}"')
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise ApiError(400, "invalid_request", "* GenerateContentRequest.contents: contents is not specified")
        for i, c in enumerate(contents):
            if c.get("role") not in {"user", "model"} or not isinstance(c.get("parts"), list) or not c["parts"]:
                raise ApiError(400, "invalid_request", f"* GenerateContentRequest.contents[{i}]: role must be user "
                                                       "or model, with parts")
        config = body.get("generationConfig", {})
        if unknown := sorted(set(config) - self._CONFIG):
            raise ApiError(400, "invalid_request", f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at "
                                                   "'generation_config'")
        structured = "responseJsonSchema" in config or "responseSchema" in config
        if structured and config.get("responseMimeType") != "application/json":
            raise ApiError(400, "invalid_request", "responseMimeType must be application/json with a response schema")
        model = match.group(1)
        system = "".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", []))
        query = "".join(p.get("text", "") for p in contents[0]["parts"])
        answer = self.answer_for(model, query, "{}" if structured else "ok")
        prompt = " ".join(p.get("text", "") for c in contents for p in c["parts"])
        fresh, cached, out = self.usage_counts(system, prompt, answer)
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": fresh + cached, "cachedContentTokenCount": cached,
                              "candidatesTokenCount": out, "totalTokenCount": fresh + cached + out},
            "modelVersion": model, "responseId": f"resp-{len(self.requests)}",
        }, model
