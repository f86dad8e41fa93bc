"""``POST /v1/dispatch`` and the approval and session routes: models, thin routes, error mapping.

A dispatch names its skill, or gives only ``text`` and lets the classifier pick the intent (the
intent's skill per the model-routing file's ``intents`` map, else the same name). Errors map to status
codes once, here: budget 429, not allowlisted 403, invalid parameters 422, unknown approval 404,
a provider chain or a skill that failed 502, a new session past budgets.max_sessions 503, an
approval whose handler is running 409, pending approvals past their cap 429 (Retry-After).

The dispatch and approve routes run under their own deadline, ``request_timeout_s +
dispatch_timeout_s``, which the dispatcher keeps (router/dispatch/deadline.py).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.dispatch import Dispatcher, DispatchResult
from router.errors import (
    ApprovalError,
    ApprovalRunning,
    BudgetExceeded,
    FallbacksExhausted,
    InvalidParameters,
    ProviderError,
    SessionsFull,
    SkillFailed,
    SkillNotAllowed,
    TooManyApprovals,
)
from router.service.models import NON_BLANK, DecisionOut, ErrorResponse, decision_payload
from router.service.service import ClassifierService


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
    decision: DecisionOut | None = None


class SessionResponse(BaseModel):
    session_id: str
    tokens: int
    cost_usd: float
    calls: int
    steps: int
    budget_left: dict[str, Any]


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        403: "the skill is not allowlisted", 404: "approval id unknown, expired or used",
        409: "the approval's handler is running now (it is never run twice)",
        422: "invalid request or parameters",
        429: "a budget would be exceeded (nothing was called), or too many pending approvals (Retry-After)",
        502: "every model of the chain failed, or the skill failed",
        503: "max_dispatch_in_flight reached, or budgets.max_sessions live sessions (Retry-After)",
    }.items()
}
_STATUS: list[tuple[type[Exception], int]] = [
    (BudgetExceeded, 429), (SkillNotAllowed, 403), (InvalidParameters, 422), (ApprovalError, 404),
    (SkillFailed, 502), (FallbacksExhausted, 502), (ProviderError, 502), (SessionsFull, 503),
    (ApprovalRunning, 409), (TooManyApprovals, 429),
]


def _error_body(exc: Exception) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": str(exc), "error": type(exc).__name__}
    if isinstance(exc, BudgetExceeded):
        body.update(budget=exc.budget, limit=exc.limit, used=exc.used)
    elif isinstance(exc, InvalidParameters):
        body["errors"] = exc.errors
    elif isinstance(exc, SkillFailed | ProviderError):
        body["reason"] = exc.reason
    elif isinstance(exc, TooManyApprovals):
        body.update(limit_name=exc.limit_name, limit=exc.limit)
    return body


def _retry_after(exc: Exception) -> dict[str, str] | None:
    """A refusal that clears by itself (SessionsFull) says when; the client's retry policy reads it."""
    if isinstance(exc, SessionsFull | TooManyApprovals):
        return {"Retry-After": str(math.ceil(exc.retry_after))}
    return None


def add_dispatch_routes(app: FastAPI, service: ClassifierService, dispatcher: Dispatcher | None) -> None:
    if dispatcher is None:
        _add_not_configured(app)
        return
    d = dispatcher
    for exc_type, status in _STATUS:
        async def handler(request: Request, exc: Exception, status: int = status) -> Response:
            service.metrics.dispatch.labels(type(exc).__name__).inc()
            return JSONResponse(_error_body(exc), status_code=status, headers=_retry_after(exc))

        app.add_exception_handler(exc_type, handler)

    # The Guard's deadline for the routes that run a dispatch step: the dispatcher plans each step to
    # end within dispatch_timeout_s; request_timeout_s covers the rest (classification, the response).
    limit = service.config.request_timeout_s + d.config.dispatch_timeout_s
    named = (f"its deadline of {limit:g}s (request_timeout_s={service.config.request_timeout_s:g} + "
             f"dispatch_timeout_s={d.config.dispatch_timeout_s:g})")

    def deadline_for(path: str) -> tuple[float, str] | None:
        if path == "/v1/dispatch" or (path.startswith("/v1/approvals/") and path.endswith("/approve")):
            return limit, named
        return None

    service.deadline_for = deadline_for

    @app.post("/v1/dispatch", response_model=DispatchResponse, responses=_ERRORS)
    async def dispatch(body: DispatchRequest) -> Response:
        decision = None
        skill = body.skill
        if skill is None:
            assert body.text is not None  # by DispatchRequest's validator
            decision = await service.classify_one(body.text)
            service.metrics.record([decision])
            skill = None if decision.out_of_scope else d.skill_for_intent(decision.intent)
            if skill is None:
                note = ("out of scope" if decision.out_of_scope
                        else f"intent {decision.intent!r} has no registered skill")
                result = DispatchResult(status="no_skill", session_id=body.session_id, skill=None, note=note)
                return _respond(service, result, decision_payload(decision, None))
        result = await d.adispatch(body.session_id, skill, text=body.text, params=body.params)
        return _respond(service, result, decision_payload(decision, None) if decision else None)

    @app.post("/v1/approvals/{approval_id}/approve", response_model=DispatchResult, responses=_ERRORS)
    async def approve(approval_id: str) -> Response:
        return _respond(service, await d.aapprove(approval_id), None)

    @app.post("/v1/approvals/{approval_id}/reject", responses=_ERRORS)
    async def reject(approval_id: str) -> Response:
        action = d.reject(approval_id)
        return JSONResponse({"status": "rejected", "approval_id": approval_id, "skill": action.skill})

    @app.get("/v1/sessions/{session_id}", response_model=SessionResponse, responses=_ERRORS)
    async def session(session_id: str) -> Response:
        t = d.session_totals(session_id)
        return JSONResponse({"session_id": t.session_id, "tokens": t.tokens, "cost_usd": float(t.cost_usd),
                             "calls": t.calls, "steps": t.steps, "budget_left": t.budget_left})


def _add_not_configured(app: FastAPI) -> None:
    """Without skills the routes stay out of the schema, but say why they are not there."""

    async def not_configured(request: Request) -> Response:
        return JSONResponse({"detail": "dispatch is not configured: start `router serve --skills module:registry "
                                       "[--model-routing models.yaml]`"}, status_code=404)

    for path in ("/v1/dispatch", "/v1/approvals/{approval_id}/approve", "/v1/approvals/{approval_id}/reject",
                 "/v1/sessions/{session_id}"):
        app.add_api_route(path, not_configured, methods=["GET", "POST"], include_in_schema=False)


def _respond(service: ClassifierService, result: DispatchResult, decision: dict[str, Any] | None) -> Response:
    service.metrics.dispatch.labels(result.status).inc()
    service.metrics.dispatch_cost.inc(result.cost_usd)
    if result.fallback_taken:
        service.metrics.dispatch_fallbacks.inc()
    payload = result.model_dump(mode="json")
    payload["decision"] = decision
    return JSONResponse(payload)
