"""Sticky sessions: a session's last confident intent, so that a short follow-up ("and in euros?") that
has no intent of its own stays with it.

``StickyStore`` is what the proxy needs (get, put, aclose); ``STICKY_STORES`` builds one by the state
URL's scheme, so that replicas sharing a Redis state share their sessions' intents too: ``memory`` (this
process: least recently used sessions go past ``max_sessions``, each entry expires after ``ttl_s``) or
``redis``/``rediss`` (key ``{state.prefix}sticky:{session}`` with an expiry of ``ttl_s``, over the state's
own connection settings; redis-py is imported on first use).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router._registry import Registry
from router._settings import secret
from router.errors import MissingDependency, StateUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from router.dispatch._config import StickyConfig
    from router.state import StateConfig


@dataclass(frozen=True)
class Remembered:
    """A session's last confident intent and the skill that routed it."""

    intent: str
    skill: str


class StickyStore(Protocol):
    async def get(self, session: str) -> Remembered | None: ...

    async def put(self, session: str, remembered: Remembered) -> None: ...

    async def aclose(self) -> None: ...


class MemorySticky:
    """In this process: LRU past ``max_sessions``, each entry good for ``ttl_s`` from its last put."""

    def __init__(self, config: StickyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_sessions, self.clock = config.ttl_s, config.max_sessions, clock
        self._entries: OrderedDict[str, tuple[float, Remembered]] = OrderedDict()

    async def get(self, session: str) -> Remembered | None:
        held = self._entries.get(session)
        if held is None:
            return None
        if held[0] <= self.clock():
            del self._entries[session]
            return None
        self._entries.move_to_end(session)
        return held[1]

    async def put(self, session: str, remembered: Remembered) -> None:
        self._entries[session] = (self.clock() + self.ttl_s, remembered)
        self._entries.move_to_end(session)
        while len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisSticky:
    """Shared by every replica naming the same Redis URL and prefix. A Redis that does not answer refuses
    the turn (``StateUnavailable``, 503), as the budgets would a moment later."""

    def __init__(self, state: StateConfig, config: StickyConfig) -> None:
        try:
            import redis.asyncio  # noqa: F401 - checked here, used per loop
        except ImportError as exc:
            raise MissingDependency("sticky sessions in Redis need redis-py: pip install 'tiered-router[redis]'") \
                from exc
        self.state, self.ttl_s = state, max(1, round(config.ttl_s))
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = weakref.WeakKeyDictionary()

    def key(self, session: str) -> str:
        return f"{self.state.prefix}sticky:{session}"

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from redis.asyncio import Redis

            # The state's settings (router/state/_redis.py): its timeout, its password variable, no retries.
            client = Redis.from_url(self.state.url, password=secret(self.state.password_env), decode_responses=True,
                                    socket_timeout=self.state.timeout_s, socket_connect_timeout=self.state.timeout_s,
                                    max_connections=self.state.max_connections)
            self._clients[loop] = client
        return client

    async def _run(self, command: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await command
        except (RedisError, OSError) as exc:
            raise StateUnavailable("redis", f"sticky sessions: {type(exc).__name__}: {exc}",
                                   self.state.retry_after_s) from exc

    async def get(self, session: str) -> Remembered | None:
        raw = await self._run(self._client().get(self.key(session)))
        if not raw:
            return None
        data = json.loads(raw)
        return Remembered(str(data["intent"]), str(data["skill"]))

    async def put(self, session: str, remembered: Remembered) -> None:
        value = json.dumps({"intent": remembered.intent, "skill": remembered.skill})
        await self._run(self._client().set(self.key(session), value, ex=self.ttl_s))

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


StickyFactory = Callable[["StateConfig", "StickyConfig"], StickyStore]


def _memory(state: StateConfig, config: StickyConfig) -> StickyStore:
    return MemorySticky(config)


def _redis(state: StateConfig, config: StickyConfig) -> StickyStore:
    return RedisSticky(state, config)


STICKY_STORES: Registry[StickyFactory] = Registry("sticky-session store", "state.url", {
    "memory": _memory, "redis": _redis, "rediss": _redis})


def build_sticky(state: StateConfig, config: StickyConfig) -> StickyStore | None:
    """The store of the state's backend, or None when sticky sessions are off."""
    if not config.enabled:
        return None
    return STICKY_STORES.get(state.scheme)(state, config)
