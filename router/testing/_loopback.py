"""The machinery shared by the loopback servers. ``HTTPFixture``: a threaded stdlib HTTP server on
127.0.0.1 whose ``stop()`` cuts kept-alive connections as a killed process would (also under
``FakeVLLM``). ``LoopbackServer``, for the premium providers: scripted answers and
queued/sticky/random faults. The protocol classes in ``providers.py`` say what a valid request is
and what answers and errors look like on the wire.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

FAULTS = ("429", "500", "overloaded", "slow", "malformed", "no_usage", "drop", "400", "401", "quota")
SOAK_FAULTS = ("429", "500", "overloaded", "slow", "malformed", "no_usage", "drop")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected under fault injection, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HTTPFixture:
    """A threaded stdlib HTTP server on 127.0.0.1 for tests; ``stop()`` also cuts kept-alive
    connections, as a killed process would. Subclasses give ``_handler()`` (a ``FixtureHandler``)."""

    def __init__(self) -> None:
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        # A short poll interval so stop() returns at once (the default 0.5 s adds up over a test run).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()


class FixtureHandler(BaseHTTPRequestHandler):
    """Keep-alive, no Nagle delay, silent, its connection tracked by ``fixture`` for ``stop()``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    fixture: HTTPFixture

    def setup(self) -> None:
        super().setup()
        with self.fixture._lock:
            self.fixture._connections.add(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def slow_or_drop(self, kind: str | None, seconds: float) -> bool:
        """The two faults every fixture serves alike; True when the connection was dropped (answer nothing)."""
        if kind == "slow":
            time.sleep(seconds)
        elif kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


class LoopbackServer(HTTPFixture):
    """Subclasses implement ``handle(method, path, headers, body) -> (payload dict, model)``, ``error_body``,
    ``strip_usage`` and the fault statuses."""

    overloaded_status = 503

    def __init__(self, api_key: str | None = "test-key", fault_rate: float = 0.0, seed: int = 0,
                 fault_kinds: tuple[str, ...] = SOAK_FAULTS, slow_s: float = 5.0, retry_after: str = "1") -> None:
        self.api_key = api_key
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.faults_served: dict[str, int] = {}
        self.fixed_usage: dict[str, int] | None = None
        self._rng = random.Random(seed)
        self._scripts: dict[tuple[str | None, str], deque[str]] = {}
        self._faults: deque[tuple[str, float]] = deque()
        self._sticky: tuple[str, float] | None = None
        self._seen_system: set[str] = set()
        super().__init__()

    # -- control ------------------------------------------------------------------------------------
    def script(self, query: str, *answers: str, model: str | None = None) -> None:
        """Answers for a user message, in order; the last one repeats. ``model`` scopes them."""
        self._scripts[(model, query)] = deque(answers)

    def fault(self, kind: str, times: int = 1, seconds: float = 0.0) -> None:
        assert kind in FAULTS, kind
        for _ in range(times):
            self._faults.append((kind, seconds))

    def always(self, kind: str | None, seconds: float = 0.0) -> None:
        self._sticky = (kind, seconds) if kind else None

    # -- helpers for the protocol classes ------------------------------------------------------------
    def answer_for(self, model: str, query: str, default: str) -> str:
        with self._lock:
            queue = self._scripts.get((model, query)) or self._scripts.get((None, query))
            if not queue:
                return default
            return queue.popleft() if len(queue) > 1 else queue[0]

    def usage_counts(self, system: str, prompt: str, answer: str) -> tuple[int, int, int]:
        """(uncached input, cached input, output) in whitespace tokens; a system part seen before is cached."""
        if self.fixed_usage is not None:
            u = self.fixed_usage
            return u.get("input", 0), u.get("cached", 0), u.get("output", 0)
        with self._lock:
            cached = len(system.split()) if system in self._seen_system else 0
            self._seen_system.add(system)
        total = len(system.split()) + len(prompt.split())
        return total - cached, cached, max(1, len(answer.split()))

    def _next_fault(self) -> tuple[str | None, float]:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._sticky:
                return self._sticky
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds), self.slow_s
        return None, 0.0

    # -- protocol hooks ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        raise NotImplementedError

    def error_body(self, status: int, kind: str, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def strip_usage(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def fault_error(self, kind: str) -> ApiError:
        if kind == "429":
            return ApiError(429, "rate_limit", "Rate limit reached; retry later.", {"Retry-After": self.retry_after})
        if kind == "quota":
            return ApiError(429, "quota", "You exceeded your current quota.")
        if kind == "overloaded":
            return ApiError(self.overloaded_status, "overloaded", "Overloaded")
        if kind == "400":
            return ApiError(400, "invalid_request", "Invalid request (injected).")
        if kind == "401":
            return ApiError(401, "authentication", "Invalid API key (injected).")
        return ApiError(500, "server", "Internal server error (injected).")

    # -- HTTP ------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(FixtureHandler):
            fixture = fake

            def _fail(self, err: ApiError) -> None:
                self._send(err.status, json.dumps(fake.error_body(err.status, err.kind, err.message)).encode(),
                           err.headers)

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._fail(ApiError(400, "invalid_request", "The request body is not valid JSON."))
                    return
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": headers})
                try:
                    payload, _model = fake.handle("POST", self.path, headers, body)
                except ApiError as err:
                    self._fail(err)
                    return
                kind, seconds = fake._next_fault()
                if kind is not None:
                    with fake._lock:
                        fake.faults_served[kind] = fake.faults_served.get(kind, 0) + 1
                if self.slow_or_drop(kind, seconds):
                    return
                if kind == "no_usage":
                    fake.strip_usage(payload)
                elif kind is not None and kind not in {"malformed", "slow"}:
                    self._fail(fake.fault_error(kind))
                    return
                data = json.dumps(payload).encode()
                self._send(200, data[: len(data) // 2] if kind == "malformed" else data)

        return Handler
