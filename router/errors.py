"""The one error tree of tiered-router.

Every error the library raises on purpose is a ``RouterError``; vendor
exceptions (ONNX Runtime, FAISS, YAML, pydantic) are translated at the
boundary so callers catch one family::

    RouterError
    ├── ConfigError            bad YAML, unknown key, invalid value, bad intent set
    │   └── MissingDependency  an optional extra is not installed; names what to pip install
    ├── InputError             a query the router refuses (empty, not a string, too long,
    │                          batch too large); also a ValueError
    │   └── BadChatRequest     a proxied chat request (/v1/chat/completions, /v1/messages) the proxy
    │       │                  refuses; ``param`` names the field, ``code`` says what (400)
    │       └── UnknownModel   ``model`` is neither "auto" nor a configured model (404, code model_not_found)
    ├── ModelError             model package missing, file hash mismatch, export failure
    ├── IndexLoadError         no index where one was expected, unreadable files
    │   ├── StaleIndexError    manifest disagrees with the configured encoder or intents
    │   └── LearnLogError      the learned-examples log is unreadable, or one of its whole lines is invalid
    ├── ProviderError          a model backend (tier-2 LLM, premium provider) failed one call
    │   ├── ProviderTimeout    no answer within the per-call timeout              (retryable)
    │   ├── ProviderUnavailable  connection refused or dropped, HTTP 5xx/529      (retryable)
    │   │   └── RateLimited    HTTP 429; ``retry_after`` when the provider said   (retryable)
    │   ├── BadResponse        malformed body, missing answer, answer outside the labels
    │   ├── RequestRejected    the provider refused the request itself (400/401/403, quota)
    │   ├── CircuitOpen        the backend's circuit breaker is open; the call was not made
    │   └── FallbacksExhausted every model of a stage's fallback chain failed; ``errors`` holds each
    ├── DispatchError          the skill dispatcher refused or could not finish a step
    │   ├── BudgetExceeded     a session/hourly budget would be exceeded; the call was not made
    │   ├── SessionsFull       max_sessions live sessions: a new one is refused (503, ``retry_after``)
    │   ├── SkillNotAllowed    the skill is not in the allowlist (registry)
    │   ├── InvalidParameters  extracted or given parameters fail the skill's schema; also a ValueError
    │   ├── ApprovalError      unknown, expired or already used approval id
    │   │   ├── ApprovalRunning   its handler is running now (a second approve would run it twice)
    │   │   └── TooManyApprovals  a session's (or every session's) pending-approval cap is reached
    │   ├── SkillFailed        the handler raised, or its result failed the schema/freshness check
    │   └── StateUnavailable   the shared state (Redis) cannot be reached: budgets fail closed, nothing
    │                          is sent unmetered (503, ``retry_after``)
    ├── LearningError          feedback the learner refused (router.learn, POST /v1/feedback, the review queue)
    │   ├── FeedbackConflict   the text is already an example of another intent (409); ``existing``, ``requested``
    │   ├── UnknownIntent      the intent is not one of the index's (422); also an InputError
    │   ├── FeedbackNotAllowed this source may not teach this (403): feedback off, or a ``writes`` intent
    │   │                      from a source other than ``human``
    │   ├── FeedbackRateLimited learning.max_per_minute reached for that source (429, ``retry_after``)
    │   └── ReviewError        an unknown or already decided review id (404)
    └── ServiceError           the HTTP client (``router.client``): the service answered 4xx/5xx, or no answer;
        │                      ``status`` (None without an answer), ``detail``, ``error``, ``retry_after``
        ├── ServiceInputError  400/413/422: the request was refused as invalid; also an InputError
        ├── ServiceAuthError   401/403: bearer token missing or wrong
        ├── ServiceUnavailable 503 (Retry-After), a generic 429, connection refused or dropped
        │   └── ServiceTimeout no answer within the client's timeout, or 504 (request_timeout_s)
        └── ServiceDispatchError  /v1/dispatch refused or failed a step (403/422/429/502/503); also a
                               DispatchError; ``error`` names the server's class, e.g. BudgetExceeded

A ``ProviderError`` carries ``backend`` (which one failed), ``reason`` (a short code such as
``timeout`` or ``http_500``) so a degraded Decision can say why, ``retryable`` (whether the
dispatcher may try the same model again) and ``retry_after`` (seconds, when the provider said).
Its message, like a ``SkillFailed``'s, has secrets masked (``router.redact``): configured keys and
anything shaped like a credential never reach a trace, a log or an error body.

A ``ServiceError`` is what ``router.client`` raises for the HTTP service: its message carries the
status code and the server's detail; other 5xx and unexpected 4xx raise ``ServiceError`` itself.

Messages name the parameter and the offending value, and say how to fix it.
"""

from __future__ import annotations

import math
from typing import Any

from router._redact import redact

__all__ = [
    "ConfigError",
    "MissingDependency",
    "IndexLoadError",
    "InputError",
    "BadChatRequest",
    "UnknownModel",
    "ModelError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "BadResponse",
    "RequestRejected",
    "CircuitOpen",
    "FallbacksExhausted",
    "RateLimited",
    "DispatchError",
    "BudgetExceeded",
    "SessionsFull",
    "SkillNotAllowed",
    "InvalidParameters",
    "ApprovalError",
    "ApprovalRunning",
    "TooManyApprovals",
    "SkillFailed",
    "StateUnavailable",
    "LearningError",
    "FeedbackConflict",
    "UnknownIntent",
    "FeedbackNotAllowed",
    "FeedbackRateLimited",
    "ReviewError",
    "LearnLogError",
    "RouterError",
    "ServiceAuthError",
    "ServiceDispatchError",
    "ServiceError",
    "ServiceInputError",
    "ServiceTimeout",
    "ServiceUnavailable",
    "StaleIndexError",
]


class RouterError(Exception):
    """Base of every error tiered-router raises on purpose."""


class ConfigError(RouterError):
    """A configuration or intent-set file is invalid."""


class MissingDependency(ConfigError):
    """An optional extra (``[server]``, ``[bench]``, ``[export]``...) is needed and not installed."""


class InputError(RouterError, ValueError):
    """A query or batch the router refuses to classify."""


class BadChatRequest(InputError):
    """A chat request the proxy refuses: ``param`` is the field (a dotted path such as ``messages.2.content``),
    ``code`` a short word (``missing``, ``invalid_type``, ``too_long``, ``empty``...). HTTP ``status``: 400."""

    status = 400

    def __init__(self, param: str | None, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.code = param, code


class UnknownModel(BadChatRequest):
    """``model`` names no configured model (nor ``auto``): 404 ``model_not_found``, as OpenAI answers."""

    status = 404

    def __init__(self, model: str, known: list[str]) -> None:
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        super().__init__("model", f"model: {model!r} is not served here; use \"auto\" or one of: {shown} "
                                  "(GET /v1/models)", "model_not_found")
        self.model = model


class ModelError(RouterError):
    """An encoder model is missing, corrupt or cannot be loaded."""


class IndexLoadError(RouterError):
    """A built index is missing or unreadable."""


class StaleIndexError(IndexLoadError):
    """A built index does not match the configured encoder or intent set."""


class ProviderError(RouterError):
    """One call to a model backend failed; ``reason`` is a short machine-readable code."""

    reason = "error"
    retryable = False

    def __init__(
        self, backend: str, message: str, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        # Provider text may echo the request's key: masked before it can reach a trace, log or body.
        super().__init__(f"{backend}: {redact(message)}")
        self.backend = backend
        self.retry_after = retry_after
        if reason is not None:
            self.reason = reason


class ProviderTimeout(ProviderError):
    reason = "timeout"
    retryable = True


class ProviderUnavailable(ProviderError):
    reason = "unavailable"
    retryable = True


class RateLimited(ProviderUnavailable):
    reason = "rate_limited"


class BadResponse(ProviderError):
    reason = "bad_response"


class RequestRejected(ProviderError):
    reason = "rejected"


class CircuitOpen(ProviderError):
    reason = "circuit_open"


class FallbacksExhausted(ProviderError):
    """Every model of a chain failed (or was skipped by its open breaker)."""

    reason = "fallbacks_exhausted"

    def __init__(self, backend: str, errors: list[ProviderError], models: list[str] | None = None, *,
                 spent_tokens: int = 0, spent_cost: float = 0.0) -> None:
        self.models = models or [e.backend for e in errors]
        detail = "; ".join(f"{m}: {e.reason}" for m, e in zip(self.models, errors, strict=True))
        super().__init__(backend, f"every model of the chain failed ({detail or 'no model configured'})")
        self.errors = errors
        # Attempts that timed out once sent are metered (the provider may bill them): what the chain cost.
        self.spent_tokens = spent_tokens
        self.spent_cost = spent_cost


class DispatchError(RouterError):
    """The skill dispatcher refused a step or could not finish it."""


class BudgetExceeded(DispatchError):
    """A budget would be exceeded by the next call; the call was not made."""

    def __init__(self, budget: str, limit: float, used: float, needed: float, scope: str) -> None:
        super().__init__(
            f"budget {budget} exceeded for {scope}: limit {limit:,g}, used {used:,g}, "
            f"this step needs up to {needed:,g}; the call was not made"
        )
        self.budget, self.limit, self.used, self.needed, self.scope = budget, limit, used, needed, scope


class SessionsFull(DispatchError):
    """A new session was refused: the ledger is full of live sessions (none idle past its TTL).

    Forgetting a live session instead would reset its spend, so churn could reset everyone's budget.
    """

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"budgets.max_sessions={limit:,} sessions are live; a new session is refused until the "
                         f"longest-idle one ends (budgets.session_ttl_s), in {retry_after:.0f}s; "
                         "existing sessions are still served")
        self.limit, self.retry_after = limit, retry_after


class SkillNotAllowed(DispatchError):
    """The skill is not registered, so it cannot run."""


class InvalidParameters(DispatchError, ValueError):
    """Parameters that fail the skill's schema; they never reach the handler."""

    def __init__(self, skill: str, message: str, errors: list[str]) -> None:
        super().__init__(f"skill {skill!r}: {message}: " + "; ".join(errors))
        self.skill, self.errors = skill, errors


class ApprovalError(DispatchError):
    """An approval id that is unknown, expired or already used."""


class ApprovalRunning(ApprovalError):
    """The approval's handler is running: it is consumed once the handler finishes, and never runs twice."""


class TooManyApprovals(ApprovalError):
    """A new pending approval was refused: ``scope`` (a session, or all sessions) has ``limit`` pending.

    ``retry_after``: seconds until the oldest of them expires, when one is sure to free a place.
    """

    def __init__(self, limit_name: str, limit: int, scope: str, retry_after: float) -> None:
        super().__init__(f"{limit_name}={limit:,} approvals are already pending for {scope}; approve or reject "
                         f"one, or retry after {retry_after:.0f}s when the oldest expires (approval_ttl_s)")
        self.limit_name, self.limit, self.scope, self.retry_after = limit_name, limit, scope, retry_after


class SkillFailed(DispatchError):
    """The skill's handler raised, or its result failed the declared checks."""

    def __init__(self, skill: str, message: str, reason: str) -> None:
        super().__init__(f"skill {skill!r}: {redact(message)}")  # a handler's error text is third-party too
        self.skill, self.reason = skill, reason


class StateUnavailable(DispatchError):
    """The shared state backend (``backend``, e.g. ``redis``) did not answer: the step was refused.

    Budgets fail closed: a call that cannot be metered is never sent. ``retry_after`` (seconds) is
    when to try again; ``detail`` says what failed (the URL is given without its password).
    """

    def __init__(self, backend: str, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"state backend {backend} is unavailable ({redact(detail)}); the step was refused and "
                         f"nothing was sent to a provider; retry after {retry_after:g}s")
        self.backend, self.detail, self.retry_after = backend, detail, retry_after


class LearnLogError(IndexLoadError):
    """The learned-examples log (``learning.log``) cannot be read, or one of its whole lines is not a valid
    entry (a last line without its newline is a crash mid-write: it is dropped, not an error)."""


class LearningError(RouterError):
    """Feedback the learner refused; nothing was logged or learned."""


class FeedbackConflict(LearningError):
    """The text (normalised: case and spacing) is already an example of another intent, or out of scope.

    Only ``source="human"`` with ``override=True`` may replace it."""

    def __init__(self, text: str, existing: str, requested: str, where: str) -> None:
        super().__init__(f"text {text!r:.80} is already {where} of {existing!r}; feedback says {requested!r}. "
                         "Only source='human' with override=true replaces it")
        self.existing, self.requested = existing, requested


class UnknownIntent(LearningError, InputError):
    """The feedback names an intent the index does not have."""


class FeedbackNotAllowed(LearningError):
    """This source may not teach this: feedback is off, or the intent maps to a ``writes`` skill and the
    source is not ``human``."""


class FeedbackRateLimited(LearningError):
    """``learning.max_per_minute`` items of this source were taken in the last minute."""

    def __init__(self, source: str, limit: int, retry_after: float) -> None:
        super().__init__(f"learning.max_per_minute={limit:,} reached for source={source!r}; retry after "
                         f"{math.ceil(retry_after)}s")
        self.source, self.limit, self.retry_after = source, limit, retry_after


class ReviewError(LearningError):
    """A review id that is unknown, or already approved or rejected."""


class ServiceError(RouterError):
    """The router's HTTP service answered an error status, or did not answer (``status`` None).

    ``detail`` is the server's own explanation (the body's ``detail`` or ``message``), ``error``
    the class name the server reported (dispatch errors), ``retry_after`` the seconds it asked
    for (a Retry-After header), ``body`` the decoded JSON body when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None, detail: str = "", error: str | None = None,
                 retry_after: float | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.detail, self.error, self.retry_after, self.body = status, detail, error, retry_after, body


class ServiceInputError(ServiceError, InputError):
    """The service refused the request as invalid (400, 413, 422); fix the request, not the server."""


class ServiceAuthError(ServiceError):
    """The bearer token was missing or wrong (401), or the request is not permitted (403)."""


class ServiceUnavailable(ServiceError):
    """No answer (connection refused or dropped), or the service asked to come back later (503, 429)."""


class ServiceTimeout(ServiceUnavailable):
    """No answer within the client's timeout, or the service gave up on the request (504)."""


class ServiceDispatchError(ServiceError, DispatchError):
    """``POST /v1/dispatch`` refused or failed a step; ``error`` names the server-side error class."""
