"""The connection layer under the app: uvicorn's httptools protocol with the limits it lacks.

uvicorn closes a connection that sits idle after a response (``timeout_keep_alive``, our
``keep_alive_timeout_s``), but not one that was opened and never sent anything, nor one whose
headers trickle in (each byte received cancels its keep-alive timer), and httptools puts no bound
on the size of the headers. Here the headers of every request must arrive within
``header_timeout_s``, counted from the connection opening or from the first byte after a
response, and be at most ``max_header_bytes``. Past either limit the client gets 408 or 431 with
``connection: close`` (a connection on which nothing was sent is just closed), and the connection
goes. Every timeout, uvicorn's keep-alive one included, acts only after one more read of the
sockets, so that a request already waiting is served, not cut. The body has its own timeout in
the Guard (guard.py): only the app knows when it reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# After a refusal the rest of what the client sends is read and dropped for at most this long, so
# that it gets the answer: closing with unread data makes the kernel reset the connection instead.
LINGER_S = 2.0
# uvloop runs the timers that are due before it reads the sockets, so on a loop running late a
# timeout could cut a connection whose next request is already waiting, unread, in its buffer (the
# client sees a reset). Every timeout here acts only after one more read of the sockets.
GRACE_S = 0.001


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set by ``guarded_protocol``: the limits, and what to call (with the limit's name) on a refusal."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 32_768
    refused: Callable[[str], None] = staticmethod(lambda limit: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock: asyncio.TimerHandle | None = None  # set while the next headers are due
        self._header_bytes = 0
        self._in_message = False  # the parser is inside a request (its headers or its body)
        self._in_headers = False  # ... and its headers are not complete yet
        self._completed = False  # a request ended within the current read
        self._discarding = False  # refused: drop what comes until the client closes or LINGER_S passes

    # -- the clock ----------------------------------------------------------------------------------
    def _start_clock(self, seconds: float, then: Callable[[], None]) -> None:
        self._stop_clock()
        self._clock = self.loop.call_later(seconds, self._after_next_read, then)

    def _after_next_read(self, then: Callable[[], None]) -> None:
        self._clock = self.loop.call_later(GRACE_S, then)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _headers_late(self) -> None:
        self._clock = None
        if self._in_headers:
            self.refused("header_timeout_s")
            self._refuse(408, f"request headers not received within header_timeout_s={self.header_timeout_s:g}")
        else:  # opened and silent, or trickling bytes between requests: not a request to answer
            self.transport.close()

    async def _headers_too_large(self, scope: Any, receive: Any, send: Any) -> None:
        body = orjson.dumps({"detail": f"request headers are over max_header_bytes={self.max_header_bytes}"})
        await send({"type": "http.response.start", "status": 431, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    def _refuse(self, status: int, detail: str) -> None:
        if self.transport.is_closing():
            return
        # Only between responses: in the middle of another answer (a pipelined request) the status
        # line would corrupt it, and closing is all that is left.
        if self.cycle is None or self.cycle.response_complete:
            body = orjson.dumps({"detail": detail})
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body]))
            self.transport.write_eof()
            self._discarding = True
            self._start_clock(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    # -- uvicorn's protocol hooks -------------------------------------------------------------------
    def timeout_keep_alive_handler(self) -> None:
        # The same grace for uvicorn's keep-alive timer: a request read meanwhile cancels it.
        self.timeout_keep_alive_task = self.loop.call_later(GRACE_S, super().timeout_keep_alive_handler)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_clock(self.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        # Only a read that starts outside a request, or inside its headers, and ends no request is
        # counted: it then holds header bytes only (a read with the end of a pipelined request is
        # let through uncounted, rather than counting that request's body as headers).
        counted = not self._in_message or self._in_headers
        self._completed = False
        if self._clock is None and (self.cycle is None or self.cycle.response_complete):
            # Bytes after a response (the next request, or the rest of a body the app did not
            # read) restart the clock that uvicorn's keep-alive timer, cancelled by any byte, was.
            self._start_clock(self.header_timeout_s, self._headers_late)
        super().data_received(data)
        if counted and self._in_headers and not self._completed and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self.refused("max_header_bytes")
                self._refuse(431, f"request headers are over max_header_bytes={self.max_header_bytes}")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = self._in_headers = True
        self._header_bytes = 0
        if self._clock is None:  # a pipelined request, begun while the previous one is served
            self._start_clock(self.header_timeout_s, self._headers_late)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_clock()
        # Whatever the reads, complete headers are measured here, exactly (the count of reads in
        # data_received is for headers that do not end).
        if len(self.url) + sum(len(name) + len(value) for name, value in self.headers) <= self.max_header_bytes:
            super().on_headers_complete()
            return
        # Answered through uvicorn's own request cycle (the body, if any, is parsed and dropped).
        self.refused("max_header_bytes")
        app, self.app = self.app, self._headers_too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._in_message = self._in_headers = False
        self._completed = True
        super().on_message_complete()


def guarded_protocol(header_timeout_s: float, max_header_bytes: int,
                     refused: Callable[[str], None]) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``), with these limits bound to it."""

    class GuardedHttpTools(GuardedHttpToolsProtocol):
        pass

    GuardedHttpTools.header_timeout_s = header_timeout_s
    GuardedHttpTools.max_header_bytes = max_header_bytes
    GuardedHttpTools.refused = staticmethod(refused)
    return GuardedHttpTools
