"""What a ``Chain`` attempt holds while it runs, and the stream it hands out once a target began answering.

``_Flight`` is one target's attempt in flight: it tells the meter, the breaker and the trace its outcome
exactly once, and gives back what it holds (the concurrency slot, the breaker's probe). A ``Chain.call``
finishes it at once; a ``ChainStream`` when its last event comes, the provider fails, or the client goes
away. ``unstoppable`` runs such clean-up to its end even when its caller is cancelled meanwhile.

A ``ChainStream`` is read by one task at a time. ``aclose`` may come from another task (a watcher that saw
the client go away) while the reader waits for the next piece: the pending read is cancelled (closing a
generator that is running is refused), that read records the outcome, and ``aclose`` waits for it; the
reader's ``async for`` then ends as if the stream had ended. Each outcome is told once, whoever sees it.

Imported by ``router.providers._chain``; the chain's types are named here for the type checker only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import replace
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from router.errors import BadResponse, ProviderError, ProviderTimeout, ProviderUnavailable
from router.providers._base import ChatRequest, Completion, StreamEnd, StreamEvent

if TYPE_CHECKING:
    from router.providers._chain import Attempt, Chain, Meter, Target

log = logging.getLogger("router.providers")
_T = TypeVar("_T")


class _Flight:
    """One target's attempt in flight, as it goes: it tells the meter, the breaker and the trace the
    attempt's outcome exactly once (``ok``, ``failed`` or ``cancelled``), and ``close`` gives back what is
    still held (the concurrency slot; the breaker's probe when no outcome was told)."""

    def __init__(self, chain: Chain, target: Target, meter: Meter | None, fallback_from: str | None,
                 attempts: list[Attempt], token: str) -> None:
        self.chain, self.target, self.meter, self.fallback_from = chain, target, meter, fallback_from
        self.attempts, self.token = attempts, token
        self.begin(1, target.timeout_s)
        self.cost = Decimal(0)

    def begin(self, number: int, timeout_s: float) -> None:
        """``timeout_s``: this attempt's bound for its answer (a stream's first event), the target's own or
        less when a deadline cut it."""
        self.number, self.timeout_s = number, timeout_s
        self.slot: asyncio.Semaphore | None = None
        self.handle: Any = None
        self.metered = self.target  # as the meter sees it: max_tokens is what is sent
        self.started = time.perf_counter()
        self.told = False  # whether the breaker was told this attempt's outcome; if not, its probe goes back

    async def reserve(self, request: ChatRequest) -> ChatRequest:
        """The request as sent (the target's output cap, or the caller's own when lower), reserved for."""
        cap = self.target.max_tokens if request.output_cap is None else min(request.output_cap,
                                                                            self.target.max_tokens)
        if request.max_tokens != cap:
            request = replace(request, max_tokens=cap)
        if cap != self.target.max_tokens:
            self.metered = replace(self.target, max_tokens=cap)
        self.handle = await self.meter.reserve(self.metered, request) if self.meter is not None else None
        self.started = time.perf_counter()
        return request

    async def ok(self, completion: Completion) -> None:
        meter = self.meter
        self.cost = await meter.settled(self.handle, self.metered, completion) if meter is not None else Decimal(0)
        state = await self.chain.breakers.record_success(self.target.key)
        self.told = True
        await self.chain._record(meter, self.attempts, self.target, self.number, "ok", _ms(self.started), completion,
                                 self.cost, self.fallback_from, None, self.timeout_s, state)

    async def failed(self, exc: ProviderError, *, sent: bool) -> None:
        """``sent``: the answer had begun (a stream's first event came), so the provider bills it."""
        state = await self.chain.breakers.record_failure(self.target.key)
        self.told = True
        log.warning("%s failed: %s", self.target.key, exc)
        if sent or isinstance(exc, ProviderTimeout):
            # The request went out and the provider may still bill it: metered at the reserved worst
            # case (an upper bound, like every reservation), never forgotten.
            await self._spent(exc.reason, f"{exc}; metered at the reserved worst case", state)
            return
        # Refused or failed before any work was billed (4xx, 429, 5xx, no connection).
        if self.meter is not None:
            await self.meter.released(self.handle)
        await self.chain._record(self.meter, self.attempts, self.target, self.number, exc.reason, _ms(self.started),
                                 None, Decimal(0), self.fallback_from, str(exc), self.timeout_s, state)

    async def cancelled(self, note: str, status: str) -> None:
        """Ended from outside once sent: metered as spent; the outcome is unknown, so the breaker is told none."""
        await self._spent(status, note, None)

    async def _spent(self, status: str, error: str, breaker: str | None) -> None:
        meter = self.meter
        usage, self.cost = await meter.spent(self.handle, self.metered) if meter is not None else (None, Decimal(0))
        completion = Completion("", usage, self.target.model) if usage is not None else None
        await self.chain._record(meter, self.attempts, self.target, self.number, status, _ms(self.started), completion,
                                 self.cost, self.fallback_from, error, self.timeout_s, breaker)

    async def close(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if not self.told:
            self.told = True
            await self.chain.breakers.abandon(self.target.key, self.token)


class ChainStream:
    """A stream that ``Chain.open_stream`` opened on ``target``: iterate it for its events (the first,
    buffered, then the rest; it ends after the ``StreamEnd``), or ``aclose`` it to end the upstream request.

    Once it has begun a provider failure raises its ``ProviderError`` out of the iteration (the breaker
    is told a failure, the reservation is metered as spent); a cancelled iteration or an ``aclose`` is the
    client going away (the breaker's probe is given back, the reservation spent, the attempt traced as
    ``cancelled``); the ``StreamEnd`` settles the meter and tells the breaker a success. ``completion``
    and ``cost`` are the answer's once it ended (``cost``: what was metered, also on a failure).

    Each gap between events is bounded by the target's ``timeout_s``: a dispatch deadline cut only the
    wait for the first event (a stream that has begun is not cut short for the sake of a fallback that
    can no longer be tried)."""

    def __init__(self, flight: _Flight, events: AsyncIterator[StreamEvent], first: StreamEvent,
                 attempts: list[Attempt], errors: list[tuple[Target, ProviderError]]) -> None:
        self._flight, self._events = flight, events
        self._first: StreamEvent | None = first
        self._ended = False
        self._finish: asyncio.Future[None] | None = None  # the clean-up, once begun: told once, awaited by all
        self._reader: asyncio.Task[Any] | None = None  # the task waiting for the next piece, if any
        self._interrupted: asyncio.Task[Any] | None = None  # a reader that aclose cancelled
        self._idle = asyncio.Event()
        self._idle.set()
        self.attempts, self.errors = attempts, errors
        self.completion: Completion | None = None

    @property
    def target(self) -> Target:
        return self._flight.target

    @property
    def fallback_from(self) -> str | None:
        return self._flight.fallback_from

    @property
    def cost(self) -> Decimal:
        return self._flight.cost

    def __aiter__(self) -> ChainStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._ended:
            raise StopAsyncIteration
        flight = self._flight
        if self._first is not None:
            event, self._first = self._first, None
        else:
            event = await self._read(flight)
        if isinstance(event, StreamEnd):
            self.completion = event.completion
            await self._end(partial(flight.ok, event.completion))
        return event

    async def _read(self, flight: _Flight) -> StreamEvent:
        if self._reader is not None:  # the provider's generator refuses a second reader too
            raise RuntimeError("this stream is already being read by another task")
        task = asyncio.current_task()
        self._reader = task
        self._idle.clear()
        try:
            event = await guarded(flight.target, next_event(flight.target, self._events), flight.target.timeout_s)
        except ProviderError as exc:
            await self._end(partial(flight.failed, exc, sent=True))
            raise
        except BaseException as stop:  # the consumer was cancelled (or aclose cancelled it): the client went away
            await self._end(partial(flight.cancelled, "cancelled by the client while streaming; metered at the "
                                                      "reserved worst case", "cancelled"))
            if (isinstance(stop, asyncio.CancelledError) and task is not None and self._interrupted is task
                    and task.uncancel() == 0):
                raise StopAsyncIteration from None  # only aclose's cancellation: the reader sees the stream end
            raise
        finally:
            self._reader = None
            self._idle.set()
        if self._ended:  # ended by another task meanwhile (defensive: aclose cancels a pending read)
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """End the stream now (the client went away): cancels a read in progress in another task and waits
        for the outcome it records; nothing more once it has ended."""
        reader = self._reader
        if reader is not None and not self._ended and reader is not asyncio.current_task():
            self._interrupted = reader
            reader.cancel()
            await self._idle.wait()
        await self._end(partial(self._flight.cancelled, "closed by the client while streaming; metered at the "
                                                        "reserved worst case", "cancelled"))

    async def __aenter__(self) -> ChainStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _end(self, outcome: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Tell the outcome (the first one only: later callers wait for it), end the upstream request, give
        back the slot and probe. Run to its end even when the consumer is cancelled meanwhile (a client gone
        under anyio is cancelled at every await): the reservation must still be metered and the probe given
        back. The consumer still sees its cancellation."""
        self._ended = True
        if self._finish is None:
            self._finish = started(self._ending(outcome()))
        await asyncio.shield(self._finish)

    async def _ending(self, outcome: Coroutine[Any, Any, None]) -> None:
        try:
            await outcome
        finally:
            try:
                await close_events(self._events)  # ends the upstream request when it is still going
            finally:
                await self._flight.close()


# What unstoppable runs, referenced until done (the loop keeps only weak references to tasks).
_FINISHING: set[asyncio.Task[None]] = set()


def started(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """``work`` as a task that runs to its end whoever stops waiting for it."""
    task = asyncio.ensure_future(work)
    _FINISHING.add(task)
    task.add_done_callback(_finished)
    return task


async def unstoppable(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` to its end even when the caller is cancelled meanwhile (clean-up: metering, giving back
    a probe or a slot); the caller still sees its cancellation, at once."""
    await asyncio.shield(started(work))


def _finished(task: asyncio.Task[None]) -> None:
    _FINISHING.discard(task)
    if not task.cancelled() and task.exception() is not None:  # retrieved: an error nobody awaits is logged here
        log.debug("a chain's clean-up raised", exc_info=task.exception())


async def guarded(target: Target, work: Awaitable[_T], timeout_s: float) -> _T:
    """``work`` within ``timeout_s``, with any failure as a ``ProviderError`` of this target."""
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError:
        raise ProviderTimeout(target.provider, f"no answer within timeout_s={timeout_s:g}") from None
    except ProviderError:
        raise
    except Exception as exc:  # an adapter's bug fails this target only, never the caller
        log.exception("provider %s raised", target.provider)
        error = ProviderUnavailable(target.provider, f"{type(exc).__name__}: {exc}",
                                    reason=f"error:{type(exc).__name__}")
        error.retryable = False  # a bug does not go away by asking again
        raise error from exc


async def next_event(target: Target, events: AsyncIterator[StreamEvent]) -> StreamEvent:
    """A stream's next event; its end before a ``StreamEnd`` is a bad response."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise BadResponse(target.provider, "the stream ended without its last event (StreamEnd)",
                          reason="malformed") from None


async def close_events(events: AsyncIterator[StreamEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # a stream that fails as it closes has nothing more to say; the outcome stands
        log.debug("closing a stream raised", exc_info=True)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
