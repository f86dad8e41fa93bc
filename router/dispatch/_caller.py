"""One stage's model call: the chain of the stage's models (``router.providers.Chain``), metered.

The chain does the fallbacks, retries, breakers and deadline slots (see ``router/providers/_chain.py``);
this module adds what only the dispatcher has: every attempt reserves budget first (a refusal
stops the whole call, nothing is sent), is priced, and leaves one trace record. An attempt that
timed out, or was cancelled from outside, once its request may have gone out is metered at its
reservation (the provider may bill it); one refused or failed before any work (4xx, 429, 5xx, no
connection) releases it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from router.dispatch._budget import Ledger, Reservation
from router.dispatch._config import ModelRef, ModelRoutingConfig, Stage
from router.dispatch._pricing import call_cost, max_call_cost
from router.dispatch._trace import TraceSink
from router.providers import (
    Attempt,
    AttemptInfo,
    Chain,
    ChatRequest,
    CircuitBreaker,
    Completion,
    Deadline,
    Provider,
    Target,
    Usage,
)


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


class _StageMeter:
    """The ``Meter`` of one stage's call: budgets, cost and trace records for its session."""

    def __init__(self, caller: ModelCaller, stage: Stage, skill: str, session: str) -> None:
        self.caller, self.stage, self.skill, self.session = caller, stage, skill, session

    def reserve(self, target: Target, request: ChatRequest) -> Reservation:
        price = self.caller.config.prices[target.model]
        # The worst case, not an estimate: settled with the provider's usage, so no cap is overshot.
        bound = request.max_input_tokens()
        return self.caller.ledger.reserve(self.session, bound + target.max_tokens,
                                          max_call_cost(price, bound, target.max_tokens))

    def settled(self, handle: Reservation, target: Target, completion: Completion) -> Decimal:
        cost = call_cost(self.caller.config.prices[target.model], completion.usage)
        self.caller.ledger.settle(handle, completion.usage.total, cost)
        return cost

    def spent(self, handle: Reservation, target: Target) -> tuple[Usage, Decimal]:
        self.caller.ledger.settle(handle, handle.tokens, handle.cost)
        return Usage(input_tokens=handle.tokens - target.max_tokens, output_tokens=target.max_tokens,
                     estimated=True), handle.cost

    def released(self, handle: Reservation) -> None:
        self.caller.ledger.release(handle)

    def record(self, attempt: Attempt, info: AttemptInfo) -> None:
        """One attempt as a trace record. ``timeout_s`` is the attempt's own bound: its model's
        ``timeout_s``, or less when the dispatch's deadline cut it."""
        usage = info.usage
        record: dict[str, Any] = {
            "ts": time.time(), "kind": "call", "session": self.session, "skill": self.skill, "stage": self.stage,
            "provider": attempt.provider, "model": attempt.model, "attempt": attempt.attempt,
            "status": attempt.status, "latency_ms": round(attempt.latency_ms, 3),
            "input_tokens": usage.input_tokens if usage else 0,
            "cached_input_tokens": usage.cached_input_tokens if usage else 0,
            "cache_write_tokens": usage.cache_write_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "tokens": usage.total if usage else 0,
            "usage_estimated": usage.estimated if usage else False,
            "cost_usd": float(attempt.cost),
            "fallback_from": info.fallback_from,
            "breaker": info.breaker,
            "budget_left": self.caller.ledger.left(self.session),
        }
        if info.timeout_s is not None:
            record["timeout_s"] = round(info.timeout_s, 3)
        if attempt.error is not None:
            record["error"] = attempt.error
        self.caller.sink.write(record)


class ModelCaller:
    """The dispatcher's model calls: the model-routing file's chains over one ``Chain``, metered."""

    def __init__(
        self,
        config: ModelRoutingConfig,
        providers: Mapping[str, Provider],
        ledger: Ledger,
        sink: TraceSink,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        breaker_clock: Callable[[], float] = time.monotonic,
        drill_stages: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.sink = sink
        self.drill_stages = drill_stages
        self.models = Chain(providers, breaker=config.breaker, retry=config.retry, sleep=sleep,
                            breaker_clock=breaker_clock)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Per ``provider/model`` key."""
        return self.models.breakers

    def breaker(self, ref: ModelRef) -> CircuitBreaker:
        return self.models.breaker(ref.target)

    def chain(self, skill: str, stage: Stage) -> list[ModelRef]:
        chain = self.config.chain(skill, stage)
        # A failover drill sends all of the stage's traffic to its secondary: the primary is left out.
        return chain[1:] if stage in self.drill_stages else chain

    async def call(self, *, stage: Stage, skill: str, session: str, request: ChatRequest,
                   chain: list[ModelRef] | None = None, deadline: Deadline | None = None) -> CallResult:
        """``deadline``: the dispatch's time budget; each model then runs within its slot."""
        chain = self.chain(skill, stage) if chain is None else chain
        primary = self.config.chain(skill, stage)[0].key
        result = await self.models.call([r.target for r in chain], request,
                                        meter=_StageMeter(self, stage, skill, session), deadline=deadline,
                                        primary=primary, name=f"{stage} for skill {skill!r}")
        return CallResult(result.completion, result.target.provider, result.target.model, result.cost,
                          result.fallback_from, result.attempts)
