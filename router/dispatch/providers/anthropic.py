"""Anthropic messages API, with prompt-cache markers on the static system and tool part."""

from __future__ import annotations

import json
from typing import Any

import httpx

from router.dispatch.config import ProviderConfig
from router.dispatch.providers.base import ChatRequest, Completion, Usage, estimated_usage
from router.dispatch.providers.http import count, key_from_env, post_json
from router.errors import BadResponse

API_VERSION = "2023-06-01"
_CACHE = {"type": "ephemeral"}


class AnthropicMessages:
    """``POST {base_url}/v1/messages``. Structured output is a forced tool call whose input is the answer."""

    def __init__(self, name: str, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self._http = http
        self._url = (config.base_url or "https://api.anthropic.com").rstrip("/") + "/v1/messages"

    def _headers(self) -> dict[str, str]:
        key = key_from_env(self.name, self.config.api_key_env)
        return {"x-api-key": key, "anthropic-version": API_VERSION}

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            # The static part is byte-identical across calls; the marker caches it (reads bill at 10%).
            "system": [{"type": "text", "text": request.system, "cache_control": _CACHE}],
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.json_schema is not None:
            body["tools"] = [{"name": request.schema_name, "description": "Record the answer.",
                              "input_schema": request.json_schema, "cache_control": _CACHE}]
            body["tool_choice"] = {"type": "tool", "name": request.schema_name}
        return body

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        data = await post_json(self._http, self.name, self._url, self._headers(), self.body(model, request), timeout_s)
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise BadResponse(self.name, "response has no content list", reason="malformed")
        if request.json_schema is not None:
            tool = next((b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"), None)
            if tool is None or not isinstance(tool.get("input"), dict):
                raise BadResponse(self.name, f"no tool_use block named {request.schema_name!r} in the answer",
                                  reason="malformed")
            text = json.dumps(tool["input"])
        else:
            text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        usage = data.get("usage")
        if isinstance(usage, dict) and "input_tokens" in usage:
            parsed = Usage(input_tokens=count(usage["input_tokens"]), output_tokens=count(usage.get("output_tokens")),
                           cached_input_tokens=count(usage.get("cache_read_input_tokens")),
                           cache_write_tokens=count(usage.get("cache_creation_input_tokens")))
        else:
            parsed = estimated_usage(request)
        return Completion(text=text, usage=parsed, model=str(data.get("model", model)),
                          finish_reason=data.get("stop_reason"), raw=data)
