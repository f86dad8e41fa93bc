"""The one boundary between synchronous callers and the async core.

The library is async: tier 2 and the dispatcher await their model calls on the caller's event
loop, and the HTTP service opens its clients in its lifespan, on uvicorn's loop. A synchronous
caller (``Router.classify`` with tier 2 on, ``Dispatcher.dispatch``) runs the same coroutine
through a ``SyncBridge``: one event loop on one daemon thread, started on the first call that
needs it and stopped by ``close``. Nothing here is used on the server path.

Written on ``asyncio.run_coroutine_threadsafe`` rather than anyio's blocking portal, which does the
same job: a portal call cost 217 µs against 138 µs here on this 2-core machine, and every sync
tier-2 query and dispatcher call pays it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

T = TypeVar("T")


class SyncBridge:
    """Runs coroutines for synchronous callers on one long-lived loop thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="router-sync", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the bridge's loop and return its result (never call it from that loop)."""
        return asyncio.run_coroutine_threadsafe(_awaited(fn, *args), self._started()).result()

    def close(self, last: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Run ``last`` (a clean-up that must happen on the bridge's loop) if the bridge ever started,
        then stop its thread; the loop's async generators are closed first (so are pooled clients tied
        to them, router/providers/_http.py)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            if last is not None:
                asyncio.run_coroutine_threadsafe(_awaited(last), loop).result()
        finally:
            _stop(loop, thread)


async def _awaited(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class Lifecycle:
    """``with`` and ``async with`` for an object with ``close`` (sync callers: through its bridge) and
    ``aopen``/``aclose`` (on the caller's loop): the Router and the Dispatcher."""

    def close(self) -> None:
        raise NotImplementedError

    async def aopen(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.aopen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
