"""What a dispatch step returns (also the HTTP response body of ``POST /v1/dispatch``)."""

from __future__ import annotations

from typing import Any, Literal

from router._strict import Strict
from router.dispatch._caller import CallResult


class CallSummary(Strict):
    stage: str
    provider: str
    model: str
    attempts: int
    # Metered over the stage's whole chain: the answer, plus attempts that timed out once sent
    # (charged at their reservation, since the provider may bill them). ``provider``/``model``: who answered.
    tokens: int
    cost_usd: float
    fallback_from: str | None = None

    @classmethod
    def of(cls, stage: str, call: CallResult) -> CallSummary:
        return cls(stage=stage, provider=call.provider, model=call.model, attempts=len(call.attempts),
                   tokens=call.spent_tokens, cost_usd=float(call.spent_cost), fallback_from=call.fallback_from)


class DispatchResult(Strict):
    status: Literal["ok", "pending_approval", "no_skill"]
    session_id: str
    skill: str | None
    params: dict[str, Any] | None = None
    result: Any = None
    reply: str | None = None
    approval_id: str | None = None
    calls: list[CallSummary] = []
    tokens: int = 0
    cost_usd: float = 0.0
    fallback_taken: bool = False
    note: str | None = None
