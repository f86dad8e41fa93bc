"""One stage's model call: the chain of the stage's models (``router.providers.Chain``), metered.

The chain does the fallbacks, retries, breakers and deadline slots (see ``router/providers/_chain.py``);
this module adds what only the dispatcher has: every attempt reserves budget first (a refusal
stops the whole call, nothing is sent), is priced, and leaves one trace record. An attempt that
timed out, or was cancelled from outside, once its request may have gone out is metered at its
reservation (the provider may bill it); one refused or failed before any work (4xx, 429, 5xx, no
connection) releases it. Budgets and breakers are the dispatcher's state's (``router.state``).

``stream`` is the same call as a stream (``StreamCall``), metered the same way: settled at its last
event, spent when it fails or the client goes away once it has begun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from router.dispatch._config import ModelRef, ModelRoutingConfig, Stage
from router.dispatch._pricing import call_cost, max_call_cost
from router.dispatch._trace import TraceSink
from router.errors import StateUnavailable
from router.providers import (
    Attempt,
    AttemptInfo,
    Breakers,
    Chain,
    ChainStream,
    ChatRequest,
    CircuitBreaker,
    Completion,
    Deadline,
    Provider,
    StreamEvent,
    Target,
    Usage,
)
from router.state import Reservation, State

log = logging.getLogger("router.dispatch")


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


class StreamCall:
    """A stage's model call as a stream: iterate it for the events (it ends after the ``StreamEnd``), or
    ``aclose`` it when the client goes away. ``completion`` and ``cost`` once it has ended."""

    def __init__(self, stream: ChainStream) -> None:
        self._stream = stream

    @property
    def provider(self) -> str:
        return self._stream.target.provider

    @property
    def model(self) -> str:
        return self._stream.target.model

    @property
    def fallback_from(self) -> str | None:
        return self._stream.fallback_from

    @property
    def attempts(self) -> list[Attempt]:
        return self._stream.attempts

    @property
    def cost(self) -> Decimal:
        return self._stream.cost

    @property
    def completion(self) -> Completion | None:
        return self._stream.completion

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._stream

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> StreamCall:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _StageMeter:
    """The ``Meter`` of one stage's call: budgets, cost and trace records for its session."""

    def __init__(self, caller: ModelCaller, stage: Stage, skill: str, session: str) -> None:
        self.caller, self.stage, self.skill, self.session = caller, stage, skill, session

    async def reserve(self, target: Target, request: ChatRequest) -> Reservation:
        price = self.caller.config.prices[target.model]
        # The worst case, not an estimate: settled with the provider's usage, so no cap is overshot.
        bound = request.max_input_tokens()
        return await self.caller.state.budgets.reserve(self.session, bound + target.max_tokens,
                                                       max_call_cost(price, bound, target.max_tokens))

    async def settled(self, handle: Reservation, target: Target, completion: Completion) -> Decimal:
        cost = call_cost(self.caller.config.prices[target.model], completion.usage)
        if completion.usage.total > handle.tokens or cost > handle.cost:
            # The reservation is meant to be an upper bound; a provider billing more means the bound is wrong.
            log.warning("session %r: the provider billed %d tokens / $%s, over the reserved bound of %d / $%s",
                        self.session, completion.usage.total, cost, handle.tokens, handle.cost)
        await self.caller.state.budgets.settle(handle, completion.usage.total, cost)
        return cost

    async def spent(self, handle: Reservation, target: Target) -> tuple[Usage, Decimal]:
        await self.caller.state.budgets.settle(handle, handle.tokens, handle.cost)
        return Usage(input_tokens=handle.tokens - target.max_tokens, output_tokens=target.max_tokens,
                     estimated=True), handle.cost

    async def released(self, handle: Reservation) -> None:
        await self.caller.state.budgets.release(handle)

    async def record(self, attempt: Attempt, info: AttemptInfo) -> None:
        """One attempt as a trace record. ``timeout_s`` is the attempt's own bound: its model's
        ``timeout_s``, or less when the dispatch's deadline cut it. ``budget_left`` is null when the
        state cannot be read: the record is written all the same."""
        try:
            left: dict[str, Any] | None = await self.caller.state.budgets.left(self.session)
        except StateUnavailable:
            left = None
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
            "budget_left": left,
        }
        if info.timeout_s is not None:
            record["timeout_s"] = round(info.timeout_s, 3)
        if attempt.error is not None:
            record["error"] = attempt.error
        self.caller.sink.write(record)


class ModelCaller:
    """The dispatcher's model calls: the model-routing file's chains over one ``Chain``, metered; the
    budgets and the breakers are ``state``'s."""

    def __init__(
        self,
        config: ModelRoutingConfig,
        providers: Mapping[str, Provider],
        state: State,
        sink: TraceSink,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        drill_stages: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.state = state
        self.sink = sink
        self.drill_stages = drill_stages
        self.models = Chain(providers, breaker=config.breaker, retry=config.retry, sleep=sleep,
                            breakers=state.breakers)

    @property
    def breakers(self) -> Breakers:
        """Per ``provider/model`` key (``breakers[key].state`` for the memory state's ``LocalBreakers``)."""
        return self.models.breakers

    def breaker(self, ref: ModelRef) -> CircuitBreaker:
        """The in-process breaker of ``ref`` (the memory state only)."""
        return self.models.breaker(ref.target)

    def chain(self, skill: str, stage: Stage) -> list[ModelRef]:
        return self._drilled(self.config.chain(skill, stage), stage)

    def _drilled(self, configured: list[ModelRef], stage: Stage) -> list[ModelRef]:
        # A failover drill sends all of the stage's traffic to its secondary: the primary is left out.
        return configured[1:] if stage in self.drill_stages else configured

    def _along(self, skill: str, stage: Stage, chain: list[ModelRef] | None,
               primary: str | None) -> tuple[list[Target], str]:
        """The targets to try (the stage's chain unless one is given) and the key ``fallback_from`` names:
        ``primary`` when given (a caller's own chain, such as the proxy's one named model), else the stage's
        configured primary."""
        if chain is not None and primary is not None:
            return [r.target for r in chain], primary
        configured = self.config.chain(skill, stage)  # built once: every dispatched model call comes here
        if chain is None:
            chain = self._drilled(configured, stage)
        return [r.target for r in chain], primary if primary is not None else configured[0].key

    async def call(self, *, stage: Stage, skill: str, session: str, request: ChatRequest,
                   chain: list[ModelRef] | None = None, deadline: Deadline | None = None,
                   primary: str | None = None) -> CallResult:
        """``deadline``: the dispatch's time budget; each model then runs within its slot. ``primary``: the
        ``provider/model`` key that ``fallback_from`` names when another model answers (default: the stage's
        configured primary)."""
        targets, primary = self._along(skill, stage, chain, primary)
        result = await self.models.call(targets, request, meter=_StageMeter(self, stage, skill, session),
                                        deadline=deadline, primary=primary, name=f"{stage} for skill {skill!r}")
        return CallResult(result.completion, result.target.provider, result.target.model, result.cost,
                          result.fallback_from, result.attempts)

    async def stream(self, *, stage: Stage, skill: str, session: str, request: ChatRequest,
                     chain: list[ModelRef] | None = None, deadline: Deadline | None = None,
                     primary: str | None = None) -> StreamCall:
        """``call`` as a stream, once a model has begun answering (``FallbacksExhausted`` when none did)."""
        targets, primary = self._along(skill, stage, chain, primary)
        opened = await self.models.open_stream(targets, request, meter=_StageMeter(self, stage, skill, session),
                                               deadline=deadline, primary=primary,
                                               name=f"{stage} for skill {skill!r}")
        return StreamCall(opened)
