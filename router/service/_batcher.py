"""Fair micro-batching in front of the encoder thread.

Every request that reaches the encoder is a flow: a single text a flow of one item, a ``texts``
batch a flow of many. The encoder runs jobs of at most ``max_items`` items and ``max_cost``,
where a job costs its item count times its widest item's cost (the encoder pads every text of a
job to the longest), so one job's time and memory are bounded whatever a request sends.

Jobs are filled in fair-queueing order (self-clocked fair queueing, one share per request): an
item's tag is the virtual time at which its request arrived plus the cost of that request's items
up to and including it, and the virtual time is the tag of the last item handed to the encoder.
A big batch's later items thus carry later tags than the next request's, so the batch is served
in chunks that take turns with other requests' work instead of in one job that holds the encoder:
a single text that arrives behind it waits for the job in progress and about one item per other
request, not for the whole batch.

A job waits at most ``window_s`` for company, and only while it has room and ``expected()``
(requests in flight in the server) says more requests are coming than are queued: a lone request
goes to the encoder at once. While one job runs on the encoder thread the next one gathers, so
throughput grows with load.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
T = TypeVar("T")


class _Flow(Generic[Item, T]):
    """One request's items on their way through the encoder, and where their results go."""

    __slots__ = ("future", "items", "left", "queued", "results")

    def __init__(self, items: Sequence[Item], future: asyncio.Future[list[T]]) -> None:
        self.items = items
        self.future = future
        self.results: list[T | None] = [None] * len(items)
        self.left = len(items)  # results still to come
        self.queued = len(items)  # items not yet handed to the encoder


class MicroBatcher(Generic[Item, T]):
    def __init__(self, fn: Callable[[Sequence[Item]], list[T]], window_s: float, max_items: int,
                 executor: ThreadPoolExecutor, expected: Callable[[], int] = lambda: 1 << 30,
                 observe: Callable[[int], None] = lambda size: None,
                 cost: Callable[[Item], int] = lambda item: 1, max_cost: int = 1 << 62) -> None:
        self._fn = fn
        self._observe = observe
        self._expected = expected
        self._window = window_s
        self._max = max_items
        self._cost = cost
        self._max_cost = max_cost
        self._executor = executor
        # (tag, arrival number, cost, flow, index of the item in its flow); the arrival number breaks
        # ties first come, first served, and keeps flows out of the comparison.
        self._heap: list[tuple[int, int, int, _Flow[Item, T], int]] = []
        self._arrivals = 0
        self._virtual = 0  # the tag of the last item handed to the encoder
        self._flows = 0  # requests with items queued
        self._queued_cost = 0  # the queued items' own costs: a job of them costs at least this
        self._arrived = asyncio.Event()
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
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[Item]) -> list[T]:
        """The results of ``items`` in their order: one request, served in jobs shared fairly with others."""
        if not items:
            return []
        costs = [max(1, self._cost(item)) for item in items]  # before any is queued, should one raise
        flow: _Flow[Item, T] = _Flow(items, asyncio.get_running_loop().create_future())
        tag = self._virtual
        for index, cost in enumerate(costs):
            tag += cost
            heapq.heappush(self._heap, (tag, self._arrivals, cost, flow, index))
            self._arrivals += 1
            self._queued_cost += cost
        self._flows += 1
        self._arrived.set()
        # Cancelled with its request (timeout, client gone): its queued items are then skipped.
        return await flow.future

    async def _gather(self) -> list[tuple[_Flow[Item, T], int]]:
        while not self._heap:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        # Wait for company only while the job has room and more requests are on their way than are queued.
        while len(self._heap) < self._max and self._queued_cost < self._max_cost and self._expected() > self._flows:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
        return self._take()

    def _take(self) -> list[tuple[_Flow[Item, T], int]]:
        """The next job: queued items in tag order while they fit (the first always does)."""
        job: list[tuple[_Flow[Item, T], int]] = []
        width = 0
        while self._heap and len(job) < self._max:
            tag, _, cost, flow, index = self._heap[0]
            if not flow.future.done():  # else its request gave up or failed: drop the item
                wider = max(width, cost)
                if job and wider * (len(job) + 1) > self._max_cost:
                    break
                job.append((flow, index))
                width = wider
                self._virtual = tag
            heapq.heappop(self._heap)
            self._queued_cost -= cost
            flow.queued -= 1
            if flow.queued == 0:
                self._flows -= 1
        return job

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._gather()
            if not job:
                continue
            self.batches += 1
            self.last_batch_size = len(job)
            self._observe(len(job))
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [f.items[i] for f, i in job])
            except Exception as exc:  # one bad job fails its own requests, never the batcher
                for flow, _ in job:
                    if not flow.future.done():
                        flow.future.set_exception(exc)
                continue
            for (flow, index), result in zip(job, results, strict=True):
                flow.results[index] = result
                flow.left -= 1
                if flow.left == 0 and not flow.future.done():
                    flow.future.set_result(cast("list[T]", flow.results))
