"""What every premium-provider adapter takes and returns, and the Protocol it implements."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# What a provider adds around each message (role markers, separators): 3-4 tokens on the known
# APIs; this is above all of them.
MESSAGE_FRAMING_TOKENS = 8
# Structured output adds instructions of the provider's own: Anthropic's forced tool call adds a
# system prompt of up to 346 tokens (its documented tool-use overhead); the schema is counted by bytes.
STRUCTURED_OVERHEAD_TOKENS = 512


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

    def max_input_tokens(self) -> int:
        """An upper bound on the input tokens any provider can bill for this request, reserved before it.

        A byte-level tokenizer's token is at least one byte, so no text costs more tokens than its
        UTF-8 bytes: digits, CJK and code included (an average of 3 bytes a token undercounts them).
        """
        size = len(self.system.encode()) + sum(len(m.content.encode()) for m in self.messages)
        tokens = size + MESSAGE_FRAMING_TOKENS * (len(self.messages) + 1)
        if self.json_schema is not None:
            schema = json.dumps(self.json_schema, ensure_ascii=False) + self.schema_name
            tokens += len(schema.encode()) + STRUCTURED_OVERHEAD_TOKENS
        return tokens


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


def estimated_usage(request: ChatRequest) -> Usage:
    """Charged when a provider leaves out its usage block: the call was billed, so it still counts.

    Nothing can be reconciled, so the reservation stands: the input bound and the whole output cap
    (priced at the dearest input price by ``call_cost``, as cache hits and writes are unknown).
    """
    return Usage(input_tokens=request.max_input_tokens(), output_tokens=request.max_tokens, estimated=True)
