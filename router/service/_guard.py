"""Limits enforced before a request reaches a route: auth, in-flight caps, body size and time, timeout.

Pure ASGI (no BaseHTTPMiddleware), so the per-request cost stays in microseconds. Each refusal
answers JSON ``{"detail": ...}`` naming the limit and its value; the metrics count it.

Two in-flight caps, each refusing only its own routes: ``max_dispatch_in_flight`` for the
dispatcher's routes (they wait on remote providers for seconds), ``max_in_flight`` for the rest.
The probes and ``/metrics`` are under neither, and count in neither: an orchestrator must see a busy
replica as alive, or it kills a healthy one. Header timeouts and sizes are the connection layer's
(connections.py); the body's deadline is here, since only the app knows when it reads the body.
Requests are counted under their route's template (``/v1/approvals/{approval_id}/approve``), never
the raw path, so the number of label values stays that of the routes.

Approvals have their own credential. With an approver key (``--approver-key-env``), the approval
routes (the dispatcher's approvals, and the decisions on the learning review queue) accept only it: the
service key gets 403 (an agent that may dispatch may not approve its own writes, nor vouch for what the
router learns), anything else 401. An approver needs no service key: the key also opens the learning
routes a person uses (feedback, the review list, the learner's figures). Without one, a service with a
``writes`` skill refuses to start unless ``--allow-self-approval on`` says, on purpose, that the
service key (or anyone, without ``--api-key-env``) approves.

The proxy's routes (``router serve --proxy``: /v1/chat/completions, /v1/messages, /v1/models) are in the
dispatch lane, under its deadline until their response starts: a stream (``text/event-stream``) that has
started is not cut by it, since each gap is bounded by its model's ``timeout_s``. Their clients read
their own API's errors, so the Guard's refusals there (401, 413, 503, 504) come in that format (OpenAI's,
or Anthropic's on /v1/messages and on /v1/models with an ``anthropic-version`` header); and since the
Anthropic SDK sends its key as ``x-api-key``, that header carries the service key on /v1/messages and
/v1/models as well as a bearer token.

The Guard tells the routes which key a request carried (``credential``): the learning routes trust a
body's ``source: "human"`` and ``override`` only from the approver key when there is one, and the
learned-examples log records the credential (``Credential.label``), never the key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import HTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router._settings import secret
from router.errors import ConfigError
from router.service._config import ServeConfig
from router.service._credential import STATE_KEY, Credential
from router.service._service import ClassifierService
from router.service.learn import _routes as learn
from router.service.proxy._protocol import ANTHROPIC_KEY_PATHS, api_of, refusal_body

if TYPE_CHECKING:
    from router.dispatch import Dispatcher

log = logging.getLogger("router.service")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # under no in-flight cap
# Prefixes of max_dispatch_in_flight's routes: the proxy's chats wait on providers as dispatches do.
DISPATCH_ROUTES = ("/v1/dispatch", "/v1/approvals/", "/v1/sessions/", "/v1/chat/completions", "/v1/messages")
# A lane is named by the ServeConfig field of its cap.
CLASSIFY_LANE, DISPATCH_LANE = "max_in_flight", "max_dispatch_in_flight"
DISPATCH_APPROVALS = frozenset({"/v1/approvals/{approval_id}/approve", "/v1/approvals/{approval_id}/reject"})
REVIEW_DECISIONS = frozenset({learn.APPROVE, learn.REJECT})
# With an approver key, only it opens these.
APPROVAL_ROUTES = DISPATCH_APPROVALS | REVIEW_DECISIONS
# The approver key opens these as well as the service key: what a person deciding what the router learns
# uses besides the decisions (teaching it as source human, the queue to decide, the learner's figures).
APPROVER_ALSO = frozenset({learn.FEEDBACK, learn.REVIEW, learn.LEARNING})


# A refused request's body is read and dropped up to this size, so the connection stays usable
# (closing with unread data makes the kernel reset it, and the client never sees the answer).
# Beyond it the answer carries "connection: close".
DRAIN_CAP = 16 << 20
CLOSE = (b"connection", b"close")


async def drain(receive: Receive, already: int = 0) -> bool:
    """Read and drop the rest of the request body; False if it is over DRAIN_CAP or the client left."""
    seen = already
    while True:
        try:
            message = await receive()
        except HTTPException:  # body_timeout_s passed: the rest is not coming
            return False
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if seen > DRAIN_CAP:
            return False


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None,
                    api: str | None = None) -> None:
    """``api``: a proxy path's API (openai, anthropic), whose clients read their own error format."""
    body = orjson.dumps({"detail": detail} if api is None else refusal_body(api, status, detail))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class ApproverAuth:
    """Who may approve: ``key`` (the approver key; None: the approval routes take the service key's
    rule), the variable it came from, and ``approved_by``, what the trace records of an approval."""

    key: str | None = None
    env: str | None = None
    approved_by: str = "self_approval"


def approver_auth(config: ServeConfig, dispatcher: Dispatcher | None, api_key: str | None) -> ApproverAuth:
    """The approval credential of ``config``; a ``ConfigError`` where a ``writes`` skill could be approved
    by whoever may dispatch, unless ``allow_self_approval`` says so (then logged as a warning)."""
    writes = sorted(skill.name for skill in dispatcher.skills if skill.writes) if dispatcher is not None else []
    name = config.approver_key_env
    if name:
        key = secret(name)
        if not key:
            raise ConfigError(f"approver_key_env={name!r} is set but that environment variable is empty")
        if api_key is not None and hmac.compare_digest(key.encode(), api_key.encode()):
            raise ConfigError(f"the approver key (${name}) equals the service key (${config.api_key_env}): whoever "
                              "may dispatch could then approve its own writes; give the approvers a key of their own")
        return ApproverAuth(key, name, f"approver_key:{name}")
    approved_by = f"service_key:{config.api_key_env}" if api_key else "self_approval"
    if writes and not config.allow_self_approval:
        raise ConfigError(
            f"skill(s) {', '.join(writes)} write, and no approver key is set: whoever may dispatch could approve "
            "its own writes. Either name the variable holding the approvers' key with --approver-key-env VAR "
            "(ROUTER_SERVE_APPROVER_KEY_ENV), distinct from the service key, or pass --allow-self-approval on "
            f"to let {'the service key' if api_key else 'anyone (no --api-key-env is set)'} approve")
    if writes:
        log.warning("router: --allow-self-approval on: %s approve(s) the writes of %s (no approver key)",
                    "the service key" if api_key else "anyone (no --api-key-env)", ", ".join(writes))
    return ApproverAuth(None, None, approved_by)


def _is_event_stream(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in start.get("headers", []))


class Guard:
    def __init__(self, app: ASGIApp, service: ClassifierService, api_key: str | None,
                 routes: Sequence[BaseRoute] = (), approver: ApproverAuth | None = None) -> None:
        self.app = app
        self.service = service
        self.config = service.config
        self.metrics = service.metrics
        self.token = api_key.encode() if api_key else None
        self.approver = approver or ApproverAuth()
        self.approver_token = self.approver.key.encode() if self.approver.key else None
        # The app's routes (the list itself: the Guard is built once they are all added) give the
        # metric label of a path: fixed paths by lookup, templated ones by their pattern.
        self.fixed = {r.path for r in routes if isinstance(r, Route) and not r.param_convertors}
        self.templated = [(r.path_regex, r.path) for r in routes
                          if isinstance(r, Route) and r.param_convertors]

    def endpoint(self, path: str) -> str:
        if path in self.fixed:
            return path
        for regex, template in self.templated:
            if regex.match(path):
                return template
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = self.endpoint(path)
        started = time.perf_counter()
        status = await self._serve(scope, self._timed_body(receive), send, path, endpoint)
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)

    def _timed_body(self, receive: Receive) -> Receive:
        """The body must arrive within body_timeout_s of the headers. A stalled or trickled upload
        is answered 408 and frees its in-flight slot, rather than holding it until request_timeout_s."""
        timeout = self.config.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        done = False

        async def receive_body() -> Message:
            nonlocal done
            if done:  # after the body only http.disconnect comes, whenever the client leaves
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                done = True
                self.metrics.rejected.labels("body_timeout_s").inc()
                # The rest of the body may still come: the connection cannot carry another request.
                raise HTTPException(408, f"request body not received within body_timeout_s={timeout:g}",
                                    headers={"connection": "close"}) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_body

    def _in_flight(self, lane: str) -> int:
        return self.service.dispatch_in_flight if lane == DISPATCH_LANE else self.service.in_flight

    def _count(self, lane: str | None, change: int) -> None:
        if lane == DISPATCH_LANE:
            self.service.dispatch_in_flight += change
            self.metrics.dispatch_in_flight.inc(change)
        elif lane == CLASSIFY_LANE:
            self.service.in_flight += change
            self.metrics.in_flight.inc(change)

    @staticmethod
    def _bearer(headers: dict[bytes, bytes]) -> bytes | None:
        # The scheme is case-insensitive (RFC 9110 11.1: "bearer" is valid), the token is not.
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return token.lstrip(b" ") if scheme.lower() == b"bearer" else None

    @staticmethod
    def _matches(token: bytes | None, expected: bytes | None) -> bool:
        # compare_digest: the time taken does not reveal how much of the token matched.
        return token is not None and expected is not None and hmac.compare_digest(token, expected)

    def _credential(self, headers: dict[bytes, bytes], path: str = "") -> Credential | None:
        token = self._bearer(headers)
        if token is None and path in ANTHROPIC_KEY_PATHS:  # the Anthropic SDK sends its key as x-api-key
            token = headers.get(b"x-api-key")
        if self._matches(token, self.approver_token):
            return Credential("approver", self.approver.env)
        if self._matches(token, self.token):
            return Credential("service", self.config.api_key_env)
        return None

    def _service_key_refused(self, endpoint: str) -> str:
        env, service = self.approver.env, self.config.api_key_env
        if endpoint in REVIEW_DECISIONS:
            return (f"deciding a review needs the approver key (--approver-key-env: ${env}), not the service key "
                    f"(${service}): an approved answer is learned as source 'human'. An agent sends what it "
                    'knows to POST /v1/feedback with "source": "llm" instead')
        return f"approving needs the approver key (${env}), not the service key (${service})"

    async def _authorized(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes],
                          path: str, endpoint: str, api: str | None = None) -> int | None:
        """None when the request may go on (its credential in its state), else the status it was refused with."""
        credential = self._credential(headers, path)
        scope.setdefault("state", {})[STATE_KEY] = credential
        kind = credential.kind if credential is not None else None
        if self.approver_token is not None and endpoint in APPROVAL_ROUTES:
            if kind == "approver":
                return None
            if kind == "service":
                self.metrics.rejected.labels("approver_key").inc()
                await self._refuse(receive, send, 403, self._service_key_refused(endpoint))
                return 403
            return await self._unauthorized(receive, send, "approver key", self.approver.env, api)
        if kind == "approver" and endpoint in APPROVER_ALSO:
            return None
        if self.token is not None and path not in OPEN_PATHS and kind != "service":
            return await self._unauthorized(receive, send, "bearer token", self.config.api_key_env, api)
        return None

    async def _unauthorized(self, receive: Receive, send: Send, what: str, env: str | None,
                            api: str | None = None) -> int:
        self.metrics.rejected.labels("auth").inc()
        also = " or x-api-key: <it>" if api == "anthropic" else ""
        detail = f"missing or wrong {what} (Authorization: Bearer <the value of ${env}>{also})"
        await self._refuse(receive, send, 401, detail, [(b"www-authenticate", b"Bearer")], api=api)
        return 401

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str, endpoint: str) -> int:
        cfg = self.config
        headers = dict(scope["headers"])
        api = api_of(path, headers)  # the proxy's paths answer refusals in their API's error format
        refused = await self._authorized(scope, receive, send, headers, path, endpoint, api)
        if refused is not None:
            return refused
        lane = (None if path in PROBE_PATHS
                else DISPATCH_LANE if endpoint.startswith(DISPATCH_ROUTES) else CLASSIFY_LANE)
        cap = cfg.max_dispatch_in_flight if lane == DISPATCH_LANE else cfg.max_in_flight
        if lane is not None and self._in_flight(lane) >= cap:
            self.metrics.rejected.labels(lane).inc()
            retry = str(cfg.retry_after_s).encode()
            detail = f"{lane}={cap} requests are already in flight; retry after {retry.decode()} s"
            await self._refuse(receive, send, 503, detail, [(b"retry-after", retry)], api=api)
            return 503
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            self.metrics.rejected.labels("max_body_bytes").inc()
            declared = length.decode(errors="replace")
            detail = f"request body of {declared} bytes is over max_body_bytes={cfg.max_body_bytes}"
            await self._refuse(receive, send, 413, detail, read_body=length.isdigit() and int(length) <= DRAIN_CAP,
                               api=api)
            return 413
        return await self._call(scope, receive, send, lane, api)

    @staticmethod
    async def _refuse(receive: Receive, send: Send, status: int, detail: str,
                      headers: list[tuple[bytes, bytes]] | None = None, read_body: bool = True,
                      api: str | None = None) -> None:
        drained = read_body and await drain(receive)
        await send_json(send, status, detail, [*(headers or []), *([] if drained else [CLOSE])], api)

    async def _call(self, scope: Scope, receive: Receive, send: Send, lane: str | None,
                    api: str | None = None) -> int:
        cfg = self.config
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > cfg.max_body_bytes:  # a chunked body with no content-length
                    self.metrics.rejected.labels("max_body_bytes").inc()
                    state["drained"] = not message.get("more_body", False) or await drain(receive, state["received"])
                    raise HTTPException(413, f"request body is over max_body_bytes={cfg.max_body_bytes}")
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"], state["status"] = True, message["status"]
                if message["status"] == 413 and not state.get("drained", True):
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
                # A stream (the proxy's) that has started is not cut by the deadline: its first event came
                # within it, and each later gap is bounded by its model's timeout_s.
                if state.get("timeout") is not None and _is_event_stream(message):
                    state["timeout"].reschedule(None)
            await send(message)

        # A dispatch route has its own deadline, which its steps are planned to fit (dispatch/deadline.py):
        # the flat request_timeout_s would cut a provider call or a handler half-way.
        timeout, limit = (self.service.deadline_for(scope["path"])
                          or (cfg.request_timeout_s, f"request_timeout_s={cfg.request_timeout_s}"))
        self._count(lane, 1)
        try:
            async with asyncio.timeout(timeout) as state["timeout"]:
                await self.app(scope, counted_receive, tracked_send)
        except TimeoutError:
            self.metrics.rejected.labels("request_timeout_s").inc()
            if not state["started"]:
                await send_json(send, 504, f"request took longer than {limit}", api=api)
            return 504
        finally:
            self._count(lane, -1)
        return int(state["status"])
