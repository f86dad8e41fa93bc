"""What every premium-provider adapter takes and returns, and the Protocol it implements."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """``system`` is the static part (instructions, schema): adapters mark it cacheable."""

    system: str
    messages: tuple[Message, ...]
    max_tokens: int = 1024
    json_schema: dict[str, Any] | None = None
    schema_name: str = "result"
    temperature: float = 0.0

    def estimated_input_tokens(self) -> int:
        """An upper estimate (3 bytes a token) used to reserve budget before the call."""
        text = self.system + "".join(m.content for m in self.messages)
        if self.json_schema is not None:
            text += str(self.json_schema)
        return math.ceil(len(text.encode("utf-8")) / 3) + 8 * (len(self.messages) + 1)


@dataclass(frozen=True)
class Usage:
    """Normalised token counts: ``input_tokens`` excludes cache reads and cache writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False  # the provider sent no usage block; counts are our upper estimate

    @property
    def total(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class Provider(Protocol):
    """One premium API. Raises only ``ProviderError`` subclasses; never retries by itself."""

    name: str

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion: ...


def estimated_usage(request: ChatRequest, text: str) -> Usage:
    """Charged when a provider leaves out its usage block: the call was billed, so it still counts."""
    return Usage(
        input_tokens=request.estimated_input_tokens(),
        output_tokens=math.ceil(len(text.encode("utf-8")) / 3) + 1,
        estimated=True,
    )
