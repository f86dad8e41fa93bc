"""One ``Chain`` for ordered fallbacks: breakers, retries, concurrency slots, timeouts, deadlines.

For each target of the chain (primary, then the fallbacks in order): skip it if its breaker is
open, or if the deadline leaves it no time; otherwise try it up to ``1 + retry.max_retries``
times, retrying only retryable failures (timeouts, 429, 5xx/529, dropped connections), waiting
Retry-After when the provider gave one (up to ``max_retry_after_s``; a longer wait moves on to
the next target) and exponential backoff with full jitter otherwise. The breaker is asked again
before each retry. Each attempt waits for its target's concurrency slot first (outside its
timeout: waiting for a slot is not the backend's fault), then is bounded by the target's
``timeout_s`` (cut to what is left of its deadline slot). An unexpected exception from an adapter
counts as that target's failure (``ProviderUnavailable``, reason ``error:<Type>``, not retried):
it never crashes the caller.

Breakers are per (provider, model), behind the async ``Breakers`` Protocol: in this process by
default (``LocalBreakers``), or shared between processes (the dispatcher's Redis state). Each attempt
asks its breaker with a token of its own; an attempt that the breaker let through but whose outcome
is never recorded (its reservation was refused, no time was left, it was cancelled while waiting
for its slot or in flight) gives the half-open probe back (``abandon``), so that it never stays held
for others; a probe whose holder vanished expires after the target's ``timeout_s`` plus
``PROBE_MARGIN_S``. A ``Meter``
(the dispatcher's budgets, cost and trace; async, since its state may be remote) is told about
every attempt: ``reserve`` before it is sent (raising there stops the whole call, nothing is sent),
then exactly one of ``settled`` (answered), ``spent`` (timed out or cancelled once sent: the
provider may bill it) or ``released`` (refused or failed before any work), and ``record`` for every
attempt, skipped ones included. Tier 2 passes no meter.

``open_stream`` tries the same targets the same way until one's stream yields its first event, and
returns it as a ``ChainStream``; from then on there is no fallback (text was passed on): a failure
raises out of its iteration, metered ``spent`` and told to the breaker; the client going away
(``aclose``, a cancelled consumer) meters ``spent`` and gives the probe back; its ``StreamEnd``
settles. The attempt's concurrency slot is held until the stream ends. A deadline cuts only the wait for
a stream's first event; its gaps after that are bounded by the target's ``timeout_s``. Both paths share
one ``_Flight`` per attempt (``router/providers/_chain_stream.py``), which tells each outcome exactly once.

``ChatRequest.output_cap`` (an agent's own max_tokens) lowers what is sent to
``min(output_cap, target.max_tokens)``, and the meter reserves for that.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar

from tenacity import wait_random_exponential

from router import _telemetry
from router.errors import (
    CircuitOpen,
    FallbacksExhausted,
    ProviderError,
    ProviderTimeout,
)
from router.providers._base import ChatRequest, Completion, Provider, StreamEvent, Usage, stream_whole
from router.providers._breaker import BreakerConfig, Breakers, CircuitBreaker, LocalBreakers
from router.providers._chain_stream import ChainStream, _Flight, close_events, guarded, next_event, unstoppable
from router.providers._config import RetryConfig
from router.providers._deadline import MIN_ATTEMPT_S, Deadline, Slot

log = logging.getLogger("router.providers")
# How long a half-open probe may outlive its call's timeout_s (the reservation and settlement around
# it) before another caller may probe: only a prober that vanished without giving it back waits it out.
PROBE_MARGIN_S = 10.0


@dataclass(frozen=True)
class Target:
    """One model of a chain: which provider serves it, and the bounds of each attempt.

    ``max_concurrency``: attempts in flight at once (per event loop); more wait for a slot. None: no bound.
    """

    provider: str
    model: str
    timeout_s: float = 30.0
    max_tokens: int = 1024
    max_concurrency: int | None = None

    @cached_property
    def key(self) -> str:  # looked up several times per attempt (breakers, records)
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class Attempt:
    """One attempt (``attempt`` 0: skipped without a call), and what the meter charged for it."""

    provider: str
    model: str
    attempt: int
    status: str
    latency_ms: float
    error: str | None = None
    # What this attempt was metered: an answer's usage, or the reservation of one that timed out once sent.
    tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class AttemptInfo:
    """What the meter's ``record`` is told besides the ``Attempt``."""

    target: Target
    usage: Usage | None
    fallback_from: str | None
    timeout_s: float | None
    breaker: str


class Meter(Protocol):
    """Budgets, cost and trace around each attempt of a chain call (see the module docstring)."""

    async def reserve(self, target: Target, request: ChatRequest) -> Any: ...

    async def settled(self, handle: Any, target: Target, completion: Completion) -> Decimal: ...

    async def spent(self, handle: Any, target: Target) -> tuple[Usage, Decimal]: ...

    async def released(self, handle: Any) -> None: ...

    async def record(self, attempt: Attempt, info: AttemptInfo) -> None: ...


@dataclass(frozen=True)
class ChainResult:
    completion: Completion
    target: Target
    fallback_from: str | None  # the primary's key when another target answered
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[tuple[Target, ProviderError]] = field(default_factory=list)  # the targets that failed first

    @property
    def cost(self) -> Decimal:
        return self.attempts[-1].cost if self.attempts else Decimal(0)


@dataclass(frozen=True)
class _Numbered:
    """What tenacity's backoff reads of a retry state: the number of the attempt that failed."""

    attempt_number: int


class Chain:
    """Calls ``providers`` (name → Provider) along an ordered list of ``Target``s.

    ``breakers``: where the breakers live; by default in this process (``LocalBreakers`` of ``breaker``
    on ``breaker_clock``)."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        breaker: BreakerConfig | None = None,
        retry: RetryConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        breaker_clock: Callable[[], float] = time.monotonic,
        breakers: Breakers | None = None,
    ) -> None:
        self.providers = providers
        self.breaker_config = breaker or BreakerConfig()
        self.retry = retry or RetryConfig()
        self._sleep = sleep
        self.breakers: Breakers = breakers if breakers is not None else LocalBreakers(self.breaker_config,
                                                                                      breaker_clock)
        self._jitter = wait_random_exponential(multiplier=self.retry.initial_backoff_s, max=self.retry.max_backoff_s)
        # asyncio.Semaphore binds to the loop that first waits on it: one set per loop.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary())

    def breaker(self, target: Target) -> CircuitBreaker:
        """The in-process breaker of ``target`` (tier 2, the memory state); shared breakers have none."""
        if not isinstance(self.breakers, LocalBreakers):
            raise TypeError(f"the chain's breakers are {type(self.breakers).__name__}, not in this process: "
                            "ask them with `await chain.breakers.state(key)`")
        return self.breakers[target.key]

    def _slot(self, target: Target) -> asyncio.Semaphore | None:
        if target.max_concurrency is None:
            return None
        per_loop = self._slots.setdefault(asyncio.get_running_loop(), {})
        if target.key not in per_loop:
            per_loop[target.key] = asyncio.Semaphore(target.max_concurrency)
        return per_loop[target.key]

    async def call(self, targets: Sequence[Target], request: ChatRequest, *, meter: Meter | None = None,
                   deadline: Deadline | None = None, primary: str | None = None,
                   name: str = "chain") -> ChainResult:
        """The first answer along ``targets``; ``FallbacksExhausted`` (named ``name``) with every
        target's error when none answers. ``primary``: the key ``fallback_from`` names (default: the
        first target's); ``deadline``: each target then runs within its slot."""
        found = await self._first(targets, request, meter, deadline, primary, name, self._timed)
        # Shielded: a cancel while settling would leave the reservation unsettled and the slot held.
        await unstoppable(_answered(found.flight, found.value))
        return ChainResult(found.value, found.flight.target, found.flight.fallback_from, found.attempts, found.errors)

    async def open_stream(self, targets: Sequence[Target], request: ChatRequest, *, meter: Meter | None = None,
                          deadline: Deadline | None = None, primary: str | None = None,
                          name: str = "chain") -> ChainStream:
        """The first target's stream that yields its first event, tried along ``targets`` exactly as
        ``call`` tries them (a failure before the first event falls back); ``FallbacksExhausted`` when none
        does. Once a stream has begun a failure raises out of its iteration: text was already passed on.
        Iterate it to its end or ``aclose`` it: its concurrency slot is held until then."""
        found = await self._first(targets, request, meter, deadline, primary, name, self._first_event)
        events, first = found.value
        return ChainStream(found.flight, events, first, found.attempts, found.errors)

    async def _first(self, targets: Sequence[Target], request: ChatRequest, meter: Meter | None,
                     deadline: Deadline | None, primary: str | None, name: str,
                     exchange: Callable[[Target, ChatRequest, float], Awaitable[_T]]) -> _Found[_T]:
        """Along ``targets``, the first whose ``exchange`` succeeds, its flight still open (its outcome
        not yet told: the caller does, then closes it)."""
        primary = primary if primary is not None else (targets[0].key if targets else None)
        errors: list[tuple[Target, ProviderError]] = []
        attempts: list[Attempt] = []
        for i, target in enumerate(targets):
            fallback_from = primary if target.key != primary else None
            token = _token()
            if not await self._allow(target, token):
                skipped: ProviderError = CircuitOpen(
                    target.key, f"breaker open, next probe in {await self.breakers.retry_after(target.key):.1f}s")
                errors.append((target, skipped))
                await self._record(meter, attempts, target, 0, skipped.reason, 0.0, None, Decimal(0), fallback_from,
                                   str(skipped))
                continue
            slot = deadline.slot(targets[i:]) if deadline is not None else None
            if deadline is not None and slot is not None and slot.left() < MIN_ATTEMPT_S:
                await self.breakers.abandon(target.key, token)  # not tried: a probe it got goes back
                skipped = ProviderTimeout(target.key, f"not tried: {max(0.0, slot.left()):.2f}s left of its share of "
                                                      f"dispatch_timeout_s={deadline.seconds:g}", reason="deadline")
                errors.append((target, skipped))
                await self._record(meter, attempts, target, 0, skipped.reason, 0.0, None, Decimal(0), fallback_from,
                                   str(skipped))
                continue
            flight = _Flight(self, target, meter, fallback_from, attempts, token)
            try:
                value = await self._retrying(flight, request, slot, exchange)
            except ProviderError as exc:
                errors.append((target, exc))
                continue
            return _Found(value, flight, attempts, errors)
        raise FallbacksExhausted(name, [e for _, e in errors], [t.key for t, _ in errors],
                                 spent_tokens=sum(a.tokens for a in attempts),
                                 spent_cost=float(sum((a.cost for a in attempts), Decimal(0))))

    # -- the breaker's probe ------------------------------------------------------------------------
    async def _allow(self, target: Target, token: str) -> bool:
        try:
            return await self.breakers.allow(target.key, token, target.timeout_s + PROBE_MARGIN_S)
        except asyncio.CancelledError:  # it may have granted the probe before the answer was lost
            await unstoppable(self.breakers.abandon(target.key, token))
            raise

    # -- retries -----------------------------------------------------------------------------------
    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        # A wait longer than we accept is better spent on the next target of the chain.
        return exc.retry_after is None or exc.retry_after <= self.retry.max_retry_after_s

    def _wait(self, exc: ProviderError, number: int) -> float:
        """Retry-After when the provider said, else exponential backoff with full jitter (tenacity's)."""
        if exc.retry_after is not None:
            return exc.retry_after
        return float(self._jitter(_Numbered(number)))  # type: ignore[arg-type]  # reads attempt_number only

    async def _retrying(self, flight: _Flight, request: ChatRequest, slot: Slot | None,
                        exchange: Callable[[Target, ChatRequest, float], Awaitable[_T]]) -> _T:
        """Up to ``1 + max_retries`` attempts. The loop is written here rather than run by tenacity's
        AsyncRetrying, which costs about 60 µs a call even when the first attempt answers (it inspects
        its callbacks at each step): this is every model call's path. The policy is tenacity's: retry
        only what ``_should_retry`` allows, wait ``_wait``, and stop early when the wait would not fit
        the target's deadline slot (the time belongs to the next target, which is tried instead).
        ``flight.token``: the first attempt's, already let through by the breaker."""
        target = flight.target
        last = 1 + self.retry.max_retries
        for number in range(1, last + 1):
            if number > 1:
                flight.token = _token()
                if not await self._allow(target, flight.token):
                    raise CircuitOpen(target.key, "breaker opened during retries; moving to the next model")
            # Within the slot: min(timeout_s, what is left of it), so the next target keeps its share.
            flight.begin(number, target.timeout_s if slot is None else min(target.timeout_s,
                                                                          max(MIN_ATTEMPT_S, slot.left())))
            try:
                return await self._attempt(flight, request, exchange)
            except ProviderError as exc:
                if number == last or not self._should_retry(exc):
                    raise
                wait = self._wait(exc, number)
                if slot is not None and not slot.fits(wait):
                    raise
            await self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- one attempt -------------------------------------------------------------------------------
    async def _attempt(self, flight: _Flight, request: ChatRequest,
                       exchange: Callable[[Target, ChatRequest, float], Awaitable[_T]]) -> _T:
        """One attempt: its concurrency slot, its reservation, then ``exchange``. On success the flight stays
        open (slot held, outcome untold) for the caller to finish; on failure it is finished here."""
        target = flight.target
        slot = self._slot(target)
        if slot is not None:
            try:  # waited for before the reservation and the timeout: nothing is sent yet
                await slot.acquire()
            except BaseException:  # cancelled while waiting: not tried, so a probe it got goes back
                await unstoppable(self.breakers.abandon(target.key, flight.token))
                raise
            flight.slot = slot
        try:
            sent = await flight.reserve(request)
            try:
                return await exchange(target, sent, flight.timeout_s)
            except ProviderError as exc:
                await flight.failed(exc, sent=False)
                raise
            except BaseException:
                # Cancelled from outside (a dispatch cut at shutdown, a caller's own timeout) once the
                # request may have gone out: metered as sent, and traced as a timeout. Its outcome is
                # unknown, so the breaker is not told one. Shielded: anyio cancels again at every await.
                await unstoppable(flight.cancelled("cancelled once sent; metered at the reserved worst case",
                                                    "timeout"))
                raise
        except BaseException:
            await unstoppable(flight.close())  # the slot and the probe go back even when cancelled again
            raise

    async def _timed(self, target: Target, request: ChatRequest, timeout_s: float) -> Completion:
        provider = self.providers[target.provider]
        return await guarded(target, provider.complete(target.model, request, timeout_s), timeout_s)

    async def _first_event(self, target: Target, request: ChatRequest,
                           timeout_s: float) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """A target's stream and its first event within ``timeout_s`` (the attempt's bound, which a deadline
        may have cut); the stream itself is opened with the target's own ``timeout_s``, which bounds each gap
        once it has begun (no fallback is left to keep time for then)."""
        return await guarded(target, self._opened(target, request, timeout_s), timeout_s)

    async def _opened(self, target: Target, request: ChatRequest,
                      timeout_s: float) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        provider = self.providers[target.provider]
        # A provider written before streams (a custom one) answers whole, as one piece, within the attempt's bound.
        opened = getattr(provider, "stream", None)
        events = (opened(target.model, request, target.timeout_s) if opened
                  else stream_whole(provider, target.model, request, timeout_s))
        try:
            return events, await next_event(target, events)
        except BaseException:
            await close_events(events)
            raise

    async def _record(self, meter: Meter | None, attempts: list[Attempt], target: Target, number: int, status: str,
                      latency_ms: float, completion: Completion | None, cost: Decimal, fallback_from: str | None,
                      error: str | None, timeout_s: float | None = None, breaker: str | None = None) -> None:
        """``breaker``: the breaker's state after this attempt, when its record returned it (else asked)."""
        usage = completion.usage if completion is not None else None
        attempt = Attempt(target.provider, target.model, number, status, latency_ms, error,
                          usage.total if usage else 0, cost)
        attempts.append(attempt)
        if _telemetry.tracer is not None:  # a span per attempt, skipped ones included (router/_telemetry.py)
            _telemetry.attempt_span(attempt, target, self.providers.get(target.provider), completion, fallback_from,
                                    meter)
        if meter is not None:
            if breaker is None:
                breaker = await self.breakers.state(target.key)
            await meter.record(attempt, AttemptInfo(target, usage, fallback_from, timeout_s, breaker))


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Found(Generic[_T]):
    """The target that answered along a chain: its exchange's value and its still-open flight."""

    value: _T
    flight: _Flight
    attempts: list[Attempt]
    errors: list[tuple[Target, ProviderError]]


async def _answered(flight: _Flight, completion: Completion) -> None:
    try:
        await flight.ok(completion)
    finally:
        await flight.close()


def _token() -> str:
    """An attempt's name for its breaker: unique across processes and hosts (a shared breaker's probe
    is given back only by the token that holds it)."""
    return secrets.token_hex(8)
