"""One stage's model call: the fallback chain, retries with backoff, breakers, budget, trace.

For each model of the chain (primary, then the stage's fallbacks in order): skip it if its
breaker is open; otherwise try it up to ``1 + retry.max_retries`` times, retrying only
retryable failures (timeouts, 429, 5xx/529, dropped connections), waiting Retry-After when the
provider gave one and exponential backoff with full jitter otherwise. Every attempt reserves
budget first (a refusal stops the whole call, nothing is sent), counts on the model's breaker,
and leaves one trace record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from router.breaker import CircuitBreaker
from router.dispatch.budget import Ledger
from router.dispatch.config import ModelRef, RoutingConfig, Stage
from router.dispatch.pricing import call_cost, estimate_cost
from router.dispatch.providers import ChatRequest, Completion, Provider
from router.dispatch.trace import TraceSink
from router.errors import CircuitOpen, FallbacksExhausted, ProviderError


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    attempt: int
    status: str
    latency_ms: float
    error: str | None = None


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


class ModelCaller:
    def __init__(
        self,
        config: RoutingConfig,
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
                   chain: list[ModelRef] | None = None) -> CallResult:
        chain = self.chain(skill, stage) if chain is None else chain
        primary = self.config.chain(skill, stage)[0].key
        errors: list[ProviderError] = []
        models: list[str] = []
        attempts: list[Attempt] = []
        for ref in chain:
            fallback_from = primary if ref.key != primary else None
            breaker = self.breaker(ref)
            if not breaker.allow():
                exc = CircuitOpen(ref.key, f"breaker open, next probe in {breaker.retry_after():.1f}s")
                errors.append(exc)
                models.append(ref.key)
                self._record(attempts, stage, skill, session, ref, 0, exc.reason, 0.0, None, Decimal(0), fallback_from,
                             str(exc))
                continue
            try:
                completion, cost = await self._retrying(stage, skill, session, ref, request, fallback_from, attempts)
            except ProviderError as exc:
                errors.append(exc)
                models.append(ref.key)
                continue
            return CallResult(completion, ref.provider, ref.model, cost, fallback_from, attempts)
        raise FallbacksExhausted(f"{stage} for skill {skill!r}", errors, models)

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
                        fallback_from: str | None, attempts: list[Attempt]) -> tuple[Completion, Decimal]:
        breaker = self.breaker(ref)
        result: tuple[Completion, Decimal] | None = None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.config.retry.max_retries),
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
                result = await self._attempt(stage, skill, session, ref, request, number, fallback_from, attempts)
        assert result is not None  # reraise=True: the loop either set it or raised
        return result

    async def _attempt(self, stage: Stage, skill: str, session: str, ref: ModelRef, request: ChatRequest,
                       number: int, fallback_from: str | None, attempts: list[Attempt]) -> tuple[Completion, Decimal]:
        price = self.config.prices[ref.model]
        request = dataclasses.replace(request, max_tokens=ref.max_tokens)
        estimate = request.estimated_input_tokens()
        reservation = self.ledger.reserve(session, estimate + ref.max_tokens,
                                          estimate_cost(price, estimate, ref.max_tokens))
        breaker = self.breaker(ref)
        started = time.perf_counter()
        try:
            completion = await self.providers[ref.provider].complete(ref.model, request, ref.timeout_s)
        except ProviderError as exc:
            self.ledger.release(reservation)
            breaker.record_failure()
            latency = (time.perf_counter() - started) * 1000
            self._record(attempts, stage, skill, session, ref, number, exc.reason, latency, None, Decimal(0),
                         fallback_from, str(exc))
            raise
        except BaseException:
            self.ledger.release(reservation)  # cancelled: nothing settles, the budget is freed
            raise
        latency = (time.perf_counter() - started) * 1000
        cost = call_cost(price, completion.usage)
        self.ledger.settle(reservation, completion.usage.total, cost)
        breaker.record_success()
        self._record(attempts, stage, skill, session, ref, number, "ok", latency, completion, cost, fallback_from, None)
        return completion, cost

    def _record(self, attempts: list[Attempt], stage: Stage, skill: str, session: str, ref: ModelRef, attempt: int,
                status: str, latency_ms: float, completion: Completion | None, cost: Decimal,
                fallback_from: str | None, error: str | None) -> None:
        """One attempt: into the call's own list and, as a trace record, into the sink."""
        attempts.append(Attempt(ref.provider, ref.model, attempt, status, latency_ms, error))
        usage = completion.usage if completion is not None else None
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
        if error is not None:
            record["error"] = error
        self.sink.write(record)
