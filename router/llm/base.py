"""The LLM client Protocol: answer one narrow question, which of these labels fits the query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from router.llm.prompt import Prompt


@dataclass(slots=True)
class LLMAnswer:
    label: str  # one of Prompt.labels
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # The label's probability when the backend scores labels (log-likelihood); else None.
    confidence: float | None = None


class LLMClient(Protocol):
    """A tier-2 backend. ``choose`` raises a ``ProviderError`` subclass on any failure."""

    name: str
    model: str
    concurrency: int  # calls in flight at once; more wait for a slot

    async def choose(self, prompt: Prompt) -> LLMAnswer: ...

    async def ping(self) -> bool:
        """True when the backend is reachable and serving (used by readiness checks)."""
        ...

    async def aclose(self) -> None: ...
