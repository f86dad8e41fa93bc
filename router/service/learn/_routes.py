"""``POST /v1/feedback``, ``GET /v1/review``, ``POST /v1/review/{review_id}/approve|reject`` and ``GET
/v1/learning``: thin routes over their serving object (bound when the router is made, as classify's).

They are in the ``max_in_flight`` lane with classify, and behind the API key whenever one is on (the
Guard's rule for every path but the probes). Who is trusted as a person is the credential's call, never
the body's (``_serving.LearnTrust``, ``service/_guard.py``):

- with ``--approver-key-env``: a review decision, ``source: "human"`` (also the default when the body has
  no ``source``) and ``override: true`` need the approver key, as the dispatcher's approvals do; the service
  key gets 403 there (an agent sends ``source: "llm"``). The approver key also opens feedback, the review
  list and the figures without the service key;
- without it: the service key (or anyone, without ``--api-key-env``) is trusted as a person, as approvals
  are under ``--allow-self-approval``;
- without ``--api-key-env`` every learning route answers 403 unless ``--feedback on`` was given on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from router.service._credential import credential_of
from router.service._errors import error_responses
from router.service.learn._protocol import (
    DEFAULT_REVIEW_LIMIT,
    MAX_ID_CHARS,
    MAX_REVIEW_LIMIT,
    FeedbackRequest,
    LearningResponse,
    LearnResultResponse,
    ReviewItemResponse,
    ReviewListResponse,
    feedback_model,
)
from router.service.learn._serving import LearnServing

FEEDBACK, REVIEW, LEARNING = "/v1/feedback", "/v1/review", "/v1/learning"
APPROVE, REJECT = "/v1/review/{review_id}/approve", "/v1/review/{review_id}/reject"
PATHS = (FEEDBACK, REVIEW, APPROVE, REJECT, LEARNING)

_OFF = ("learning over HTTP is off: no --api-key-env and no --feedback on, or the Router was loaded with "
        "learning='off'")
_FEEDBACK_ERRORS = error_responses({
    403: f"{_OFF}; or feedback is off (--feedback off); or source human (the default) or override=true without "
         "the approver key while --approver-key-env is set; or the intent maps to a skill that writes and the "
         "source is not human, or override=true from a source other than human",
    409: "the text is already an example of another intent (the body names both: existing, requested); only "
         "source human with override=true replaces it",
    422: "invalid request (the detail names the field): an unknown intent (named), a text over the index's "
         "limits.max_text_chars, not exactly one of intent and out_of_scope",
    429: "learning.max_per_minute items of this source in the last minute (Retry-After)",
    503: "max_in_flight reached, or the shared log (Redis) unreachable (Retry-After)",
})
_REVIEW_ERRORS = error_responses({
    401: "missing or wrong bearer token (with --approver-key-env: the approver key)",
    403: f"{_OFF}; or the service key while --approver-key-env is set (a decision needs the approver key)",
    404: "review id unknown, or already approved or rejected",
    409: "approving: the text became an example of another intent meanwhile",
    503: "max_in_flight reached, or the shared log (Redis) unreachable (Retry-After)",
})
_READ_ERRORS = error_responses({403: _OFF, 503: "max_in_flight reached (Retry-After)"})
_LIST_ERRORS = error_responses({403: _OFF, 422: f"limit out of range (1 to {MAX_REVIEW_LIMIT:,})",
                                503: "max_in_flight reached (Retry-After)"})

ReviewId: Any = Path(min_length=1, max_length=MAX_ID_CHARS, description="a review id from GET /v1/review")
Limit: Any = Query(DEFAULT_REVIEW_LIMIT, ge=1, le=MAX_REVIEW_LIMIT,
                   description=f"at most this many items, the oldest (1 to {MAX_REVIEW_LIMIT:,})")


def learn_router(serving: LearnServing, max_text_chars: int, intents: Sequence[str]) -> APIRouter:
    """The learning routes; the feedback body model states the index's text limit and intents."""
    router = APIRouter()

    async def feedback(body: FeedbackRequest, request: Request) -> Response:
        """Teach the router that ``text`` is ``intent`` (or out of scope). With ``--approver-key-env``, source
        human (the default) and override need the approver key, and the service key sends source llm; without
        it, the service key (or anyone, without ``--api-key-env``) is trusted as a person."""
        return await serving.feedback(body, credential_of(request.scope))

    feedback.__annotations__["body"] = feedback_model(max_text_chars, intents)
    router.post(FEEDBACK, status_code=202, response_model=LearnResultResponse, responses=_FEEDBACK_ERRORS,
                summary="Teach the router one example")(feedback)

    @router.get(REVIEW, response_model=ReviewListResponse, responses=_LIST_ERRORS)
    async def review(limit: int = Limit) -> Response:
        """The tier-2 answers waiting for a person, oldest first (at most ``limit``), and how many in all."""
        return await serving.review(limit)

    @router.post(APPROVE, response_model=LearnResultResponse, responses=_REVIEW_ERRORS)
    async def approve(request: Request, review_id: str = ReviewId) -> Response:
        """Learn a tier-2 answer as source human. With ``--approver-key-env`` only the approver key may;
        without it, the service key (or anyone, without ``--api-key-env``), as approvals are under
        self-approval."""
        return await serving.approve(review_id, credential_of(request.scope))

    @router.post(REJECT, response_model=ReviewItemResponse, responses=_REVIEW_ERRORS)
    async def reject(request: Request, review_id: str = ReviewId) -> Response:
        """Drop a tier-2 answer. Who may: as for approve."""
        return await serving.reject(review_id, credential_of(request.scope))

    @router.get(LEARNING, response_model=LearningResponse, responses=_READ_ERRORS)
    async def learning() -> Response:
        return await serving.learning()

    return router
