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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property
from typing import Any, Protocol

from tenacity import wait_random_exponential

from router import _telemetry
from router.errors import CircuitOpen, FallbacksExhausted, ProviderError, ProviderTimeout, ProviderUnavailable
from router.providers._base import ChatRequest, Completion, Provider, Usage
from router.providers._breaker import BreakerConfig, Breakers, CircuitBreaker, LocalBreakers
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
            try:
                completion = await self._retrying(target, request, meter, fallback_from, attempts, slot, token)
            except ProviderError as exc:
                errors.append((target, exc))
                continue
            return ChainResult(completion, target, fallback_from, attempts, errors)
        raise FallbacksExhausted(name, [e for _, e in errors], [t.key for t, _ in errors],
                                 spent_tokens=sum(a.tokens for a in attempts),
                                 spent_cost=float(sum((a.cost for a in attempts), Decimal(0))))

    # -- the breaker's probe ------------------------------------------------------------------------
    async def _allow(self, target: Target, token: str) -> bool:
        try:
            return await self.breakers.allow(target.key, token, target.timeout_s + PROBE_MARGIN_S)
        except asyncio.CancelledError:  # it may have granted the probe before the answer was lost
            await self.breakers.abandon(target.key, token)
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

    async def _retrying(self, target: Target, request: ChatRequest, meter: Meter | None, fallback_from: str | None,
                        attempts: list[Attempt], slot: Slot | None, token: str) -> Completion:
        """Up to ``1 + max_retries`` attempts. The loop is written here rather than run by tenacity's
        AsyncRetrying, which costs about 60 µs a call even when the first attempt answers (it inspects
        its callbacks at each step): this is every model call's path. The policy is tenacity's: retry
        only what ``_should_retry`` allows, wait ``_wait``, and stop early when the wait would not fit
        the target's deadline slot (the time belongs to the next target, which is tried instead).
        ``token``: the first attempt's, already let through by the breaker."""
        last = 1 + self.retry.max_retries
        for number in range(1, last + 1):
            if number > 1:
                token = _token()
                if not await self._allow(target, token):
                    raise CircuitOpen(target.key, "breaker opened during retries; moving to the next model")
            # Within the slot: min(timeout_s, what is left of it), so the next target keeps its share.
            timeout_s = target.timeout_s if slot is None else min(target.timeout_s, max(MIN_ATTEMPT_S, slot.left()))
            try:
                return await self._attempt(target, request, number, meter, fallback_from, attempts, timeout_s,
                                           token)
            except ProviderError as exc:
                if number == last or not self._should_retry(exc):
                    raise
                wait = self._wait(exc, number)
                if slot is not None and not slot.fits(wait):
                    raise
            await self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- one attempt -------------------------------------------------------------------------------
    async def _attempt(self, target: Target, request: ChatRequest, number: int, meter: Meter | None,
                       fallback_from: str | None, attempts: list[Attempt], timeout_s: float, token: str) -> Completion:
        slot = self._slot(target)
        if slot is None:
            return await self._metered(target, request, number, meter, fallback_from, attempts, timeout_s, token)
        try:  # waited for before the reservation and the timeout: nothing is sent yet
            await slot.acquire()
        except BaseException:  # cancelled while waiting: not tried, so a probe it got goes back
            await self.breakers.abandon(target.key, token)
            raise
        try:
            return await self._metered(target, request, number, meter, fallback_from, attempts, timeout_s, token)
        finally:
            slot.release()

    async def _metered(self, target: Target, request: ChatRequest, number: int, meter: Meter | None,
                       fallback_from: str | None, attempts: list[Attempt], timeout_s: float, token: str) -> Completion:
        if request.max_tokens != target.max_tokens:  # the target's own output cap
            request = replace(request, max_tokens=target.max_tokens)
        recorded = False  # whether the breaker was told this attempt's outcome; if not, its probe goes back
        try:
            handle = await meter.reserve(target, request) if meter is not None else None
            started = time.perf_counter()
            try:
                completion = await self._timed(target, request, timeout_s)
            except ProviderTimeout as exc:
                # The request went out and the provider may still bill it: metered at the reserved worst
                # case (an upper bound, like every reservation), never forgotten.
                state = await self.breakers.record_failure(target.key)
                recorded = True
                await self._spent(meter, handle, attempts, target, number, started, fallback_from,
                                  f"{exc}; metered at the reserved worst case", timeout_s, state)
                raise
            except ProviderError as exc:  # refused or failed before any work was billed (4xx, 429, 5xx, no connection)
                if meter is not None:
                    await meter.released(handle)
                state = await self.breakers.record_failure(target.key)
                recorded = True
                log.warning("%s failed: %s", target.key, exc)
                await self._record(meter, attempts, target, number, exc.reason, _ms(started), None, Decimal(0),
                                   fallback_from, str(exc), timeout_s, state)
                raise
            except BaseException:
                # Cancelled from outside (a dispatch cut at shutdown, a caller's own timeout) once the
                # request may have gone out: metered the same way, and traced as a timeout. Its outcome
                # is unknown, so the breaker is not told one.
                await self._spent(meter, handle, attempts, target, number, started, fallback_from,
                                  "cancelled once sent; metered at the reserved worst case", timeout_s)
                raise
            cost = await meter.settled(handle, target, completion) if meter is not None else Decimal(0)
            state = await self.breakers.record_success(target.key)
            recorded = True
            await self._record(meter, attempts, target, number, "ok", _ms(started), completion, cost, fallback_from,
                               None, timeout_s, state)
            return completion
        finally:
            if not recorded:
                await self.breakers.abandon(target.key, token)

    async def _timed(self, target: Target, request: ChatRequest, timeout_s: float) -> Completion:
        provider = self.providers[target.provider]
        try:
            async with asyncio.timeout(timeout_s):
                return await provider.complete(target.model, request, timeout_s)
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

    async def _spent(self, meter: Meter | None, handle: Any, attempts: list[Attempt], target: Target, number: int,
                     started: float, fallback_from: str | None, error: str, timeout_s: float,
                     breaker: str | None = None) -> None:
        usage, cost = await meter.spent(handle, target) if meter is not None else (None, Decimal(0))
        completion = Completion("", usage, target.model) if usage is not None else None
        await self._record(meter, attempts, target, number, "timeout", _ms(started), completion, cost, fallback_from,
                           error, timeout_s, breaker)

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


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _token() -> str:
    """An attempt's name for its breaker: unique across processes and hosts (a shared breaker's probe
    is given back only by the token that holds it)."""
    return secrets.token_hex(8)
