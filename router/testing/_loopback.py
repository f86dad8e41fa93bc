"""The machinery shared by the loopback servers. ``HTTPFixture``: a threaded stdlib HTTP server on
127.0.0.1 whose ``stop()`` cuts kept-alive connections as a killed process would (also under
``FakeVLLM``). ``LoopbackServer``, for the premium providers: scripted text and tool-call answers,
queued/sticky/random faults, and streamed answers (chunked ``text/event-stream``) with counters of
the streams that finished and of those whose client went away. The protocol classes
(``_fake_openai.py``, ``_fake_anthropic.py``, ``_fake_gemini.py``) say what a valid request is and
what answers, stream events and errors look like on the wire.
"""

from __future__ import annotations

import json
import math
import random
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# "cut" (a stream drops after two events) and "stream_error" (an error event after the first content
# event) are stream faults; on a plain request "cut" drops the connection halfway through the body and
# "stream_error" answers the overloaded error.
FAULTS = ("429", "500", "overloaded", "slow", "malformed", "no_usage", "drop", "400", "401", "quota", "cut",
          "stream_error")
SOAK_FAULTS = ("429", "500", "overloaded", "slow", "malformed", "no_usage", "drop")
_QUIET_FAULTS = {"slow", "malformed", "no_usage", "cut", "stream_error"}  # not an HTTP error status

ToolCalls = list[tuple[str, dict[str, Any]]]


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

    def drop(self) -> None:
        """Close the connection at once, mid-response or before it, as a crashed server would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def slow_or_drop(self, kind: str | None, seconds: float) -> bool:
        """The two faults every fixture serves alike; True when the connection was dropped (answer nothing)."""
        if kind == "slow":
            time.sleep(seconds)
        elif kind == "drop":
            self.drop()
            return True
        return False

    def client_gone(self) -> bool:
        """Whether the client hung up. An HTTP/1.1 client sends nothing while it waits for the rest of
        a response, so a readable socket that peeks as EOF (or is reset) means it closed."""
        try:
            if not select.select([self.connection], [], [], 0)[0]:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking as soon as the client hangs up; True when it did."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if select.select([self.connection], [], [], left)[0]:
                if self.client_gone():
                    return True
                time.sleep(min(left, 0.01))  # bytes from the client, not a hang-up: keep waiting
        return self.client_gone()


class ApiError(Exception):
    """An error answer: HTTP status, the kind (mapped to each provider's error type), the message, and the
    request field at fault (``param``, which OpenAI's body carries)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers, self.param = status, kind, message, headers or {}, param


@dataclass(frozen=True)
class Event:
    """One streamed event as it goes on the wire, framing included. ``content``: it carries part of the
    answer (the ``stream_error`` fault comes after the first such event)."""

    data: bytes
    content: bool = False


def sse(data: Any, event: str | None = None, sep: str = "\n\n", content: bool = False) -> Event:
    """A server-sent event: an optional ``event:`` line and one ``data:`` line (JSON unless a str)."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return Event(f"{head}data: {text}{sep}".encode(), content)


def pieces(text: str, at_most: int | None = None) -> list[str]:
    """``text`` in word pieces that join back to it (each word keeps the spaces after it), grouped into
    ``at_most`` pieces when there are more words than that. An empty text has no pieces."""
    words = re.findall(r"\S+\s*", text)
    if not words:
        return [text] if text else []
    words[0] = text[: len(text) - len(text.lstrip())] + words[0]
    if at_most is None or len(words) <= at_most:
        return words
    size = math.ceil(len(words) / max(1, at_most))
    return ["".join(words[i: i + size]) for i in range(0, len(words), size)]


def object_body(body: Any, fields: set[str], not_object: str, unknown_field: str) -> dict[str, Any]:
    """Every provider rejects a body that is not an object, and names the first unknown field, each
    in its own words (``unknown_field`` has one ``{}`` for the field)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", not_object)
    if unknown := sorted(set(body) - fields):
        raise ApiError(400, "invalid_request", unknown_field.format(unknown[0]), param=unknown[0])
    return body


class LoopbackServer(HTTPFixture):
    """Subclasses implement ``handle(method, path, headers, body) -> (payload dict, model)``, ``error_body``,
    ``strip_usage``, the fault statuses, and for streaming ``wants_stream``, ``stream_events`` and
    ``stream_error_event``.

    Streams: the answer goes out as chunked events (``stream_chunk_delay_s`` apart; ``stream_chunks`` caps
    the number of text pieces, else one per word). HTTP-error faults answer before the stream starts;
    ``slow`` sends the headers then waits before the first event; ``cut`` sends two events and drops the
    connection; ``stream_error`` sends the provider's error event after the first content event;
    ``malformed`` sends half of the first event and ends the stream; ``no_usage`` leaves usage out.
    ``streams_done`` counts streams whose last event was sent (counted just before, so a client that has
    it sees the count); ``streams_cut`` those whose client went away first (seen before each event and on
    a failed write: poll for it). A ``cut`` fault counts in neither.
    """

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
        self.stream_chunk_delay_s = 0.0
        self.stream_chunks: int | None = None
        self.streams_done = 0
        self.streams_cut = 0
        self._rng = random.Random(seed)
        self._scripts: dict[tuple[str | None, str], deque[str]] = {}
        self._tool_scripts: dict[tuple[str | None, str], list[ToolCalls]] = {}
        self._call_ids = 0
        self._faults: deque[tuple[str, float]] = deque()
        self._sticky: tuple[str, float] | None = None
        self._seen_system: set[str] = set()
        super().__init__()

    # -- control ------------------------------------------------------------------------------------
    def script(self, query: str, *answers: str, model: str | None = None) -> None:
        """Text answers for a user message, in order; the last one repeats. ``model`` scopes them.
        A request's query is its last user text message; when no script matches that, its first."""
        self._scripts[(model, query)] = deque(answers)

    def script_tools(self, query: str, calls: ToolCalls, model: str | None = None) -> None:
        """When ``query`` comes with tools, answer these tool calls ``[(name, arguments), ...]``. Each call
        scripts one more round: round n answers a request with n assistant tool-call turns after the
        user's message; past the last round (the tool results are in) the text script or the default
        applies. Calls to a tool the request does not offer (or allow) are left out, as a model would."""
        self._tool_scripts.setdefault((model, query), []).append(list(calls))

    def fault(self, kind: str, times: int = 1, seconds: float = 0.0) -> None:
        assert kind in FAULTS, kind
        for _ in range(times):
            self._faults.append((kind, seconds))

    def always(self, kind: str | None, seconds: float = 0.0) -> None:
        self._sticky = (kind, seconds) if kind else None

    # -- helpers for the protocol classes ------------------------------------------------------------
    def answer_for(self, model: str, query: str | list[str], default: str) -> str:
        """The scripted text answer for the first of ``query`` (e.g. [last user text, first]) that has one."""
        with self._lock:
            for q in [query] if isinstance(query, str) else query:
                queue = self._scripts.get((model, q)) or self._scripts.get((None, q))
                if queue:
                    return queue.popleft() if len(queue) > 1 else queue[0]
            return default

    def tool_calls_for(self, model: str, queries: list[str], round_: int, allowed: set[str]) -> ToolCalls:
        """The scripted calls of round ``round_`` among the ``allowed`` tools; [] when none (answer text)."""
        with self._lock:
            for q in queries:
                rounds = self._tool_scripts.get((model, q)) or self._tool_scripts.get((None, q))
                if rounds:
                    calls = rounds[round_] if round_ < len(rounds) else []
                    return [(name, args) for name, args in calls if name in allowed]
        return []

    def call_id(self, prefix: str) -> str:
        """A fresh tool-call id, ``<prefix>_<n>`` (n counts up per server)."""
        with self._lock:
            self._call_ids += 1
            return f"{prefix}_{self._call_ids}"

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

    def _count(self, counter: str, step: int) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + step)

    # -- protocol hooks ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        raise NotImplementedError

    def error_body(self, status: int, kind: str, message: str, param: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def strip_usage(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def wants_stream(self, path: str, body: Any) -> bool:
        """Whether the request asks for a streamed answer (called before the request is checked)."""
        return isinstance(body, dict) and body.get("stream") is True

    def stream_events(self, path: str, body: dict[str, Any], payload: dict[str, Any]) -> list[Event]:
        """The complete answer ``payload`` as the provider streams it."""
        raise NotImplementedError

    def stream_error_event(self, path: str, err: ApiError) -> Event:
        """The provider's error event sent mid-stream."""
        raise NotImplementedError

    def stream_media_type(self, path: str) -> str:
        return "text/event-stream"

    def fault_error(self, kind: str) -> ApiError:
        if kind == "429":
            return ApiError(429, "rate_limit", "Rate limit reached; retry later.", {"Retry-After": self.retry_after})
        if kind == "quota":
            return ApiError(429, "quota", "You exceeded your current quota.")
        if kind in {"overloaded", "stream_error"}:
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
                body = fake.error_body(err.status, err.kind, err.message, err.param)
                self._send(err.status, json.dumps(body).encode(), err.headers)

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._fail(ApiError(400, "invalid_request", "The request body is not valid JSON."))
                    return
                stream = fake.wants_stream(self.path, body)
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": headers, "stream": stream})
                try:
                    payload, _model = fake.handle("POST", self.path, headers, body)
                except ApiError as err:
                    self._fail(err)
                    return
                kind, seconds = fake._next_fault()
                if kind is not None:
                    with fake._lock:
                        fake.faults_served[kind] = fake.faults_served.get(kind, 0) + 1
                if kind == "drop":
                    self.drop()
                    return
                if kind == "no_usage":
                    fake.strip_usage(payload)
                elif kind is not None and (kind not in _QUIET_FAULTS or (kind == "stream_error" and not stream)):
                    self._fail(fake.fault_error(kind))
                    return
                if stream:
                    self._stream(fake.stream_events(self.path, body, payload), kind, seconds)
                    return
                self.slow_or_drop(kind, seconds)
                data = json.dumps(payload).encode()
                if kind == "cut":  # the headers promise the whole body; half comes, then the connection drops
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.drop()
                    return
                self._send(200, data[: len(data) // 2] if kind == "malformed" else data)

            def _stream(self, events: list[Event], kind: str | None, seconds: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", fake.stream_media_type(self.path))
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if kind == "malformed":
                    events = [Event(events[0].data[: len(events[0].data) // 2])]
                elif kind == "cut":
                    events = events[:2]
                elif kind == "stream_error":
                    first = next((i for i, e in enumerate(events) if e.content), 0)
                    events = events[: first + 1] + [fake.stream_error_event(self.path, fake.fault_error(kind))]
                wait = seconds if kind == "slow" else 0.0
                try:
                    for i, event in enumerate(events):
                        # Wait (waking on a hang-up) so a closed client is seen before the next event.
                        if self.pause(wait if i == 0 else fake.stream_chunk_delay_s):
                            raise ConnectionResetError
                        self._write_event(event.data, last=i == len(events) - 1 and kind != "cut")
                except (BrokenPipeError, ConnectionResetError):
                    fake._count("streams_cut", 1)
                    self.close_connection = True
                    return
                if kind == "cut":
                    self.drop()
                    return
                try:
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the answer was all sent; only the body's end was lost

            def _write_event(self, data: bytes, last: bool) -> None:
                # The last one is counted done before it goes out, so a client that has it sees the count.
                if last:
                    fake._count("streams_done", 1)
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                except (BrokenPipeError, ConnectionResetError):
                    if last:
                        fake._count("streams_done", -1)
                    raise

        return Handler
