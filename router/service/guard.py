"""Limits enforced before a request reaches a route: auth, in-flight cap, body size, timeout.

Pure ASGI (no BaseHTTPMiddleware), so the per-request cost stays in microseconds. Each refusal
answers JSON ``{"detail": ...}`` naming the limit and its value; the metrics count it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.service.service import ClassifierService

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
KNOWN_PATHS = OPEN_PATHS | {"/v1/classify"}


# A refused request's body is read and dropped up to this size, so the connection stays usable
# (closing with unread data makes the kernel reset it, and the client never sees the answer).
# Beyond it the answer carries "connection: close".
DRAIN_CAP = 16 << 20
CLOSE = (b"connection", b"close")


async def drain(receive: Receive, already: int = 0) -> bool:
    """Read and drop the rest of the request body; False if it is over DRAIN_CAP or the client left."""
    seen = already
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if seen > DRAIN_CAP:
            return False


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app: ASGIApp, service: ClassifierService, api_key: str | None) -> None:
        self.app = app
        self.service = service
        self.config = service.config
        self.metrics = service.metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in KNOWN_PATHS else "other"
        started = time.perf_counter()
        status = await self._serve(scope, receive, send, path)
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> int:
        cfg = self.config
        headers = dict(scope["headers"])
        if self.expected is not None and path not in OPEN_PATHS:
            # compare_digest: the time taken does not reveal how much of the token matched.
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                self.metrics.rejected.labels("auth").inc()
                detail = f"missing or wrong bearer token (Authorization: Bearer <the value of ${cfg.api_key_env}>)"
                await self._refuse(receive, send, 401, detail, [(b"www-authenticate", b"Bearer")])
                return 401
        if self.service.in_flight >= cfg.max_in_flight:
            self.metrics.rejected.labels("max_in_flight").inc()
            retry = str(cfg.retry_after_s).encode()
            detail = f"max_in_flight={cfg.max_in_flight} requests are already in flight; retry after {retry.decode()} s"
            await self._refuse(receive, send, 503, detail, [(b"retry-after", retry)])
            return 503
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            self.metrics.rejected.labels("max_body_bytes").inc()
            declared = length.decode(errors="replace")
            detail = f"request body of {declared} bytes is over max_body_bytes={cfg.max_body_bytes}"
            await self._refuse(receive, send, 413, detail, read_body=length.isdigit() and int(length) <= DRAIN_CAP)
            return 413
        return await self._call(scope, receive, send)

    @staticmethod
    async def _refuse(receive: Receive, send: Send, status: int, detail: str,
                      headers: list[tuple[bytes, bytes]] | None = None, read_body: bool = True) -> None:
        drained = read_body and await drain(receive)
        await send_json(send, status, detail, [*(headers or []), *([] if drained else [CLOSE])])

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> int:
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
            await send(message)

        self.service.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            async with asyncio.timeout(cfg.request_timeout_s):
                await self.app(scope, counted_receive, tracked_send)
        except TimeoutError:
            self.metrics.rejected.labels("request_timeout_s").inc()
            if not state["started"]:
                await send_json(send, 504, f"request took longer than request_timeout_s={cfg.request_timeout_s}")
            return 504
        finally:
            self.service.in_flight -= 1
            self.metrics.in_flight.dec()
        return int(state["status"])
