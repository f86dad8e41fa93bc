"""OpenAI-protocol chat backends: vLLM and the llama.cpp server family (or any compatible server).

Both POST ``{url}/chat/completions`` over one shared ``httpx.AsyncClient``; they differ only in
how the answer is constrained to the offered labels and how it is read back. httpx errors are
translated here, at the boundary, into the ``ProviderError`` tree.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from router.errors import BadResponse, ConfigError, ProviderTimeout, ProviderUnavailable, RequestRejected
from router.llm.base import LLMAnswer
from router.llm.config import LLMBackendConfig
from router.llm.prompt import Prompt
from router.redact import redact, register_secret


def _label_schema(labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"intent": {"type": "string", "enum": list(labels)}},
        "required": ["intent"],
        "additionalProperties": False,
    }


def label_grammar(labels: tuple[str, ...]) -> str:
    """A GBNF grammar whose only sentences are the labels."""
    return "root ::= " + " | ".join(json.dumps(label) for label in labels)


class ChatCompletionsClient:
    """Shared request/response handling; subclasses add ``constraint`` and ``parse_label``."""

    def __init__(self, config: LLMBackendConfig, http: httpx.AsyncClient) -> None:
        assert config.url is not None and config.model is not None  # enforced by LLMBackendConfig
        self.name = config.label
        self.model = config.model
        self.config = config
        self._http = http
        self._base = config.url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {self._api_key(config)}"} if config.api_key_env else {}
        self.concurrency = config.max_concurrency

    @staticmethod
    def _api_key(config: LLMBackendConfig) -> str:
        assert config.api_key_env is not None
        key = os.environ.get(config.api_key_env)
        if not key:
            raise ConfigError(f"llm backend {config.label!r}: api_key_env={config.api_key_env!r} is not set "
                              "in the environment")
        register_secret(key)  # masked in any error text that echoes it
        return key

    # -- per-protocol parts ------------------------------------------------------------------
    def constraint(self, prompt: Prompt) -> dict[str, Any]:
        raise NotImplementedError

    def parse_label(self, content: str) -> str:
        return content.strip()

    # -- the call ----------------------------------------------------------------------------
    def body(self, prompt: Prompt) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": prompt.messages,
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
            **self.constraint(prompt),
        }

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            return await self._http.post(f"{self._base}/chat/completions", json=body, headers=self._headers,
                                         timeout=self.config.timeout_s)
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(self.name, f"no answer within timeout_s={self.config.timeout_s}") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, f"{type(exc).__name__}: {exc or 'connection failed'}") from exc

    async def choose(self, prompt: Prompt) -> LLMAnswer:
        response = await self._post(self.body(prompt))
        if response.status_code >= 400:
            detail = redact(response.text[:4000])[:300]  # masked before the cut: no key survives in part
            if response.status_code >= 500 or response.status_code == 429:
                raise ProviderUnavailable(self.name, f"HTTP {response.status_code}: {detail}",
                                          reason=f"http_{response.status_code}")
            raise RequestRejected(self.name, f"HTTP {response.status_code}: {detail}",
                                  reason=f"http_{response.status_code}")
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
            label = self.parse_label(content)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BadResponse(self.name, f"malformed response body: {redact(response.text[:4000])[:200]!r}") from exc
        if label not in prompt.labels:
            raise BadResponse(self.name, f"answer {label!r} is not one of the offered labels {list(prompt.labels)}")
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return LLMAnswer(
            label=label,
            model=str(data.get("model") or self.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )

    async def ping(self) -> bool:
        try:
            response = await self._http.get(f"{self._base}/models", headers=self._headers,
                                            timeout=min(self.config.timeout_s, 2.0))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        """The shared httpx client belongs to the escalator, which closes it."""


class VLLMClient(ChatCompletionsClient):
    """vLLM: ``structured_outputs: {"choice": labels}`` (or ``guided_choice`` before v0.12)."""

    def constraint(self, prompt: Prompt) -> dict[str, Any]:
        labels = list(prompt.labels)
        if self.config.structured == "guided_choice":
            return {"guided_choice": labels}
        return {"structured_outputs": {"choice": labels}}


class OpenAICompatibleClient(ChatCompletionsClient):
    """llama.cpp's server, llama-cpp-python's server, or a remote OpenAI-protocol model."""

    def constraint(self, prompt: Prompt) -> dict[str, Any]:
        schema = _label_schema(prompt.labels)
        if self.config.constraint == "grammar":
            return {"grammar": label_grammar(prompt.labels)}
        if self.config.constraint == "json_object":
            return {"response_format": {"type": "json_object", "schema": schema}}
        # The schema must sit under json_schema.schema: llama.cpp ignores a flat "schema" key there.
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "intent", "strict": True, "schema": schema}}}

    def parse_label(self, content: str) -> str:
        if self.config.constraint == "grammar":
            return content.strip()
        value = json.loads(content)["intent"]
        if not isinstance(value, str):
            raise TypeError("intent is not a string")
        return value
