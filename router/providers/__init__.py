"""The one model-call layer: providers behind one Protocol, one HTTP boundary, one fallback chain.

Tier 2 (``router.llm``) and the skill dispatcher (``router.dispatch``) both call models through
it. ``PROVIDERS`` maps a config's ``kind`` to a factory ``(name, ProviderConfig, HttpClients) ->
Provider``; each factory imports its adapter's module on first use, so importing this package
loads neither an adapter nor llama.cpp. Calls run on the caller's event loop, over one shared
``httpx.AsyncClient`` per loop (``HttpClients``). Every provider also streams (``Provider.stream``:
deltas, then one ``StreamEnd``), and ``Chain.open_stream`` falls back along a chain until one begins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from router._registry import Registry
from router._settings import secret
from router.providers._base import (
    ChatRequest,
    Completion,
    Finish,
    Message,
    Provider,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    stream_whole,
)
from router.providers._breaker import BreakerConfig, Breakers, CircuitBreaker, LocalBreakers
from router.providers._chain import Attempt, AttemptInfo, Chain, ChainResult, Meter, Target
from router.providers._chain_stream import ChainStream
from router.providers._config import ProviderConfig, RetryConfig
from router.providers._deadline import Deadline

if TYPE_CHECKING:
    from router.providers._http import HttpClients, parse_retry_after

# httpx (about 100 ms to import) loads with the first HTTP client, not with `import router`.
_LAZY = {"HttpClients": "router.providers._http", "parse_retry_after": "router.providers._http"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router.providers' has no attribute {name!r}")


log = logging.getLogger("router.providers")

ProviderFactory = Callable[[str, ProviderConfig, "HttpClients"], Provider]


def _openai(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._openai import OpenAIChat

    return OpenAIChat(name, config, http)


def _openai_compatible(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._openai import OpenAICompatibleChat

    return OpenAICompatibleChat(name, config, http)


def _vllm(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._openai import VLLMChat

    return VLLMChat(name, config, http)


def _anthropic(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._anthropic import AnthropicMessages

    return AnthropicMessages(name, config, http)


def _gemini(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._gemini import GeminiGenerate

    return GeminiGenerate(name, config, http)


def _llama_cpp(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._llama_cpp import LlamaCpp

    return LlamaCpp(name, config)


def _memory(name: str, config: ProviderConfig, http: HttpClients) -> Provider:
    from router.providers._memory import MemoryProvider

    return MemoryProvider(name, config)


PROVIDERS: Registry[ProviderFactory] = Registry("model provider", "providers.<name>.kind", {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
    "openai_compatible": _openai_compatible,
    "vllm": _vllm,
    "llama_cpp": _llama_cpp,
    "memory": _memory,
})


def build_provider(name: str, config: ProviderConfig, clients: HttpClients, field: str | None = None) -> Provider:
    """The provider ``config.kind`` names; ``field`` names the config key in the error for an unknown kind."""
    factory = PROVIDERS.get(config.kind, field or f"providers.{name}.kind")
    # Read once here so the key is masked in error text from the start, even one this provider never
    # sends; an unset one fails each call with RequestRejected(no_key), so a fallback still serves.
    if config.api_key_env and secret(config.api_key_env) is None:
        log.warning("provider %s: api_key_env=%r is not set in the environment; its calls will be refused "
                    "(no_key)", name, config.api_key_env)
    return factory(name, config, clients)


__all__ = [
    "PROVIDERS",
    "Attempt",
    "AttemptInfo",
    "BreakerConfig",
    "Breakers",
    "ChatRequest",
    "Chain",
    "ChainResult",
    "ChainStream",
    "CircuitBreaker",
    "Completion",
    "Deadline",
    "Finish",
    "HttpClients",
    "LocalBreakers",
    "Message",
    "Meter",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "RetryConfig",
    "StreamEnd",
    "StreamEvent",
    "Target",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "build_provider",
    "parse_retry_after",
    "stream_whole",
]
