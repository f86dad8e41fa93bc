"""Micro-batching: concurrent single-query requests that reach the encoder are encoded together.

A request waits at most ``window_s`` for company (or until ``max_items`` have gathered), and
only while ``expected()`` (requests in flight in the server) says more are coming: a lone
request goes to the encoder at once. While one batch runs on the encoder thread the next one
gathers, so throughput grows with load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
T = TypeVar("T")


class MicroBatcher(Generic[Item, T]):
    def __init__(self, fn: Callable[[Sequence[Item]], list[T]], window_s: float, max_items: int,
                 executor: ThreadPoolExecutor, expected: Callable[[], int] = lambda: 1 << 30,
                 observe: Callable[[int], None] = lambda size: None) -> None:
        self._fn = fn
        self._observe = observe
        self._expected = expected
        self._window = window_s
        self._max = max_items
        self._executor = executor
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[T]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # for metrics and tests
        self.last_batch_size = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, item: Item) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[Item, asyncio.Future[T]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        while len(batch) < self._max:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self._expected() <= len(batch):  # nobody else is on the way: do not wait
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(t, f) for t, f in batch if not f.done()]  # drop requests whose client gave up
            if not live:
                continue
            self.batches += 1
            self.last_batch_size = len(live)
            self._observe(len(live))
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [t for t, _ in live])
            except Exception as exc:  # one bad batch fails its own requests, never the batcher
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), result in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(result)
