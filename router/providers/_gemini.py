"""Google Gemini generateContent (Generative Language API)."""

from __future__ import annotations

from typing import Any

from router.errors import BadResponse
from router.providers._base import ChatRequest, Completion, Usage, choice_schema
from router.providers._http import HttpAdapter, count, dig, key_from_env, post_json


class GeminiGenerate(HttpAdapter):
    """``POST {base_url}/v1beta/models/{model}:generateContent``; JSON answers via responseJsonSchema (a
    structured choice as ``{"intent": enum}``)."""

    default_base = "https://generativelanguage.googleapis.com"

    def _headers(self) -> dict[str, str]:
        key = key_from_env(self.name, self.config.api_key_env)
        return {"x-goog-api-key": key}

    def body(self, request: ChatRequest) -> dict[str, Any]:
        config: dict[str, Any] = {"temperature": request.temperature, "maxOutputTokens": request.max_tokens}
        schema = choice_schema(request.choices) if request.choices is not None else request.json_schema
        if schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = schema
        return {
            "systemInstruction": {"parts": [{"text": request.system}]},
            "contents": [{"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
                         for m in request.messages],
            "generationConfig": config,
        }

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
        meta = data.get("usageMetadata")
        parsed = None
        if isinstance(meta, dict) and "promptTokenCount" in meta:
            cached = count(meta.get("cachedContentTokenCount"))
            # Thinking tokens are billed at the output price.
            output = count(meta.get("candidatesTokenCount")) + count(meta.get("thoughtsTokenCount"))
            parsed = Usage(input_tokens=max(0, count(meta["promptTokenCount"]) - cached), output_tokens=output,
                           cached_input_tokens=cached)
        return self.completion(request, text, parsed, model=str(data.get("modelVersion", model)),
                               finish_reason=dig(data, "candidates", 0, "finishReason"), raw=data)
