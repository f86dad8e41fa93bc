"""``POST /v1/dispatch`` and the approval and session routes: request and response models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from router._decision import Decision
from router._strict import Strict
from router.dispatch import DispatchResult
from router.service._models import NON_BLANK


class DispatchRequest(Strict):
    session_id: str = Field(min_length=1, max_length=256, description="budgets and traces are per session")
    text: str | None = Field(None, min_length=1, max_length=4000, pattern=NON_BLANK,
                             description="the user's message: classified (without `skill`) and extracted from")
    skill: str | None = Field(None, min_length=1, max_length=128, description="skip classification")
    params: dict[str, Any] | None = Field(None, description="skip extraction; validated against the skill's schema")

    @model_validator(mode="after")
    def _something_to_do(self) -> DispatchRequest:
        if self.text is None and (self.skill is None or self.params is None):
            raise ValueError("give `text`, or both `skill` and `params`")
        return self


class DispatchResponse(DispatchResult):
    decision: Decision | None = None


class SessionResponse(BaseModel):
    session_id: str
    tokens: int
    cost_usd: float
    calls: int
    steps: int
    budget_left: dict[str, Any]


class RejectResponse(BaseModel):
    status: str
    approval_id: str
    skill: str
