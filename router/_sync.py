"""The one boundary between synchronous callers and the async core.

The library is async: tier 2 and the dispatcher await their model calls on the caller's event
loop, and the HTTP service opens its clients in its lifespan, on uvicorn's loop. A synchronous
caller (``Router.classify`` with tier 2 on, ``Dispatcher.dispatch``) runs the same coroutine
through a ``SyncBridge``: an anyio blocking portal, a library's event loop on one thread, started
on the first call that needs it and stopped by ``close``. Nothing here is used on the server path.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")


class SyncBridge:
    """Runs coroutines for synchronous callers on one long-lived loop thread (anyio's portal)."""

    def __init__(self, on_start: Callable[[], Awaitable[Any]] | None = None) -> None:
        """``on_start``: awaited on the bridge's loop when it starts (e.g. opening pooled clients there,
        which ``close``'s ``last`` then closes)."""
        self._on_start = on_start
        self._lock = threading.Lock()
        self._manager: AbstractContextManager[Any] | None = None
        self._portal: Any = None

    def _started(self) -> Any:
        with self._lock:
            if self._portal is None:
                from anyio.from_thread import start_blocking_portal

                manager = start_blocking_portal(name="router-sync")
                portal = manager.__enter__()
                try:
                    if self._on_start is not None:
                        portal.call(self._on_start)
                except BaseException:
                    manager.__exit__(None, None, None)
                    raise
                self._manager, self._portal = manager, portal
            return self._portal

    @property
    def running(self) -> bool:
        return self._portal is not None

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the bridge's loop and return its result (never call it from that loop)."""
        result: T = self._started().call(fn, *args)
        return result

    def close(self, last: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Run ``last`` (a clean-up that must happen on the bridge's loop) if the bridge ever started,
        then stop its thread."""
        with self._lock:
            manager, portal = self._manager, self._portal
            self._manager = self._portal = None
        if manager is None:
            return
        try:
            if last is not None:
                portal.call(last)
        finally:
            manager.__exit__(None, None, None)
