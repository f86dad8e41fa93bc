"""Premium-provider adapters, keyed by the ``kind`` of a model-routing file's provider entry."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from router.dispatch.config import ProviderConfig
from router.dispatch.providers.anthropic import AnthropicMessages
from router.dispatch.providers.base import ChatRequest, Completion, Message, Provider, Usage
from router.dispatch.providers.gemini import GeminiGenerate
from router.dispatch.providers.openai import OpenAIChat, OpenAICompatibleChat
from router.errors import ConfigError
from router.redact import register_secret

ProviderFactory = Callable[[str, ProviderConfig, httpx.AsyncClient], Provider]

PROVIDERS: dict[str, ProviderFactory] = {
    "openai": OpenAIChat,
    "anthropic": AnthropicMessages,
    "gemini": GeminiGenerate,
    "openai_compatible": OpenAICompatibleChat,
}


def build_provider(name: str, config: ProviderConfig, http: httpx.AsyncClient) -> Provider:
    try:
        factory = PROVIDERS[config.kind]
    except KeyError:
        raise ConfigError(f"providers.{name}.kind: unknown kind {config.kind!r}; known: {sorted(PROVIDERS)}") from None
    # Every configured key is masked in error text from the start, even one this provider never sends.
    register_secret(os.environ.get(config.api_key_env) if config.api_key_env else None)
    return factory(name, config, http)


__all__ = ["PROVIDERS", "ChatRequest", "Completion", "Message", "Provider", "Usage", "build_provider"]
