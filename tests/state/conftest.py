"""A state of each backend behind one handle: the Protocol contract runs against both.

The memory state runs on a settable clock; the Redis state (a real redis-server of its own,
``@pytest.mark.redis``) on Redis's TIME, so its tests wait out short TTLs for real. ``advance``
hides the difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from router.providers import BreakerConfig
from router.state import BudgetConfig, MemoryState, RedisState, State, StateConfig, StateLimits
from router.testing import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(budgets: dict[str, Any] | None = None, breaker: dict[str, Any] | None = None, **kwargs: Any) -> StateLimits:
    return StateLimits(budgets=BudgetConfig.model_validate(budgets or {}),
                       breaker=BreakerConfig.model_validate(breaker or {}), **kwargs)


@dataclass
class Backend:
    """Makes states of one backend (several, sharing one store in Redis) and moves time on."""

    name: str
    make: Callable[[StateLimits], State]
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = Clock()

        async def tick(seconds: float) -> None:
            clock.now += seconds

        yield Backend("memory", lambda lim: MemoryState(lim, clock=clock), tick)
        return
    server: RedisServer = request.getfixturevalue("redis_server")

    async def wait(seconds: float) -> None:
        await asyncio.sleep(seconds)

    yield Backend("redis", lambda lim: RedisState(StateConfig(url=server.url), lim), wait)


@pytest.fixture
async def states() -> AsyncIterator[list[State]]:
    """Closed at the end, on the test's loop."""
    made: list[State] = []
    yield made
    for state in made:
        await state.aclose()
