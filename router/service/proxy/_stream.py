"""A Server-Sent Events response that ends its upstream request when the client goes away.

Starlette's ``StreamingResponse`` cancels its sending task on ``http.disconnect`` but leaves the
generator to the garbage collector, so the upstream request would run on until then. Here the sending
and a listener for the disconnect race; whichever ends first, the other is cancelled and ``close`` runs
at once (``ProxyStream.aclose``: the upstream request ends, its reservation is metered as spent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

EVENT_STREAM = "text/event-stream"


class EventStream(Response):
    media_type = EVENT_STREAM

    def __init__(self, chunks: AsyncGenerator[bytes, None], close: Callable[[], Awaitable[None]],
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content=None, status_code=200, headers={"cache-control": "no-cache", **(headers or {})},
                         media_type=EVENT_STREAM)
        # No content-length: Response set one for the empty body; the stream's length is not known.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.chunks = chunks
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = listener = None
        try:
            # Inside the try: a client gone before the head was sent still ends the upstream request.
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            sender = asyncio.ensure_future(self._send_all(send))
            listener = asyncio.ensure_future(self._disconnected(receive))
            done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [task for task in (sender, listener) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.chunks.aclose()
            await self.close()
        if sender in done and not sender.cancelled() and sender.exception() is not None:
            raise sender.exception()  # type: ignore[misc]  # checked just above

    async def _send_all(self, send: Send) -> None:
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
