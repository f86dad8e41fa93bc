"""A half-open breaker's probe is given back whenever the attempt it let through is not made or its
outcome is not recorded: a refused reservation, no time left, a cancellation while waiting for the
slot or in flight. Otherwise one session at its budget cap would keep a healthy provider dark."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from router.errors import BudgetExceeded, FallbacksExhausted
from router.providers import (
    Attempt,
    AttemptInfo,
    BreakerConfig,
    Chain,
    ChatRequest,
    Completion,
    Deadline,
    HttpClients,
    Message,
    ProviderConfig,
    RetryConfig,
    Target,
    Usage,
    build_provider,
)
from router.providers._breaker import HALF_OPEN

REQUEST = ChatRequest(system="s", messages=(Message("user", "hi"),))
KEY = "p/m"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Hanging:
    """A provider whose calls never answer; ``entered`` is set once one is in flight."""

    name = "p"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def complete(self, model: str, request: ChatRequest, timeout_s: float) -> Completion:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class Refusing:
    """A meter whose every reservation is refused: the session is at its budget cap."""

    async def reserve(self, target: Target, request: ChatRequest) -> Any:
        raise BudgetExceeded("session_tokens", 100, 100, 10, "session 's'")

    async def settled(self, handle: Any, target: Target, completion: Completion) -> Decimal:
        raise AssertionError("never reserved")

    async def spent(self, handle: Any, target: Target) -> tuple[Usage, Decimal]:
        raise AssertionError("never reserved")

    async def released(self, handle: Any) -> None:
        raise AssertionError("never reserved")

    async def record(self, attempt: Attempt, info: AttemptInfo) -> None:
        return None


def _half_open(provider: Any, clock: Clock) -> Chain:
    """A chain over ``provider`` (as ``p``, model ``m``) whose breaker is half-open."""
    chain = Chain({"p": provider}, breaker=BreakerConfig(failures=1, cooldown_s=5), retry=RetryConfig(max_retries=0),
                  breaker_clock=clock)
    chain.breakers[KEY].record_failure()  # type: ignore[index]
    clock.now += 5
    assert chain.breakers[KEY].state == HALF_OPEN  # type: ignore[index]
    return chain


def _probe_is_free(chain: Chain) -> bool:
    breaker = chain.breakers[KEY]  # type: ignore[index]
    return breaker.state == HALF_OPEN and breaker.allow("the next caller")


def test_a_refused_reservation_gives_the_probe_back() -> None:
    memory = build_provider("p", ProviderConfig(kind="memory"), HttpClients())
    chain = _half_open(memory, Clock())
    with pytest.raises(BudgetExceeded):
        asyncio.run(chain.call([Target("p", "m")], REQUEST, meter=Refusing()))
    assert _probe_is_free(chain)


def test_a_target_skipped_for_want_of_time_gives_the_probe_back() -> None:
    memory = build_provider("p", ProviderConfig(kind="memory"), HttpClients())
    chain = _half_open(memory, Clock())

    async def run() -> None:
        await chain.call([Target("p", "m")], REQUEST, deadline=Deadline(0.0))

    with pytest.raises(FallbacksExhausted) as info:
        asyncio.run(run())
    assert [e.reason for e in info.value.errors] == ["deadline"]
    assert _probe_is_free(chain)


def test_a_probe_cancelled_in_flight_is_given_back() -> None:
    provider, clock = Hanging(), Clock()
    chain = _half_open(provider, clock)

    async def run() -> None:
        call = asyncio.create_task(chain.call([Target("p", "m")], REQUEST))
        await provider.entered.wait()
        assert not chain.breakers[KEY].allow("another")  # type: ignore[index]  # the probe is held meanwhile
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(run())
    assert _probe_is_free(chain)


def test_a_probe_cancelled_while_waiting_for_its_slot_is_given_back() -> None:
    provider, clock = Hanging(), Clock()
    chain = Chain({"p": provider}, breaker=BreakerConfig(failures=1, cooldown_s=5), retry=RetryConfig(max_retries=0),
                  breaker_clock=clock)
    target = Target("p", "m", max_concurrency=1)

    async def run() -> None:
        holder = asyncio.create_task(chain.call([target], REQUEST))  # closed breaker: takes the one slot
        await provider.entered.wait()
        chain.breakers[KEY].record_failure()  # type: ignore[index]
        clock.now += 5  # half-open now
        waiting = asyncio.create_task(chain.call([target], REQUEST))  # gets the probe, waits for the slot
        for _ in range(5):
            await asyncio.sleep(0)
        assert not chain.breakers[KEY].allow("another")  # type: ignore[index]
        waiting.cancel()
        holder.cancel()
        await asyncio.gather(waiting, holder, return_exceptions=True)

    asyncio.run(run())
    assert _probe_is_free(chain)
