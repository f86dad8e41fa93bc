"""The Decision: what the router concluded about one query, and how."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

TIER_RULES = "rules"
TIER_STATIC = "static"
TIER_EMBEDDING = "embedding"
TIER_LLM = "llm"

# Decision ids: a random prefix per process and a counter, so ids are unique across processes and
# replicas at a fraction of a uuid4's cost (the static tier answers in tens of µs).
_ID_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def _reseed() -> None:
    """A forked child (gunicorn --preload, multiprocessing's fork) gets its own prefix: ids never repeat."""
    global _ID_PREFIX, _COUNTER
    _ID_PREFIX, _COUNTER = os.urandom(6).hex(), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def next_decision_id() -> str:
    return f"{_ID_PREFIX}{next(_COUNTER):x}"


@dataclass(slots=True)
class LLMCall:
    """What tier 2 spent on a query; ``fallback_from`` lists earlier backends that failed, and why."""

    backend: str
    model: str
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    fallback_from: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Candidate:
    intent: str
    score: float  # the head's probability (1.0 for a rule hit)
    similarity: float | None = None  # to the nearest example of this intent


@dataclass(slots=True)
class Decision:
    """``intent`` is set when accepted, or carried as the best guess when ``escalate`` is true.

    ``out_of_scope`` means the query is confidently none of the intents. ``escalate`` means
    tier 1 was not sure: a later tier (or the caller) should settle it. ``degraded`` means a
    later tier was needed but unavailable (``degraded_reason`` says why); the answer is then
    tier 1's best guess and ``escalate`` stays true.
    """

    intent: str | None
    out_of_scope: bool
    confidence: float
    tier: str
    escalate: bool
    candidates: list[Candidate]
    slots: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    latency_us: dict[str, float] = field(default_factory=dict)
    skill: str | None = None
    degraded: bool = False
    degraded_reason: str | None = None
    llm: LLMCall | None = None
    # Names this Decision: feedback (POST /v1/feedback ``decision_id``) says which one it corrects.
    id: str = ""

    @property
    def accepted(self) -> bool:
        """True when the router answered with an intent it is confident of."""
        return self.intent is not None and not self.escalate and not self.out_of_scope

    def to_dict(self) -> dict[str, Any]:
        """The Decision as plain JSON types: the one shape, also the HTTP service's (``DECISION``)."""
        data: dict[str, Any] = DECISION.dump_python(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The inverse of ``to_dict``; also reads the HTTP service's Decision payloads.

        Keys it does not know are ignored, so a newer server's payload still parses; a missing
        required key raises TypeError. Lists and dicts are copied, never shared with ``data``.
        """
        try:
            return DECISION.validate_python(data)
        except ValidationError as exc:
            missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
            if missing:
                raise TypeError(f"Decision.from_dict: missing required key(s): {', '.join(missing)}") from None
            raise


# The one serialisation of a Decision: to_dict/from_dict, the HTTP responses and their OpenAPI
# schema, the client and the bench all go through it. Unknown keys are ignored (pydantic's default
# for a stdlib dataclass), so a newer server's payload still parses.
DECISION: TypeAdapter[Decision] = TypeAdapter(Decision)
