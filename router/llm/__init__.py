"""Tier 2: a small self-hosted LLM settles the queries tier 1 escalates.

Backends sit behind the ``LLMClient`` Protocol in the ``LLM_CLIENTS`` registry, keyed by the
``backend`` name of their config. Factories import their module on first use, so importing
this package loads neither httpx clients nor llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from router.llm.base import LLMAnswer, LLMClient
from router.llm.config import LLMBackendConfig, LLMConfig
from router.llm.prompt import NONE_LABEL, Prompt, PromptBuilder

ClientFactory = Callable[[LLMBackendConfig, httpx.AsyncClient], LLMClient]


def _vllm(config: LLMBackendConfig, http: httpx.AsyncClient) -> LLMClient:
    from router.llm.http_chat import VLLMClient

    return VLLMClient(config, http)


def _openai_compatible(config: LLMBackendConfig, http: httpx.AsyncClient) -> LLMClient:
    from router.llm.http_chat import OpenAICompatibleClient

    return OpenAICompatibleClient(config, http)


def _llama_cpp(config: LLMBackendConfig, http: httpx.AsyncClient) -> LLMClient:
    from router.llm.llama_inproc import LlamaCppClient

    return LlamaCppClient(config)


def _memory(config: LLMBackendConfig, http: httpx.AsyncClient) -> LLMClient:
    from router.llm.memory import MemoryLLM

    return MemoryLLM(config)


LLM_CLIENTS: dict[str, ClientFactory] = {
    "vllm": _vllm,
    "openai_compatible": _openai_compatible,
    "llama_cpp": _llama_cpp,
    "memory": _memory,
}

__all__ = [
    "LLM_CLIENTS",
    "NONE_LABEL",
    "ClientFactory",
    "LLMAnswer",
    "LLMBackendConfig",
    "LLMClient",
    "LLMConfig",
    "Prompt",
    "PromptBuilder",
]
