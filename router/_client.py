"""A Python client for the router's HTTP service (`router serve`): ``RouterClient`` and ``AsyncRouterClient``.

Both take the same options and have the same methods (the async ones are awaitable), and return
the library's own objects: ``Decision`` for ``POST /v1/classify``, and for ``POST /v1/dispatch``
a ``DispatchReply`` (the dispatcher's ``DispatchResult`` plus the ``Decision`` the service made).
Every failure is a ``RouterError``: an error status raises a ``ServiceError`` subclass whose
message carries the status code and the server's detail, and connection failures and timeouts
are translated too, so no httpx exception escapes::

    with RouterClient("http://127.0.0.1:8000") as client:
        decision = client.classify("wake me at 7")

    async with AsyncRouterClient(api_key_env="ROUTER_API_KEY") as client:
        decisions = await client.classify_many(["hi", "what's the weather in oslo"])

A 503 (the service's max_in_flight refusal) is retried, waiting what its Retry-After asks for.

Learning: ``feedback`` (``POST /v1/feedback``) teaches the served index one example, ``review`` lists the
tier-2 answers waiting for a person (``{"items": [...], "total": n}``, at most ``limit`` items),
``approve_review`` and ``reject_review`` decide one, ``learning`` reports the learner's figures. A
contradicting example (409) or an unknown intent (422) raises ``ServiceInputError`` (its ``body`` names
``existing`` and ``requested`` for a 409), feedback off or a source that may not teach that intent
``ServiceAuthError`` (403), ``learning.max_per_minute`` ``ServiceUnavailable`` with ``retry_after`` (429, not
retried). What only a person may do is sent with the approver key when the client has one, as approvals
are: feedback with ``source="human"`` (the default) or ``override=True``, and the review decisions. A service
started with ``--approver-key-env`` refuses the service key there (403): an agent sends ``source="llm"``.

``approve`` and ``reject`` send the approver key (``approver_key``, else the variable
``approver_key_env``, ``ROUTER_APPROVER_KEY`` by default) when there is one: a service started with
``--approver-key-env`` refuses the service key there (403). Without one they send the service key.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import ConfigDict, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from router._decision import Decision
from router._settings import secret
from router._validation import check_batch, check_text
from router.dispatch._result import DispatchResult
from router.errors import (
    ConfigError,
    InputError,
    RouterError,
    ServiceAuthError,
    ServiceDispatchError,
    ServiceError,
    ServiceInputError,
    ServiceTimeout,
    ServiceUnavailable,
)
from router.providers import parse_retry_after

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "DEFAULT_APPROVER_KEY_ENV",
    "DEFAULT_BASE_URL",
    "AsyncRouterClient",
    "DispatchReply",
    "RouterClient",
]

log = logging.getLogger("router._client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # `router serve`'s default host and port
# The server has no default variable (`router serve --api-key-env VAR`); the client needs one to look in.
DEFAULT_API_KEY_ENV = "ROUTER_API_KEY"
DEFAULT_APPROVER_KEY_ENV = "ROUTER_APPROVER_KEY"  # likewise for `router serve --approver-key-env VAR`
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 2
DEFAULT_MAX_RETRY_WAIT_S = 10.0

# The server knows its index's limits (max_text_chars, max_batch) and names them when it refuses;
# the client checks only what is wrong for any index: type, emptiness, blankness.
_NO_LIMIT = sys.maxsize
_INPUT_STATUSES = frozenset({400, 413, 422})
_AUTH_STATUSES = frozenset({401, 403})
# Routes whose error bodies name a dispatcher error class (a 403 there is the allowlist, not the key).
_DISPATCH_PATHS = ("/v1/dispatch", "/v1/approvals/", "/v1/sessions/")
_APPROVAL_PATHS = "/v1/approvals/"
# The learning routes: a 409 there is feedback that contradicts an example, an error in the request.
_LEARN_PATHS = ("/v1/feedback", "/v1/review")
_REVIEW_DECISION_PATHS = "/v1/review/"  # /v1/review/{id}/approve|reject: the approver key's, as approvals
DEFAULT_REVIEW_LIMIT = 100  # GET /v1/review's default; the service takes 1 to 10,000
_BACKOFF_S = 0.1  # first wait of the exponential backoff when a 503 gives no Retry-After


class DispatchReply(DispatchResult):
    """What ``POST /v1/dispatch`` answers: the dispatcher's ``DispatchResult`` plus ``decision``,
    the service's classification of ``text`` (None when the request named its ``skill``)."""

    # Unlike the server's models, ignore fields this client does not know: a newer server still parses.
    model_config = ConfigDict(extra="ignore")
    decision: Decision | None = None


class _ClientBase:
    """Options, argument checks, request bodies, response parsing and the retry policy: no I/O."""

    def __init__(self, base_url: str, *, api_key: str | None, api_key_env: str | None, timeout: float,
                 retries: int, max_retry_wait: float, approver_key: str | None = None,
                 approver_key_env: str | None = DEFAULT_APPROVER_KEY_ENV) -> None:
        self.base_url = _check_base_url(base_url)
        self.timeout = _check_seconds("timeout", timeout, positive=True)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.max_retry_wait = _check_seconds("max_retry_wait", max_retry_wait, positive=False)
        self.api_key_env = api_key_env
        self._headers = _auth_headers("api_key", api_key, api_key_env)
        self.approver_key_env = approver_key_env
        approver = _auth_headers("approver_key", approver_key, approver_key_env)
        # Approvals: the approver key when there is one, else the service key (a self-approving service).
        self._approver_headers = approver or self._headers
        self._backoff = wait_random_exponential(multiplier=_BACKOFF_S, max=max(self.max_retry_wait, _BACKOFF_S))
        self._closed = False

    def __repr__(self) -> str:
        auth = "bearer" if self._headers else "none"
        return f"{type(self).__name__}(base_url={self.base_url!r}, auth={auth}, timeout={self.timeout:g})"

    # -- request bodies (arguments checked before anything is sent) --------------------------------
    @staticmethod
    def _classify_body(key: str, value: Any, top_k: int | None) -> dict[str, Any]:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
        body: dict[str, Any] = {key: value}
        if top_k is not None:
            body["top_k"] = top_k
        return body

    @staticmethod
    def _dispatch_body(session_id: str, text: str | None, skill: str | None,
                       params: Mapping[str, Any] | None) -> dict[str, Any]:
        if not isinstance(session_id, str) or not session_id.strip():
            raise InputError(f"session_id must be a non-empty string, got {session_id!r:.80}")
        if skill is not None and (not isinstance(skill, str) or not skill.strip()):
            raise InputError(f"skill must be a non-empty string or None, got {skill!r:.80}")
        if params is not None and not isinstance(params, Mapping):
            raise InputError(f"params must be a mapping or None, got {type(params).__name__}: {params!r:.80}")
        if text is None and (skill is None or params is None):
            raise InputError("give text, or both skill and params (got "
                             f"text=None, skill={skill!r:.40}, params={'None' if params is None else '{...}'})")
        body: dict[str, Any] = {"session_id": session_id}
        if text is not None:
            body["text"] = check_text(text, _NO_LIMIT)
        if skill is not None:
            body["skill"] = skill
        if params is not None:
            body["params"] = dict(params)
        return body

    @staticmethod
    def _feedback_body(text: str, intent: str | None, out_of_scope: bool, source: str, decision_id: str | None,
                       override: bool) -> dict[str, Any]:
        if intent is not None and (not isinstance(intent, str) or not intent.strip()):
            raise InputError(f"intent must be a non-empty string or None, got {intent!r:.80}")
        for name, flag in (("out_of_scope", out_of_scope), ("override", override)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} must be True or False, got {flag!r:.40}")
        if out_of_scope == (intent is not None):
            raise InputError(f"give exactly one of intent (got {intent!r:.60}) or out_of_scope=True "
                             f"(got {out_of_scope})")
        if source not in ("human", "llm"):
            raise InputError(f"source must be 'human' or 'llm', got {source!r:.40}")
        if decision_id is not None and (not isinstance(decision_id, str) or not decision_id.strip()):
            raise InputError(f"decision_id must be a non-empty string or None, got {decision_id!r:.80}")
        body: dict[str, Any] = {"text": check_text(text, _NO_LIMIT), "source": source}
        if intent is not None:
            body["intent"] = intent
        else:
            body["out_of_scope"] = True
        if decision_id is not None:
            body["decision_id"] = decision_id
        if override:
            body["override"] = True
        return body

    @staticmethod
    def _review_path(limit: int) -> str:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InputError(f"limit must be an integer >= 1, got {limit!r:.40}")
        return f"/v1/review?limit={limit}"

    def _review_items(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        body = self._json(method, path, response)
        items, total = body.get("items"), body.get("total")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise _unexpected(method, path, response, "no list of review items")
        if isinstance(total, bool) or not isinstance(total, int):
            raise _unexpected(method, path, response, "no total of review items")
        return {"items": items, "total": total}

    def _person_headers(self, source: str = "human", override: bool = False) -> dict[str, str]:
        """What a person's word is sent with: the approver key when the client has one (else the service key),
        for ``source="human"``, ``override`` and the review decisions; an agent's (``source="llm"``) with
        the service key."""
        return self._approver_headers if source == "human" or override else self._headers

    @property
    def _reader_headers(self) -> dict[str, str]:
        """Reads (the review list, the figures): the service key, else the approver key (which opens them too)."""
        return self._headers or self._approver_headers

    @staticmethod
    def _id_path(template: str, name: str, value: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{name} must be a non-empty string, got {value!r:.80}")
        return template.format(quote(value, safe=""))

    # -- responses ---------------------------------------------------------------------------------
    def _error(self, method: str, path: str, response: httpx.Response) -> ServiceError:
        status = response.status_code
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        detail = _detail(body) or response.text.strip()[:500] or response.reason_phrase
        error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
        message = f"{method} {path}: HTTP {status}" + (f" {error}" if error else "") + f": {detail}"
        cls: type[ServiceError]
        # Only the dispatch routes name an error class; a proxy's {"error": ...} elsewhere is not one of ours.
        if error is not None and path.startswith(_DISPATCH_PATHS):
            cls = ServiceDispatchError
        elif status in _INPUT_STATUSES or (status == 409 and path.startswith(_LEARN_PATHS)):
            cls = ServiceInputError
        elif status in _AUTH_STATUSES:
            cls = ServiceAuthError
            needs_approver = (path.startswith((_APPROVAL_PATHS, _REVIEW_DECISION_PATHS))
                              or (path.startswith(_LEARN_PATHS) and "--approver-key-env" in detail))
            if needs_approver and self._approver_headers is self._headers:
                where = f" or set ${self.approver_key_env}" if self.approver_key_env else ""
                message += f" (this client has no approver key: pass approver_key={where})"
            elif status == 401 and not self._headers:
                where = f" or set ${self.api_key_env}" if self.api_key_env else ""
                message += f" (this client sent no API key: pass api_key={where})"
        elif status == 504:
            cls = ServiceTimeout
        elif status in (429, 503):
            cls = ServiceUnavailable
        else:
            cls = ServiceError
        return cls(message, status=status, detail=detail, error=error, body=body,
                   retry_after=parse_retry_after(response.headers.get("retry-after")))

    def _check(self, method: str, path: str, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise self._error(method, path, response)
        return response

    def _transport_error(self, method: str, path: str, exc: Exception) -> ServiceError:
        where = f"{method} {self.base_url}{path}"
        if isinstance(exc, httpx.TimeoutException):
            return ServiceTimeout(f"{where}: no answer within timeout={self.timeout:g} s ({type(exc).__name__})",
                                  detail=str(exc))
        if isinstance(exc, httpx.TransportError):
            return ServiceUnavailable(f"{where}: connection failed ({type(exc).__name__}: {exc}); "
                                      "is `router serve` running there?", detail=str(exc))
        return ServiceError(f"{where}: {type(exc).__name__}: {exc}", detail=str(exc))

    def _check_open(self, http_closed: bool) -> None:
        if self._closed or http_closed:
            raise RouterError(f"{type(self).__name__} is closed; create a new client")

    @staticmethod
    def _json(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise _unexpected(method, path, response, "the body is not JSON") from exc
        if not isinstance(body, dict):
            raise _unexpected(method, path, response, "the body is not a JSON object")
        return body

    def _decisions(self, method: str, path: str, response: httpx.Response, expected: int) -> list[Decision]:
        body = self._json(method, path, response)
        try:
            decisions = [Decision.from_dict(d) for d in body["decisions"]]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _unexpected(method, path, response, f"no Decision list ({type(exc).__name__}: {exc})") from exc
        if len(decisions) != expected:
            raise _unexpected(method, path, response, f"{len(decisions)} decisions for {expected} texts")
        return decisions

    def _dispatch_reply(self, method: str, path: str, response: httpx.Response) -> DispatchReply:
        body = self._json(method, path, response)
        try:
            raw = body.get("decision")
            decision = None if raw is None else Decision.from_dict(raw)
            return DispatchReply.model_validate({**body, "decision": decision})
        except (ValidationError, TypeError, AttributeError, ValueError) as exc:
            raise _unexpected(method, path, response, f"not a dispatch result ({exc})") from exc

    @staticmethod
    def _ready(exc: ServiceError) -> dict[str, Any] | None:
        """/readyz answers 503 with its usual body when not ready: that is an answer, not a failure."""
        if exc.status == 503 and isinstance(exc.body, dict) and "ready" in exc.body:
            return exc.body
        return None

    # -- retries -----------------------------------------------------------------------------------
    # tenacity (as in router.dispatch.caller): one policy drives both the sync and the async client.
    def _policy(self) -> dict[str, Any]:
        return {"stop": stop_after_attempt(1 + self.retries), "wait": self._wait,
                "retry": retry_if_exception(self._should_retry), "before_sleep": self._log_retry, "reraise": True}

    def _should_retry(self, exc: BaseException) -> bool:
        # Only 503: the service's Guard answers it before any route runs, so even a dispatch is safe to resend.
        # A Retry-After over max_retry_wait is raised at once (its retry_after says when) rather than retried early.
        return (isinstance(exc, ServiceUnavailable) and exc.status == 503
                and (exc.retry_after is None or exc.retry_after <= self.max_retry_wait))

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ServiceError) and exc.retry_after is not None:
            return exc.retry_after
        return min(self.max_retry_wait, float(self._backoff(state)))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s; retry %d of %d in %.3g s", exc, state.attempt_number, self.retries, wait)


class RouterClient(_ClientBase):
    """Synchronous client of `router serve`.

    ``base_url``: where the service listens. ``api_key``: sent as ``Authorization: Bearer <key>``;
    when None it is read (once, here) from the environment variable ``api_key_env``, and with
    neither no header is sent. ``timeout``: seconds for each of connect, read, write and pool
    (httpx's meaning), for every request. ``retries``: how many times a 503 is retried, waiting its
    Retry-After (exponential backoff without one); a Retry-After over ``max_retry_wait`` seconds
    is raised at once. ``http_client`` (used as given, URLs and auth added per request, never
    closed here) or ``transport`` (for a client built here) are for advanced use: proxies, TLS,
    tests. ``approver_key`` (else read from ``approver_key_env``) is what ``approve`` and ``reject``
    send instead of the service key. ``close()`` it, or use it as a context manager.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None,
                 api_key_env: str | None = DEFAULT_API_KEY_ENV, timeout: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S,
                 http_client: httpx.Client | None = None, transport: httpx.BaseTransport | None = None,
                 approver_key: str | None = None, approver_key_env: str | None = DEFAULT_APPROVER_KEY_ENV) -> None:
        super().__init__(base_url, api_key=api_key, api_key_env=api_key_env, timeout=timeout, retries=retries,
                         max_retry_wait=max_retry_wait, approver_key=approver_key, approver_key_env=approver_key_env)
        self._owns_http = _owns(http_client, transport, httpx.Client)
        self._http = http_client if http_client is not None else httpx.Client(transport=transport, timeout=timeout)

    # -- the API -----------------------------------------------------------------------------------
    def classify(self, text: str, *, top_k: int | None = None) -> Decision:
        """``POST /v1/classify`` with one text; ``top_k`` caps the Decision's candidates."""
        body = self._classify_body("text", check_text(text, _NO_LIMIT), top_k)
        return self._decisions("POST", "/v1/classify", self._send("POST", "/v1/classify", body), 1)[0]

    def classify_many(self, texts: Sequence[str], *, top_k: int | None = None) -> list[Decision]:
        """``POST /v1/classify`` with a batch; one Decision per text, in order."""
        body = self._classify_body("texts", check_batch(texts, _NO_LIMIT, _NO_LIMIT), top_k)
        return self._decisions("POST", "/v1/classify", self._send("POST", "/v1/classify", body), len(texts))

    def dispatch(self, session_id: str, text: str | None = None, *, skill: str | None = None,
                 params: Mapping[str, Any] | None = None) -> DispatchReply:
        """``POST /v1/dispatch``: run ``text`` through its skill (classified unless ``skill`` is given);
        ``params`` skips extraction. Needs a service started with ``--skills``."""
        body = self._dispatch_body(session_id, text, skill, params)
        return self._dispatch_reply("POST", "/v1/dispatch", self._send("POST", "/v1/dispatch", body))

    def approve(self, approval_id: str) -> DispatchReply:
        """``POST /v1/approvals/{id}/approve``: run the skill a dispatch left ``pending_approval`` (once)."""
        path = self._id_path("/v1/approvals/{}/approve", "approval_id", approval_id)
        return self._dispatch_reply("POST", path, self._send("POST", path, None, self._approver_headers))

    def reject(self, approval_id: str) -> dict[str, Any]:
        """``POST /v1/approvals/{id}/reject``: drop a pending action; ``{"status": "rejected", ...}``."""
        path = self._id_path("/v1/approvals/{}/reject", "approval_id", approval_id)
        return self._json("POST", path, self._send("POST", path, None, self._approver_headers))

    def session(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``: the session's tokens, cost, calls, steps and budget left."""
        path = self._id_path("/v1/sessions/{}", "session_id", session_id)
        return self._json("GET", path, self._send("GET", path, None))

    def feedback(self, text: str, intent: str | None = None, *, out_of_scope: bool = False, source: str = "human",
                 decision_id: str | None = None, override: bool = False) -> dict[str, Any]:
        """``POST /v1/feedback``: ``text`` is ``intent``, or out of scope. Logged at once and learned within
        seconds; answers the item (``id``, ``status``: queued, held_out or duplicate, ...). ``decision_id``
        names the Decision it corrects; ``override`` (source human only) replaces an example that says
        otherwise."""
        body = self._feedback_body(text, intent, out_of_scope, source, decision_id, override)
        headers = self._person_headers(source, override)
        return self._json("POST", "/v1/feedback", self._send("POST", "/v1/feedback", body, headers))

    def review(self, limit: int = DEFAULT_REVIEW_LIMIT) -> dict[str, Any]:
        """``GET /v1/review``: ``{"items": [...], "total": n}``, the oldest ``limit`` tier-2 answers waiting for
        a person and how many wait in all."""
        path = self._review_path(limit)
        return self._review_items("GET", path, self._send("GET", path, None, self._reader_headers))

    def approve_review(self, review_id: str) -> dict[str, Any]:
        """``POST /v1/review/{id}/approve``: learn that tier-2 answer (as source human); the item's result.
        Sent with the approver key when the client has one."""
        path = self._id_path("/v1/review/{}/approve", "review_id", review_id)
        return self._json("POST", path, self._send("POST", path, None, self._person_headers()))

    def reject_review(self, review_id: str) -> dict[str, Any]:
        """``POST /v1/review/{id}/reject``: drop that tier-2 answer; the review item dropped. Sent with the
        approver key when the client has one."""
        path = self._id_path("/v1/review/{}/reject", "review_id", review_id)
        return self._json("POST", path, self._send("POST", path, None, self._person_headers()))

    def learning(self) -> dict[str, Any]:
        """``GET /v1/learning``: the learner's mode, log, counts (``n_learned``, ``n_unserved``, ...)."""
        return self._json("GET", "/v1/learning", self._send("GET", "/v1/learning", None, self._reader_headers))

    def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: the process answers (``{"status": "ok"}``). Needs no API key."""
        return self._json("GET", "/healthz", self._send("GET", "/healthz", None))

    def readyz(self) -> dict[str, Any]:
        """``GET /readyz``: the readiness body; ``ready`` is False (not an error) while warming up or draining."""
        try:
            return self._json("GET", "/readyz", self._once("GET", "/readyz", None))
        except ServiceError as exc:
            if (ready := self._ready(exc)) is not None:
                return ready
            raise

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections (not those of an ``http_client`` given to the constructor)."""
        self._closed = True
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response | None = None
        for attempt in Retrying(**self._policy()):
            with attempt:
                response = self._once(method, path, body, headers)
        assert response is not None  # reraise=True: the loop either set it or raised
        return response

    def _once(self, method: str, path: str, body: dict[str, Any] | None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        self._check_open(self._http.is_closed)
        try:
            response = self._http.request(method, self.base_url + path, json=body,
                                          headers=self._headers if headers is None else headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from exc
        return self._check(method, path, response)


class AsyncRouterClient(_ClientBase):
    """Asynchronous client of `router serve`: ``RouterClient``'s options and methods, awaitable.

    ``http_client`` is an ``httpx.AsyncClient`` and ``transport`` an ``httpx.AsyncBaseTransport``;
    ``aclose()`` it, or use it as an async context manager.
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None,
                 api_key_env: str | None = DEFAULT_API_KEY_ENV, timeout: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S,
                 http_client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, approver_key: str | None = None,
                 approver_key_env: str | None = DEFAULT_APPROVER_KEY_ENV) -> None:
        super().__init__(base_url, api_key=api_key, api_key_env=api_key_env, timeout=timeout, retries=retries,
                         max_retry_wait=max_retry_wait, approver_key=approver_key, approver_key_env=approver_key_env)
        self._owns_http = _owns(http_client, transport, httpx.AsyncClient)
        self._http = (http_client if http_client is not None
                      else httpx.AsyncClient(transport=transport, timeout=timeout))

    # -- the API -----------------------------------------------------------------------------------
    async def classify(self, text: str, *, top_k: int | None = None) -> Decision:
        """``POST /v1/classify`` with one text; ``top_k`` caps the Decision's candidates."""
        body = self._classify_body("text", check_text(text, _NO_LIMIT), top_k)
        return self._decisions("POST", "/v1/classify", await self._send("POST", "/v1/classify", body), 1)[0]

    async def classify_many(self, texts: Sequence[str], *, top_k: int | None = None) -> list[Decision]:
        """``POST /v1/classify`` with a batch; one Decision per text, in order."""
        body = self._classify_body("texts", check_batch(texts, _NO_LIMIT, _NO_LIMIT), top_k)
        return self._decisions("POST", "/v1/classify", await self._send("POST", "/v1/classify", body), len(texts))

    async def dispatch(self, session_id: str, text: str | None = None, *, skill: str | None = None,
                       params: Mapping[str, Any] | None = None) -> DispatchReply:
        """``POST /v1/dispatch``: run ``text`` through its skill (classified unless ``skill`` is given);
        ``params`` skips extraction. Needs a service started with ``--skills``."""
        body = self._dispatch_body(session_id, text, skill, params)
        return self._dispatch_reply("POST", "/v1/dispatch", await self._send("POST", "/v1/dispatch", body))

    async def approve(self, approval_id: str) -> DispatchReply:
        """``POST /v1/approvals/{id}/approve``: run the skill a dispatch left ``pending_approval`` (once)."""
        path = self._id_path("/v1/approvals/{}/approve", "approval_id", approval_id)
        return self._dispatch_reply("POST", path, await self._send("POST", path, None, self._approver_headers))

    async def reject(self, approval_id: str) -> dict[str, Any]:
        """``POST /v1/approvals/{id}/reject``: drop a pending action; ``{"status": "rejected", ...}``."""
        path = self._id_path("/v1/approvals/{}/reject", "approval_id", approval_id)
        return self._json("POST", path, await self._send("POST", path, None, self._approver_headers))

    async def session(self, session_id: str) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``: the session's tokens, cost, calls, steps and budget left."""
        path = self._id_path("/v1/sessions/{}", "session_id", session_id)
        return self._json("GET", path, await self._send("GET", path, None))

    async def feedback(self, text: str, intent: str | None = None, *, out_of_scope: bool = False,
                       source: str = "human", decision_id: str | None = None, override: bool = False) -> dict[str, Any]:
        """``POST /v1/feedback``: ``text`` is ``intent``, or out of scope. Logged at once and learned within
        seconds; answers the item (``id``, ``status``: queued, held_out or duplicate, ...). ``decision_id``
        names the Decision it corrects; ``override`` (source human only) replaces an example that says
        otherwise."""
        body = self._feedback_body(text, intent, out_of_scope, source, decision_id, override)
        headers = self._person_headers(source, override)
        return self._json("POST", "/v1/feedback", await self._send("POST", "/v1/feedback", body, headers))

    async def review(self, limit: int = DEFAULT_REVIEW_LIMIT) -> dict[str, Any]:
        """``GET /v1/review``: ``{"items": [...], "total": n}``, the oldest ``limit`` tier-2 answers waiting for
        a person and how many wait in all."""
        path = self._review_path(limit)
        return self._review_items("GET", path, await self._send("GET", path, None, self._reader_headers))

    async def approve_review(self, review_id: str) -> dict[str, Any]:
        """``POST /v1/review/{id}/approve``: learn that tier-2 answer (as source human); the item's result.
        Sent with the approver key when the client has one."""
        path = self._id_path("/v1/review/{}/approve", "review_id", review_id)
        return self._json("POST", path, await self._send("POST", path, None, self._person_headers()))

    async def reject_review(self, review_id: str) -> dict[str, Any]:
        """``POST /v1/review/{id}/reject``: drop that tier-2 answer; the review item dropped. Sent with the
        approver key when the client has one."""
        path = self._id_path("/v1/review/{}/reject", "review_id", review_id)
        return self._json("POST", path, await self._send("POST", path, None, self._person_headers()))

    async def learning(self) -> dict[str, Any]:
        """``GET /v1/learning``: the learner's mode, log, counts (``n_learned``, ``n_unserved``, ...)."""
        return self._json("GET", "/v1/learning", await self._send("GET", "/v1/learning", None, self._reader_headers))

    async def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: the process answers (``{"status": "ok"}``). Needs no API key."""
        return self._json("GET", "/healthz", await self._send("GET", "/healthz", None))

    async def readyz(self) -> dict[str, Any]:
        """``GET /readyz``: the readiness body; ``ready`` is False (not an error) while warming up or draining."""
        try:
            return self._json("GET", "/readyz", await self._once("GET", "/readyz", None))
        except ServiceError as exc:
            if (ready := self._ready(exc)) is not None:
                return ready
            raise

    # -- lifecycle ---------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the connections (not those of an ``http_client`` given to the constructor)."""
        self._closed = True
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # -- HTTP --------------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, body: dict[str, Any] | None,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response | None = None
        async for attempt in AsyncRetrying(**self._policy()):
            with attempt:
                response = await self._once(method, path, body, headers)
        assert response is not None  # reraise=True: the loop either set it or raised
        return response

    async def _once(self, method: str, path: str, body: dict[str, Any] | None,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        self._check_open(self._http.is_closed)
        try:
            response = await self._http.request(method, self.base_url + path, json=body,
                                                headers=self._headers if headers is None else headers,
                                                timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from exc
        return self._check(method, path, response)


# -- helpers ---------------------------------------------------------------------------------------
def _auth_headers(name: str, key: str | None, env: str | None) -> dict[str, str]:
    """The Authorization header of ``key``, else of the variable ``env`` (an empty one counts as unset, as
    for the server, which refuses to start with one); {} with neither."""
    if env is not None and (not isinstance(env, str) or not env.strip()):
        raise ConfigError(f"{name}_env must be a non-empty environment variable name or None, got {env!r}")
    if key is not None and (not isinstance(key, str) or not key or key != key.strip()):
        # The value itself is never shown: it is a secret.
        raise ConfigError(f"{name} must be a non-empty string without surrounding whitespace (value not shown)")
    value = key if key is not None else secret(env)
    return {"Authorization": f"Bearer {value}"} if value else {}


def _owns(http_client: object, transport: object, kind: type) -> bool:
    """Checks the constructor's http_client/transport pair; True when the client builds (and closes) its own."""
    if http_client is not None and transport is not None:
        raise ConfigError("give http_client or transport, not both (a transport goes into the client)")
    if http_client is not None and not isinstance(http_client, kind):
        raise ConfigError(f"http_client must be an httpx.{kind.__name__}, got {type(http_client).__name__}")
    return http_client is None


def _check_base_url(base_url: Any) -> str:
    if not isinstance(base_url, str):
        raise ConfigError(f"base_url must be a string such as {DEFAULT_BASE_URL!r}, got {type(base_url).__name__}")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"base_url={base_url!r} is not a valid URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"base_url={base_url!r} must be an http:// or https:// URL with a host, "
                          f"such as {DEFAULT_BASE_URL!r}")
    if url.query or url.fragment:
        raise ConfigError(f"base_url={base_url!r} must not have a query or fragment")
    return base_url.rstrip("/")  # paths are appended: a prefix such as /router stays in front of them


def _check_seconds(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def _detail(body: Any) -> str:
    """The server's explanation: ``detail`` (a string, or FastAPI's list of field errors), else ``message``."""
    if not isinstance(body, dict):
        return ""
    detail = body.get("detail")
    if isinstance(detail, list):
        return "; ".join(_field_error(e) for e in detail)
    if detail is not None:
        return str(detail)
    for key in ("message", "error"):
        value = body.get(key)
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value:
            return value
    return ""


def _field_error(error: Any) -> str:
    if isinstance(error, dict) and "msg" in error:
        loc = ".".join(str(part) for part in error.get("loc") or ())
        return f"{loc}: {error['msg']}" if loc else str(error["msg"])
    return str(error)


def _unexpected(method: str, path: str, response: httpx.Response, what: str) -> ServiceError:
    return ServiceError(f"{method} {path}: HTTP {response.status_code} with an unexpected body: {what}: "
                        f"{response.text[:200]!r}", status=response.status_code, detail=what)
