"""Request and response models of the HTTP API (they also define the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.decision import Decision


class ClassifyRequest(BaseModel):
    """Exactly one of ``text`` or ``texts``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="one query")
    texts: list[str] | None = Field(None, description="a batch of queries")
    session_id: str | None = Field(None, max_length=256, description="echoed back; for tracing")
    top_k: int | None = Field(None, ge=1, le=100, description="candidates per Decision (at most the index's)")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


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
