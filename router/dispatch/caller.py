"""One stage's model call: the fallback chain, retries with backoff, breakers, budget, trace.

For each model of the chain (primary, then the stage's fallbacks in order): skip it if its
breaker is open; otherwise try it up to ``1 + retry.max_retries`` times, retrying only
retryable failures (timeouts, 429, 5xx/529, dropped connections), waiting Retry-After when the
provider gave one and exponential backoff with full jitter otherwise. Every attempt reserves
budget first (a refusal stops the whole call, nothing is sent), counts on the model's breaker,
and leaves one trace record.

Within a dispatch, each model of the chain runs in its slot of the dispatch's deadline
(``deadline.py``): attempts are cut to fit it and a retry that would not fit is skipped, so the
fallbacks are always tried. An attempt that timed out, or was cancelled from outside, once its
request may have gone out is metered at its reservation (the provider may bill it); one refused
or failed before any work (4xx, 429, 5xx, no connection) releases it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from router.breaker import CircuitBreaker
from router.dispatch.budget import Ledger, Reservation
from router.dispatch.config import ModelRef, ModelRoutingConfig, Stage
from router.dispatch.deadline import MIN_ATTEMPT_S, Deadline, Slot
from router.dispatch.pricing import call_cost, max_call_cost
from router.dispatch.providers import ChatRequest, Completion, Provider, Usage
from router.dispatch.trace import TraceSink
from router.errors import CircuitOpen, FallbacksExhausted, ProviderError, ProviderTimeout


class _OutOfSlot(stop_base):
    """Stop retrying when the coming wait would leave no attempt time in the model's slot."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.slot.fits(retry_state.upcoming_sleep)


@dataclass(frozen=True)
class Attempt:
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
class CallResult:
    completion: Completion
    provider: str
    model: str
    cost: Decimal
    fallback_from: str | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.completion.usage.total

    @property
    def spent_tokens(self) -> int:
        """Every attempt's metered tokens: the answer's, plus those of attempts that timed out once sent."""
        return sum(a.tokens for a in self.attempts)

    @property
    def spent_cost(self) -> Decimal:
        return sum((a.cost for a in self.attempts), Decimal(0))


class ModelCaller:
    def __init__(
        self,
        config: ModelRoutingConfig,
        providers: dict[str, Provider],
        ledger: Ledger,
        sink: TraceSink,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        breaker_clock: Callable[[], float] = time.monotonic,
        drill_stages: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.providers = providers
        self.ledger = ledger
        self.sink = sink
        self._sleep = sleep
        self._breaker_clock = breaker_clock
        self.drill_stages = drill_stages
        self.breakers: dict[str, CircuitBreaker] = {}
        retry = config.retry
        self._jitter = wait_random_exponential(multiplier=retry.initial_backoff_s, max=retry.max_backoff_s)

    def breaker(self, ref: ModelRef) -> CircuitBreaker:
        if ref.key not in self.breakers:
            self.breakers[ref.key] = CircuitBreaker(self.config.breaker, clock=self._breaker_clock)
        return self.breakers[ref.key]

    def chain(self, skill: str, stage: Stage) -> list[ModelRef]:
        chain = self.config.chain(skill, stage)
        # A failover drill sends all of the stage's traffic to its secondary: the primary is left out.
        return chain[1:] if stage in self.drill_stages else chain

    async def call(self, *, stage: Stage, skill: str, session: str, request: ChatRequest,
                   chain: list[ModelRef] | None = None, deadline: Deadline | None = None) -> CallResult:
        """``deadline``: the dispatch's time budget; each model then runs within its slot (deadline.py)."""
        chain = self.chain(skill, stage) if chain is None else chain
        primary = self.config.chain(skill, stage)[0].key
        errors: list[ProviderError] = []
        models: list[str] = []
        attempts: list[Attempt] = []
        for i, ref in enumerate(chain):
            fallback_from = primary if ref.key != primary else None
            breaker = self.breaker(ref)
            if not breaker.allow():
                exc = CircuitOpen(ref.key, f"breaker open, next probe in {breaker.retry_after():.1f}s")
                errors.append(exc)
                models.append(ref.key)
                self._record(attempts, stage, skill, session, ref, 0, exc.reason, 0.0, None, Decimal(0), fallback_from,
                             str(exc))
                continue
            slot = deadline.slot(chain[i:]) if deadline is not None else None
            if deadline is not None and slot is not None and slot.left() < MIN_ATTEMPT_S:
                late = ProviderTimeout(ref.key, f"not tried: {max(0.0, slot.left()):.2f}s left of its share of "
                                                f"dispatch_timeout_s={deadline.seconds:g}", reason="deadline")
                errors.append(late)
                models.append(ref.key)
                self._record(attempts, stage, skill, session, ref, 0, late.reason, 0.0, None, Decimal(0),
                             fallback_from, str(late))
                continue
            try:
                completion, cost = await self._retrying(stage, skill, session, ref, request, fallback_from, attempts,
                                                        slot)
            except ProviderError as exc:
                errors.append(exc)
                models.append(ref.key)
                continue
            return CallResult(completion, ref.provider, ref.model, cost, fallback_from, attempts)
        raise FallbacksExhausted(f"{stage} for skill {skill!r}", errors, models,
                                 spent_tokens=sum(a.tokens for a in attempts),
                                 spent_cost=float(sum((a.cost for a in attempts), Decimal(0))))

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        # A wait longer than we accept is better spent on the next model of the chain.
        return exc.retry_after is None or exc.retry_after <= self.config.retry.max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._jitter(state))

    async def _retrying(self, stage: Stage, skill: str, session: str, ref: ModelRef, request: ChatRequest,
                        fallback_from: str | None, attempts: list[Attempt],
                        slot: Slot | None = None) -> tuple[Completion, Decimal]:
        breaker = self.breaker(ref)
        result: tuple[Completion, Decimal] | None = None
        stop: stop_base = stop_after_attempt(1 + self.config.retry.max_retries)
        if slot is not None:
            # A retry whose wait would run past this model's slot is not made: the time belongs to
            # the next model of the chain, which is tried instead.
            stop = stop_any(stop, _OutOfSlot(slot))
        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1 and not breaker.allow():
                    raise CircuitOpen(ref.key, "breaker opened during retries; moving to the next model")
                # Within the slot: min(timeout_s, what is left of it), so the next model keeps its share.
                timeout_s = ref.timeout_s if slot is None else min(ref.timeout_s, max(MIN_ATTEMPT_S, slot.left()))
                result = await self._attempt(stage, skill, session, ref, request, number, fallback_from, attempts,
                                             timeout_s)
        assert result is not None  # reraise=True: the loop either set it or raised
        return result

    async def _attempt(self, stage: Stage, skill: str, session: str, ref: ModelRef, request: ChatRequest,
                       number: int, fallback_from: str | None, attempts: list[Attempt],
                       timeout_s: float | None = None) -> tuple[Completion, Decimal]:
        timeout_s = ref.timeout_s if timeout_s is None else timeout_s
        price = self.config.prices[ref.model]
        request = dataclasses.replace(request, max_tokens=ref.max_tokens)
        # The worst case, not an estimate: settled below with the provider's usage, so no cap is overshot.
        bound = request.max_input_tokens()
        reservation = self.ledger.reserve(session, bound + ref.max_tokens, max_call_cost(price, bound, ref.max_tokens))
        breaker = self.breaker(ref)
        started = time.perf_counter()
        try:
            completion = await self.providers[ref.provider].complete(ref.model, request, timeout_s)
        except ProviderTimeout as exc:
            # The request went out and the provider may still bill it: metered at the reserved worst
            # case (an upper bound, like every reservation), never forgotten.
            breaker.record_failure()
            self._meter_worst(attempts, stage, skill, session, ref, number, reservation, started, fallback_from,
                              f"{exc}; metered at the reserved worst case", timeout_s)
            raise
        except ProviderError as exc:  # refused or failed before any work was billed (4xx, 429, 5xx, no connection)
            self.ledger.release(reservation)
            breaker.record_failure()
            latency = (time.perf_counter() - started) * 1000
            self._record(attempts, stage, skill, session, ref, number, exc.reason, latency, None, Decimal(0),
                         fallback_from, str(exc), timeout_s)
            raise
        except BaseException:
            # Cancelled from outside (a dispatch cut at shutdown, a caller's own timeout) once the
            # request may have gone out: metered the same way, and traced as a timeout.
            self._meter_worst(attempts, stage, skill, session, ref, number, reservation, started, fallback_from,
                              "cancelled once sent; metered at the reserved worst case", timeout_s)
            raise
        latency = (time.perf_counter() - started) * 1000
        cost = call_cost(price, completion.usage)
        self.ledger.settle(reservation, completion.usage.total, cost)
        breaker.record_success()
        self._record(attempts, stage, skill, session, ref, number, "ok", latency, completion, cost, fallback_from, None,
                     timeout_s)
        return completion, cost

    def _meter_worst(self, attempts: list[Attempt], stage: Stage, skill: str, session: str, ref: ModelRef,
                     number: int, reservation: Reservation, started: float, fallback_from: str | None, error: str,
                     timeout_s: float) -> None:
        latency = (time.perf_counter() - started) * 1000
        worst = Usage(input_tokens=reservation.tokens - ref.max_tokens, output_tokens=ref.max_tokens, estimated=True)
        self.ledger.settle(reservation, reservation.tokens, reservation.cost)
        self._record(attempts, stage, skill, session, ref, number, "timeout", latency, Completion("", worst, ref.model),
                     reservation.cost, fallback_from, error, timeout_s)

    def _record(self, attempts: list[Attempt], stage: Stage, skill: str, session: str, ref: ModelRef, attempt: int,
                status: str, latency_ms: float, completion: Completion | None, cost: Decimal,
                fallback_from: str | None, error: str | None, timeout_s: float | None = None) -> None:
        """One attempt: into the call's own list and, as a trace record, into the sink.

        ``timeout_s`` is the attempt's own bound: its model's ``timeout_s``, or less when the dispatch's
        deadline cut it.
        """
        usage = completion.usage if completion is not None else None
        attempts.append(Attempt(ref.provider, ref.model, attempt, status, latency_ms, error,
                                usage.total if usage else 0, cost))
        record: dict[str, Any] = {
            "ts": time.time(), "kind": "call", "session": session, "skill": skill, "stage": stage,
            "provider": ref.provider, "model": ref.model, "attempt": attempt, "status": status,
            "latency_ms": round(latency_ms, 3),
            "input_tokens": usage.input_tokens if usage else 0,
            "cached_input_tokens": usage.cached_input_tokens if usage else 0,
            "cache_write_tokens": usage.cache_write_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "tokens": usage.total if usage else 0,
            "usage_estimated": usage.estimated if usage else False,
            "cost_usd": float(cost),
            "fallback_from": fallback_from,
            "breaker": self.breaker(ref).state,
            "budget_left": self.ledger.left(session),
        }
        if timeout_s is not None:
            record["timeout_s"] = round(timeout_s, 3)
        if error is not None:
            record["error"] = error
        self.sink.write(record)
