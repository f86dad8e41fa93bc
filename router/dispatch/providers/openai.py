"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, llama.cpp's server)."""

from __future__ import annotations

from typing import Any

import httpx

from router.dispatch.config import ProviderConfig
from router.dispatch.providers.base import ChatRequest, Completion, Usage, estimated_usage
from router.dispatch.providers.http import count, dig, key_from_env, post_json
from router.errors import BadResponse


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


class OpenAIChat:
    """``POST {base_url}/chat/completions``; usage from ``usage`` (cached under prompt_tokens_details)."""

    default_base = "https://api.openai.com/v1"
    key_required = True

    def __init__(self, name: str, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self._http = http
        self._url = (config.base_url or self.default_base).rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        if not self.key_required and self.config.api_key_env is None:
            return {}  # a self-hosted server without auth
        return {"Authorization": f"Bearer {key_from_env(self.name, self.config.api_key_env)}"}

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}]
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        # GPT-5-family models take max_completion_tokens and only the default temperature.
        body: dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": request.max_tokens}
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": request.schema_name, "schema": request.json_schema,
                "strict": strict_schema_ok(request.json_schema)}}
        return body

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        data = await post_json(self._http, self.name, self._url, self._headers(), self.body(model, request), timeout_s)
        message = dig(data, "choices", 0, "message")
        if not isinstance(message, dict):
            raise BadResponse(self.name, "response has no choices[0].message", reason="malformed")
        if message.get("refusal"):
            raise BadResponse(self.name, f"the model refused: {str(message['refusal'])[:200]}", reason="refusal")
        text = message.get("content")
        if not isinstance(text, str):
            raise BadResponse(self.name, "choices[0].message.content is not a string", reason="malformed")
        usage = data.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            cached = count(dig(usage, "prompt_tokens_details", "cached_tokens"))
            parsed = Usage(input_tokens=max(0, count(usage["prompt_tokens"]) - cached),
                           output_tokens=count(usage.get("completion_tokens")), cached_input_tokens=cached)
        else:
            parsed = estimated_usage(request)
        return Completion(text=text, usage=parsed, model=str(data.get("model", model)),
                          finish_reason=dig(data, "choices", 0, "finish_reason"), raw=data)


class OpenAICompatibleChat(OpenAIChat):
    """vLLM, llama.cpp and the like: ``max_tokens``, a temperature, an optional key."""

    default_base = "http://127.0.0.1:8000/v1"
    key_required = False

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        body = super().body(model, request)
        body["max_tokens"] = body.pop("max_completion_tokens")
        body["temperature"] = request.temperature
        if request.json_schema is not None and self.config.structured == "json_object":
            body["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return body
