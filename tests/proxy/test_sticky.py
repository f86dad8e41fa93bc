"""Sticky-session stores: memory (LRU + TTL) and Redis (shared by replicas, with an expiry)."""

from __future__ import annotations

import asyncio

import pytest

from router.dispatch._config import StickyConfig
from router.proxy._sticky import MemorySticky, RedisSticky, Remembered, build_sticky
from router.state import StateConfig
from router.testing import RedisServer

RATE = Remembered("exchange_rate", "exchange_rate")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_builds_no_store_and_on_builds_the_states_kind() -> None:
    assert build_sticky(StateConfig(), StickyConfig()) is None
    assert isinstance(build_sticky(StateConfig(), StickyConfig(enabled=True)), MemorySticky)
    redis = build_sticky(StateConfig(url="redis://127.0.0.1:1/0", prefix="t:"), StickyConfig(enabled=True))
    assert isinstance(redis, RedisSticky) and redis.key("s1") == "t:sticky:s1"


def test_memory_entries_expire_after_ttl() -> None:
    clock = Clock()
    store = MemorySticky(StickyConfig(enabled=True, ttl_s=60), clock)

    async def run() -> list[Remembered | None]:
        await store.put("s1", RATE)
        clock.now = 59.0
        first = await store.get("s1")
        clock.now = 60.0
        return [first, await store.get("s1")]

    assert asyncio.run(run()) == [RATE, None]
    assert len(store) == 0


def test_memory_forgets_the_least_recently_used_past_max_sessions() -> None:
    store = MemorySticky(StickyConfig(enabled=True, max_sessions=2), Clock())

    async def run() -> list[Remembered | None]:
        await store.put("a", RATE)
        await store.put("b", RATE)
        await store.get("a")  # a is now the most recently used
        await store.put("c", RATE)
        return [await store.get(s) for s in ("a", "b", "c")]

    assert asyncio.run(run()) == [RATE, None, RATE]


@pytest.mark.redis
def test_redis_shares_a_sessions_intent_with_an_expiry(redis_server: RedisServer) -> None:
    state = StateConfig(url=redis_server.url, prefix="proxy-test:")
    config = StickyConfig(enabled=True, ttl_s=30)

    async def run() -> tuple[Remembered | None, Remembered | None, int]:
        one, two = RedisSticky(state, config), RedisSticky(state, config)  # two replicas
        await one.put("s1", RATE)
        seen = await two.get("s1")
        missing = await two.get("s2")
        from redis.asyncio import Redis

        client = Redis.from_url(redis_server.url)
        ttl = int(await client.ttl("proxy-test:sticky:s1"))
        await client.aclose()
        await one.aclose()
        await two.aclose()
        return seen, missing, ttl

    seen, missing, ttl = asyncio.run(run())
    assert seen == RATE and missing is None and 0 < ttl <= 30
