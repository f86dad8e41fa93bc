"""Breakers in Redis: one per ``provider/model``, shared, so a provider that is down is found out by
one replica for all of them. The states and rules are ``router/providers/_breaker.py``'s
(``breaker.lua``). The half-open probe key holds the prober's token and expires after the probe's
``probe_s`` (the chain passes the call's ``timeout_s`` plus a margin; ``hold_s`` when none is given),
so a prober that died cannot hold the breaker half-open for long; ``abandon`` deletes it at once, and
only if the caller's token still holds it.

``allow`` fails closed (``StateUnavailable``: no call is sent). A failed ``record_success`` or
``record_failure`` is logged and reads ``unknown``: the call it records is over and metered, and
the next ``allow`` asks Redis again. A failed ``abandon`` is logged: the probe then expires.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from router.errors import StateUnavailable
from router.state._units import ms

if TYPE_CHECKING:
    from router.state._redis import RedisState

log = logging.getLogger("router.state")
UNKNOWN = "unknown"


class RedisBreakers:
    def __init__(self, redis: RedisState) -> None:
        self.redis = redis
        config = redis.limits.breaker
        self.config = config
        self._args = [config.failures, ms(config.window_s), ms(config.cooldown_s),
                      "1" if config.reset_on_success else "0"]
        self._hold_ms = ms(redis.limits.hold_s)

    async def _run(self, op: str, key: str, token: str = "", probe_ms: int = 0) -> list[Any]:
        k = self.redis.key
        answer: list[Any] = await self.redis.script(
            "breaker", [k("breaker", key), k("breaker_failures", key), k("breaker_probe", key)],
            [op, *self._args, probe_ms or self._hold_ms, uuid.uuid4().hex if op == "failure" else token])
        return answer

    async def _record(self, op: str, key: str) -> str:
        try:
            return str((await self._run(op, key))[1])
        except StateUnavailable as exc:
            log.warning("redis state: breaker %s of %s not recorded: %s", op, key, exc.detail)
            return UNKNOWN

    async def allow(self, key: str, token: str = "", probe_s: float | None = None) -> bool:
        return bool(int((await self._run("allow", key, token, 0 if probe_s is None else ms(probe_s)))[0]))

    async def abandon(self, key: str, token: str = "") -> None:
        try:
            await self._run("abandon", key, token)
        except StateUnavailable as exc:
            log.warning("redis state: the half-open probe of %s was not given back (it expires on its own): %s",
                        key, exc.detail)

    async def record_success(self, key: str) -> str:
        return await self._record("success", key)

    async def record_failure(self, key: str) -> str:
        return await self._record("failure", key)

    async def state(self, key: str) -> str:
        return await self._record("state", key)

    async def retry_after(self, key: str) -> float:
        try:
            return int((await self._run("state", key))[2]) / 1000
        except StateUnavailable:
            return self.config.cooldown_s
