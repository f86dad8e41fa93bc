"""The learning routes' serving logic: feedback for the Learner of the index serving now, the review queue,
and its figures.

A request holds the index it started on (``ServedIndex``), as classify does: a reload swaps in a new Router
with its own Learner (which replays the log), and the old one is closed, log and all, only once the last
request holding it is done. The Learner's ``submit``, ``approve`` and ``reject`` append to the log and
fsync it, and its ``stats`` and ``pending_review`` go over every entry, so they all run on a worker thread,
never on the event loop. Each outcome of a feedback item is counted in ``router_feedback_total{source,outcome}``.

Trust comes from the credential the Guard found (``service/_guard.py``), never from the body (``LearnTrust``):

- with an approver key (``--approver-key-env``), ``source: "human"`` (the default when a body gives none),
  ``override: true`` and the review decisions need it; the service key may send ``source: "llm"`` only;
- without one, the service key (or anyone, without ``--api-key-env``) is trusted as a person, as approvals
  are under self-approval;
- without ``--api-key-env`` the learning routes are off unless ``--feedback on`` says, on purpose, that
  anyone who reaches the port may teach the router.

The log's ``by`` is the credential (``approver_key:VAR``, ``service_key:VAR``), or None without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse, Response

from router.errors import (
    FeedbackConflict,
    FeedbackNotAllowed,
    FeedbackRateLimited,
    InputError,
    UnknownIntent,
)
from router.service._config import ServeConfig
from router.service._service import ClassifierService
from router.service.learn._protocol import FeedbackRequest

if TYPE_CHECKING:
    from router.learn import Learner
    from router.service._credential import Credential

# Only a Router loaded with learning="off" (a library caller's choice: `router serve` always loads a Learner,
# whose --feedback and --learning say what it takes) has none.
NO_LEARNER = ("learning is off for the index serving now: its Router was loaded with learning='off'. Serve it "
              "with a Learner: `router serve --feedback on` (and --learning review|auto to learn tier 2's answers)")


# `router serve` without --api-key-env and without --feedback on (auto, the default, or off).
NO_API_KEY = ("learning over HTTP is off: no --api-key-env is set, so anyone who reaches the port could teach the "
              "router. Start router serve with --api-key-env VAR (the variable holding the service's bearer token; "
              "feedback is then on by default), or with --feedback on to take feedback from anyone")
FEEDBACK_OFF = "feedback is off (router serve --feedback off): start it with --feedback on to take POST /v1/feedback"


@dataclass(frozen=True)
class LearnTrust:
    """Who the learning routes trust, from `router serve`'s config: ``approver_env`` (``--approver-key-env``;
    None: the service key, or anyone without one, is trusted as a person), ``closed`` (why every learning
    route answers 403, or None), ``feedback_off`` (why feedback alone does)."""

    approver_env: str | None = None
    service_env: str | None = None
    closed: str | None = None
    feedback_off: str | None = None

    @classmethod
    def of(cls, config: ServeConfig) -> LearnTrust:
        # Without an API key, nothing but --feedback on opens them: --feedback off must not leave the review
        # decisions (learned as a person's word) open to anyone either.
        closed = NO_API_KEY if config.feedback is not True and not config.api_key_env else None
        return cls(config.approver_key_env, config.api_key_env, closed,
                   FEEDBACK_OFF if config.feedback is False else None)

    @property
    def open_to_anyone(self) -> bool:
        """Feedback from whoever reaches the port: ``--feedback on`` without ``--api-key-env``."""
        return self.closed is None and self.feedback_off is None and not self.service_env

    def check_feedback(self, body: FeedbackRequest, credential: Credential | None) -> None:
        """Refuse (``FeedbackNotAllowed``, 403) feedback while it is off, and what only a person may send from a
        credential that is not the approvers' when there is an approver key."""
        if self.closed is not None or self.feedback_off is not None:
            raise FeedbackNotAllowed(self.closed or self.feedback_off or "")
        if body.override and body.source != "human":
            # A permission, not a malformed body: only a person may replace what an example says.
            raise FeedbackNotAllowed(f"override=true is for source='human' only (got source={body.source!r})")
        if body.source != "human":
            return  # an agent's word: learned under the LLM's limits (a writes intent refuses it)
        if self.approver_env is None or (credential is not None and credential.kind == "approver"):
            return
        what = ("override=true" if body.override
                else "source 'human'" + ("" if "source" in body.model_fields_set else " (the default)"))
        sent = f"the service key (${self.service_env})" if credential is not None else "no key"
        instead = ('an agent sends "source": "llm"' if not body.override
                   else 'an agent sends "source": "llm" and no override (it cannot replace examples)')
        raise FeedbackNotAllowed(f"{what} needs the approver key (--approver-key-env: ${self.approver_env}), "
                                 f"got {sent}: {instead}, or a person sends the approver key")


def outcome(exc: BaseException) -> str:
    """The ``outcome`` label of a refused feedback item."""
    if isinstance(exc, FeedbackConflict):
        return "conflict"
    if isinstance(exc, UnknownIntent):  # before InputError: it is one
        return "unknown_intent"
    if isinstance(exc, FeedbackNotAllowed):
        return "not_allowed"
    if isinstance(exc, FeedbackRateLimited):
        return "rate_limited"
    if isinstance(exc, InputError):
        return "invalid"
    return "error"  # the log failed (Redis unreachable, a file error): not the item's fault


class LearnServing:
    def __init__(self, service: ClassifierService, trust: LearnTrust) -> None:
        self.service = service
        self.trust = trust

    @staticmethod
    def by(credential: Credential | None) -> str | None:
        """Who the log says gave an item or decided a review: the credential, not a person (None: no key)."""
        return None if credential is None else credential.label

    @asynccontextmanager
    async def _learner(self) -> AsyncIterator[Learner]:
        """The serving index's Learner, held for the request (a reload closes it only after)."""
        if self.trust.closed is not None:
            raise FeedbackNotAllowed(self.trust.closed)
        serving = self.service.serving
        serving.users += 1
        try:
            learner = serving.router.learning
            if learner is None:
                raise FeedbackNotAllowed(NO_LEARNER)
            yield learner
        finally:
            serving.release()

    def _count(self, source: str, result: str) -> None:
        self.service.metrics.feedback.labels(source, result).inc()

    async def feedback(self, body: FeedbackRequest, credential: Credential | None) -> Response:
        try:
            self.trust.check_feedback(body, credential)
            async with self._learner() as learner:
                result = await asyncio.to_thread(
                    learner.submit, body.text, body.intent, out_of_scope=body.out_of_scope, source=body.source,
                    override=body.override, decision_id=body.decision_id, by=self.by(credential))
        except Exception as exc:
            self._count(body.source, outcome(exc))
            raise
        self._count(body.source, result.status)
        return JSONResponse(result.to_dict(), status_code=202)

    async def review(self, limit: int) -> Response:
        """The oldest ``limit`` pending items, and how many are pending in all."""
        async with self._learner() as learner:
            items = await asyncio.to_thread(learner.pending_review)
        return JSONResponse({"items": [item.to_dict() for item in items[:limit]], "total": len(items)})

    async def approve(self, review_id: str, credential: Credential | None) -> Response:
        """A person confirms a tier-2 answer: it is logged as ``source="human"`` and counted so. The Guard let
        only the approver key through when there is one."""
        async with self._learner() as learner:
            try:
                result = await asyncio.to_thread(learner.approve, review_id, self.by(credential))
            except (FeedbackConflict, FeedbackNotAllowed, FeedbackRateLimited, InputError) as exc:
                self._count("human", outcome(exc))
                raise
        self._count("human", result.status)
        return JSONResponse(result.to_dict())

    async def reject(self, review_id: str, credential: Credential | None) -> Response:
        async with self._learner() as learner:
            item = await asyncio.to_thread(learner.reject, review_id, self.by(credential))
        return JSONResponse(item.to_dict())

    async def learning(self) -> Response:
        async with self._learner() as learner:
            stats = await asyncio.to_thread(learner.stats)
        return JSONResponse(stats)
