"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, llama.cpp's server).

A structured choice (``ChatRequest.choices``) is sent as OpenAI's strict JSON schema
``{"intent": enum}``; an OpenAI-compatible server takes it per its ``constraint`` (json_schema,
json_object + schema, or a GBNF grammar), and vLLM as ``structured_outputs: {"choice": [...]}``
(``guided_choice`` before v0.12), which answers the bare label.
"""

from __future__ import annotations

from typing import Any

from router.errors import BadResponse, RequestRejected
from router.providers._base import ChatRequest, Completion, Usage, choice_schema, label_grammar
from router.providers._http import HttpAdapter, count, dig, get_ok, key_from_env, post_json

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
        body: dict[str, Any] = {"model": model, "messages": request.chat_messages(),
                                "max_completion_tokens": request.max_tokens}
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
        text = message.get("content")
        if not isinstance(text, str):
            raise BadResponse(self.name, "choices[0].message.content is not a string", reason="malformed")
        usage = data.get("usage")
        parsed = None
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            cached = count(dig(usage, "prompt_tokens_details", "cached_tokens"))
            parsed = Usage(input_tokens=max(0, count(usage["prompt_tokens"]) - cached),
                           output_tokens=count(usage.get("completion_tokens")), cached_input_tokens=cached)
        return self.completion(request, text, parsed, model=str(data.get("model") or model),
                               finish_reason=dig(data, "choices", 0, "finish_reason"), raw=data)

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
