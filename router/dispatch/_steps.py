"""The dispatcher's steps in flight: each runs as a task kept until it ends, so that a caller that
stops waiting does not cut it, and closing can let it finish, then cut it, on whichever loop it runs
(the HTTP service's, the sync bridge's, a script's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
# A step still running this long after it was cancelled (a handler that swallows the cancellation) is left behind.
CANCEL_WAIT_S = 5.0


class Steps:
    def __init__(self) -> None:
        self._inflight: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, coro: Coroutine[Any, Any, T], shield: bool = True) -> T:
        """Run ``coro`` as a kept task. ``shield``: a caller that stops waiting (its HTTP request
        cancelled) leaves the step running to its end, within its own deadline, so no side effect
        loses its records half-way."""
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await (asyncio.shield(task) if shield else task)

    async def drain(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for the steps in flight, then cancel those still running, each on its loop."""
        loop = asyncio.get_running_loop()
        watched = {w: t for t in list(self._inflight) if (w := _watch(t, loop)) is not None}
        if not watched:
            return
        _, late = await asyncio.wait(watched, timeout=wait_s)
        for watcher in late:
            task = watched[watcher]
            if task.get_loop() is loop:
                task.cancel()
            else:
                _threadsafe(task.get_loop(), task.cancel)
        if late:
            await asyncio.wait(late, timeout=CANCEL_WAIT_S)


def _threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> bool:
    """Schedule ``fn(*args)`` on ``loop`` from any thread; False when that loop is closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        return False
    return True


def _watch(task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
    """A future on ``loop`` that is done when ``task`` (on any loop) is; None when its loop is gone."""
    done: asyncio.Future[None] = loop.create_future()

    def finish(_: object) -> None:
        if not done.done():
            done.set_result(None)

    owner = task.get_loop()
    if owner is loop:
        task.add_done_callback(finish)
        return done
    if owner.is_closed() or not _threadsafe(owner, task.add_done_callback,
                                            lambda _: _threadsafe(loop, finish, None)):
        return None
    return done
