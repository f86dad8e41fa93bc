"""Request and response models of the HTTP API (they also define the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from router.decision import Decision

# At least one character that is not blank in any regex dialect that reads this pattern: JSON Schema
# clients (ECMA: \ufeff is space, \x85 is not), pydantic-core (Rust, Unicode White_Space) and
# Python's str.strip() (also \x1c-\x1f). Plain \S disagreed across them, and schemathesis found it.
NON_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"


class ClassifyRequest(BaseModel):
    """Exactly one of ``text`` or ``texts``. Served as ``request_model(...)``, which adds the limits."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]})
    text: str | None = None
    texts: list[str] | None = None
    session_id: str | None = None
    top_k: int | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


def request_model(max_text_chars: int, max_batch: int) -> type[ClassifyRequest]:
    """ClassifyRequest with the index's limits in its schema, so the OpenAPI document states them.

    Fields are plain types with a default of None (not ``X | None``): an explicit null is refused,
    and an error names the field alone rather than each branch of a union.
    """
    text: Any = Annotated[str, Field(min_length=1, max_length=max_text_chars, pattern=NON_BLANK)]
    return create_model(
        "ClassifyRequest", __base__=ClassifyRequest,
        text=(text, Field(None, description=f"one query, at most {max_text_chars} characters")),
        texts=(list[text], Field(None, min_length=1, max_length=max_batch,
                                 description=f"a batch of at most {max_batch} queries")),
        session_id=(str, Field(None, max_length=256, description="echoed back; for tracing")),
        top_k=(int, Field(None, ge=1, le=100, description="candidates per Decision (at most the index's)")),
    )


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    index: str
    encoder_warm: bool
    draining: bool
    llm: dict[str, Any]


class CandidateOut(BaseModel):
    intent: str
    score: float
    similarity: float | None = None


class LLMCallOut(BaseModel):
    backend: str
    model: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    fallback_from: list[str]


class DecisionOut(BaseModel):
    intent: str | None
    out_of_scope: bool
    confidence: float
    tier: str
    escalate: bool
    candidates: list[CandidateOut]
    slots: dict[str, str]
    flags: list[str]
    latency_us: dict[str, float]
    skill: str | None
    degraded: bool
    degraded_reason: str | None
    llm: LLMCallOut | None


class ClassifyResponse(BaseModel):
    decisions: list[DecisionOut]
    session_id: str | None = None


class ErrorResponse(BaseModel):
    detail: Any


def decision_payload(d: Decision, top_k: int | None) -> dict[str, Any]:
    """A Decision as plain JSON types, faster than dataclasses.asdict (it copies deeply)."""
    cands = d.candidates if top_k is None else d.candidates[:top_k]
    llm = d.llm
    return {
        "intent": d.intent,
        "out_of_scope": d.out_of_scope,
        "confidence": d.confidence,
        "tier": d.tier,
        "escalate": d.escalate,
        "candidates": [{"intent": c.intent, "score": c.score, "similarity": c.similarity} for c in cands],
        "slots": d.slots,
        "flags": d.flags,
        "latency_us": d.latency_us,
        "skill": d.skill,
        "degraded": d.degraded,
        "degraded_reason": d.degraded_reason,
        "llm": None if llm is None else {
            "backend": llm.backend, "model": llm.model, "latency_ms": llm.latency_ms,
            "prompt_tokens": llm.prompt_tokens, "completion_tokens": llm.completion_tokens,
            "cached_tokens": llm.cached_tokens, "fallback_from": llm.fallback_from,
        },
    }
