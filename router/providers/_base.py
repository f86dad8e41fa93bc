"""What every model provider takes and returns, and the one Protocol it implements.

A request may carry ``choices`` ("structured choice"): the answer must be one of these labels.
Adapters constrain decoding with them where their API can (vLLM's choice field, a JSON-schema
enum, a GBNF grammar, llama.cpp's label scoring) and return the chosen label as
``Completion.text``, raising ``BadResponse`` when the answer is not one of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from router.errors import BadResponse

# What a provider adds around each message (role markers, separators): 3-4 tokens on the known
# APIs; this is above all of them.
MESSAGE_FRAMING_TOKENS = 8
# Structured output adds instructions of the provider's own: Anthropic's forced tool call adds a
# system prompt of up to 346 tokens (its documented tool-use overhead); the schema is counted by bytes.
STRUCTURED_OVERHEAD_TOKENS = 512
# The property a structured choice is answered in, where the API answers in JSON.
CHOICE_FIELD = "intent"


@dataclass(frozen=True)
class Tool:
    """A function the model may call: ``parameters`` is its JSON schema (an object schema)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is JSON text, as OpenAI sends it (Anthropic's and Gemini's
    objects are serialised into it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolChoice:
    """auto: the model decides; none: no call; required: some call; tool: the call named ``name``."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class Message:
    """One turn. An assistant turn may carry ``tool_calls``; a ``tool`` turn is a call's result, naming
    the call it answers (``tool_call_id``) and, where known, the function (``name``: Gemini needs it)."""

    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """``system`` is the static part (instructions, schema): adapters mark it cacheable.

    ``choices``: the answer must be one of these labels (structured choice). ``query``: the text
    the request is about (tier 2: the user's message); never sent, it keys scripted answers
    (the memory provider). ``calibration``: the same request with the message content-free, for
    a backend that scores labels and subtracts their prior (llama.cpp's ``logprob`` method);
    others ignore it.
    """

    system: str
    messages: tuple[Message, ...]
    max_tokens: int = 1024
    json_schema: dict[str, Any] | None = None
    schema_name: str = "result"
    temperature: float = 0.0
    choices: tuple[str, ...] | None = None
    query: str | None = None
    calibration: ChatRequest | None = None
    # What an agent's own request carries through the proxy (router/proxy/): its tools, the choice
    # among them, stop sequences and nucleus sampling. Adapters translate them to their API.
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    # The caller's own output cap (an agent's max_tokens through the proxy): the chain then sends
    # min(output_cap, the target's max_tokens). None: the target's.
    output_cap: int | None = None

    def max_input_tokens(self) -> int:
        """An upper bound on the input tokens any provider can bill for this request, reserved before it.

        A byte-level tokenizer's token is at least one byte, so no text costs more tokens than its
        UTF-8 bytes: digits, CJK and code included (an average of 3 bytes a token undercounts them).
        """
        size = len(self.system.encode()) + sum(len(m.content.encode()) for m in self.messages)
        size += sum(len(c.name.encode()) + len(c.arguments.encode()) for m in self.messages for c in m.tool_calls)
        if self.tools:
            size += len(json.dumps([[t.name, t.description, t.parameters] for t in self.tools],
                                   ensure_ascii=False).encode()) + STRUCTURED_OVERHEAD_TOKENS
        tokens = size + MESSAGE_FRAMING_TOKENS * (len(self.messages) + 1)
        schema = self.json_schema if self.json_schema is not None else (
            choice_schema(self.choices) if self.choices is not None else None)
        if schema is not None:
            text = json.dumps(schema, ensure_ascii=False) + self.schema_name
            tokens += len(text.encode()) + STRUCTURED_OVERHEAD_TOKENS
        return tokens

    def chat_messages(self) -> list[dict[str, str]]:
        """The OpenAI-style message list: the system part first."""
        return [{"role": "system", "content": self.system},
                *({"role": m.role, "content": m.content} for m in self.messages)]


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


# Why an answer ended, the same words for every provider: OpenAI's finish_reason values.
Finish = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class Completion:
    """``finish_reason``: the provider's own word; ``finish``: the same, normalised (``Finish``)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # The chosen label's probability when the backend scores labels (llama.cpp logprob); else None.
    confidence: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish: Finish | None = None


# -- streaming --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    """The next piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``index`` (its position in the answer): ``id`` and ``name`` come on its first
    piece (None after), ``arguments`` is the next piece of its JSON text (may be empty)."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class StreamEnd:
    """Always the last event of a stream: the whole answer (text, tool calls, usage, finish)."""

    completion: Completion


StreamEvent = TextDelta | ToolCallDelta | StreamEnd


class Provider(Protocol):
    """One model API or in-process model. Raises only ``ProviderError`` subclasses; never retries by itself.

    ``ping``: whether it is reachable and serving (readiness checks); an adapter without a probe
    endpoint answers True.
    """

    name: str

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion: ...

    def stream(self, model: str, request: ChatRequest, timeout_s: float) -> AsyncIterator[StreamEvent]:
        """The answer as it is generated: deltas, then exactly one ``StreamEnd``. ``timeout_s`` bounds the
        wait for the first event and every gap between two. Closing the iterator early (``aclose``, a
        cancelled consumer) ends the upstream request."""
        ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


def estimated_usage(request: ChatRequest) -> Usage:
    """Charged when a provider leaves out its usage block: the call was billed, so it still counts.

    Nothing can be reconciled, so the reservation stands: the input bound and the whole output cap
    (priced at the dearest input price by ``call_cost``, as cache hits and writes are unknown).
    """
    return Usage(input_tokens=request.max_input_tokens(), output_tokens=request.max_tokens, estimated=True)


def choice_schema(labels: tuple[str, ...]) -> dict[str, Any]:
    """A JSON schema whose only answers are ``{"intent": <one of labels>}``."""
    return {
        "type": "object",
        "properties": {CHOICE_FIELD: {"type": "string", "enum": list(labels)}},
        "required": [CHOICE_FIELD],
        "additionalProperties": False,
    }


def label_grammar(labels: tuple[str, ...]) -> str:
    """A GBNF grammar whose only sentences are the labels."""
    return "root ::= " + " | ".join(json.dumps(label) for label in labels)


def parse_choice_json(backend: str, text: str) -> str:
    """The label of a ``{"intent": label}`` answer; ``BadResponse`` when it is not one."""
    try:
        value = json.loads(text)[CHOICE_FIELD]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadResponse(backend, f"answer is not a JSON object with an {CHOICE_FIELD!r} label: "
                                   f"{text[:200]!r}") from exc
    if not isinstance(value, str):
        raise BadResponse(backend, f"{CHOICE_FIELD!r} is not a string: {value!r}")
    return value


def checked_choice(backend: str, label: str, choices: tuple[str, ...]) -> str:
    if label not in choices:
        raise BadResponse(backend, f"answer {label!r} is not one of the offered labels {list(choices)}")
    return label


async def stream_whole(provider: Provider, model: str, request: ChatRequest,
                       timeout_s: float) -> AsyncIterator[StreamEvent]:
    """The stream of a backend that cannot stream (in-process llama.cpp): the whole answer as one delta
    per part (its text, each tool call), then its ``StreamEnd``."""
    completion = await provider.complete(model, request, timeout_s)
    if completion.text:
        yield TextDelta(completion.text)
    for i, call in enumerate(completion.tool_calls):
        yield ToolCallDelta(i, call.id, call.name, call.arguments)
    yield StreamEnd(completion)
