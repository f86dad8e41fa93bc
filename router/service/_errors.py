"""The one exception -> HTTP status table of every route, and the error bodies.

``InputError`` and a request that fails validation answer 422 ``{"detail": ...}``. The dispatcher's
errors add ``"error"`` (the exception's name) and their own fields, and are counted in
``router_dispatch_total`` under that name: budget 429, not allowlisted 403, invalid parameters 422,
unknown approval 404, a provider chain or a skill that failed 502, a new session past
budgets.max_sessions 503, the shared state unreachable 503, an approval whose handler is running 409,
pending approvals past their cap 429. A refusal that clears by itself (SessionsFull, TooManyApprovals,
StateUnavailable) says when (Retry-After).

The learner's refusals (router/learn/) name their class in ``"error"`` too: a contradicting example 409
(with ``existing`` and ``requested``, the intent an example already gives the text and the one asked
for), an unknown intent 422, a source that may not teach this 403, ``learning.max_per_minute`` 429
(Retry-After, with ``source`` and ``limit``), an unknown or decided review id 404.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from router.errors import (
    ApprovalError,
    ApprovalRunning,
    BudgetExceeded,
    DispatchError,
    FallbacksExhausted,
    FeedbackConflict,
    FeedbackNotAllowed,
    FeedbackRateLimited,
    InputError,
    InvalidParameters,
    LearningError,
    ProviderError,
    ReviewError,
    SessionsFull,
    SkillFailed,
    SkillNotAllowed,
    StateUnavailable,
    TooManyApprovals,
    UnknownIntent,
)
from router.service._metrics import Metrics
from router.service._models import ErrorResponse

# Starlette picks the handler of the most specific class in an exception's MRO, so subclasses
# (ApprovalRunning under ApprovalError, InvalidParameters beside InputError) get their own rows.
STATUS: dict[type[Exception], int] = {
    InputError: 422,
    BudgetExceeded: 429,
    SkillNotAllowed: 403,
    InvalidParameters: 422,
    ApprovalError: 404,
    SkillFailed: 502,
    FallbacksExhausted: 502,
    ProviderError: 502,
    SessionsFull: 503,
    ApprovalRunning: 409,
    TooManyApprovals: 429,
    StateUnavailable: 503,
    FeedbackConflict: 409,
    UnknownIntent: 422,
    FeedbackNotAllowed: 403,
    FeedbackRateLimited: 429,
    ReviewError: 404,
}


FEEDBACK_PATH = "/v1/feedback"
LEARN_PREFIXES = (FEEDBACK_PATH, "/v1/review", "/v1/learning")

# What the Guard (_guard.py) and the request validation answer on every route, before its own logic runs.
GUARDED = {
    400: "body is not decodable (e.g. not UTF-8)",
    401: "missing or wrong bearer token",
    408: "body not received within body_timeout_s (the connection is closed)",
    413: "body over max_body_bytes",
    422: "invalid request (the detail names the field)",
    504: "request_timeout_s exceeded (dispatch routes: plus dispatch_timeout_s)",
}


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route: the Guard's statuses, then the route's own (which win),
    each with the error body's model."""
    return {code: {"model": ErrorResponse, "description": text} for code, text in {**GUARDED, **descriptions}.items()}


def error_body(exc: Exception) -> dict[str, Any]:
    if not isinstance(exc, DispatchError | ProviderError | LearningError):
        return {"detail": str(exc)}
    body: dict[str, Any] = {"detail": str(exc), "error": type(exc).__name__}
    if isinstance(exc, BudgetExceeded):
        body.update(budget=exc.budget, limit=exc.limit, used=exc.used)
    elif isinstance(exc, InvalidParameters):
        body["errors"] = exc.errors
    elif isinstance(exc, SkillFailed | ProviderError):
        body["reason"] = exc.reason
    elif isinstance(exc, TooManyApprovals):
        body.update(limit_name=exc.limit_name, limit=exc.limit)
    elif isinstance(exc, StateUnavailable):
        body["backend"] = exc.backend
    elif isinstance(exc, FeedbackConflict):
        body.update(existing=exc.existing, requested=exc.requested)
    elif isinstance(exc, FeedbackRateLimited):
        body.update(source=exc.source, limit=exc.limit)
    return body


def _retry_after(exc: Exception) -> dict[str, str] | None:
    """A refusal that clears by itself says when; the client's retry policy reads it."""
    if isinstance(exc, SessionsFull | TooManyApprovals | StateUnavailable | FeedbackRateLimited):
        return {"Retry-After": str(math.ceil(exc.retry_after))}
    return None


def _source_of(body: Any) -> str:
    """A refused feedback body's ``source`` label: one of the two sources, else ``invalid`` (bounded labels)."""
    source = body.get("source", "human") if isinstance(body, dict) else "invalid"
    return source if source in ("human", "llm") else "invalid"


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    async def known(request: Request, exc: Exception) -> Response:
        # A learning route's StateUnavailable (the shared log) is no dispatch outcome.
        if isinstance(exc, DispatchError | ProviderError) and not request.url.path.startswith(LEARN_PREFIXES):
            metrics.dispatch.labels(type(exc).__name__).inc()
        status = next(STATUS[t] for t in type(exc).__mro__ if t in STATUS)
        return JSONResponse(error_body(exc), status_code=status, headers=_retry_after(exc))

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path == FEEDBACK_PATH:  # router_feedback_total counts the bodies refused here too
            metrics.feedback.labels(_source_of(exc.body), "invalid").inc()
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    for exc_type in STATUS:
        app.add_exception_handler(exc_type, known)
    app.add_exception_handler(RequestValidationError, invalid_request)
