"""Tier 2: a small self-hosted LLM settles the queries tier 1 escalates.

Backends are model providers of ``router.providers`` (vLLM, OpenAI-compatible servers, in-process
llama.cpp, the memory loopback), called through its ``Chain``; this package keeps the config, the
prompt and the escalator. Importing it loads neither httpx clients nor llama.cpp.
"""

from __future__ import annotations

from router.llm._config import LLMBackendConfig, LLMConfig
from router.llm._prompt import NONE_LABEL, Prompt, PromptBuilder

__all__ = [
    "NONE_LABEL",
    "LLMBackendConfig",
    "LLMConfig",
    "Prompt",
    "PromptBuilder",
]
