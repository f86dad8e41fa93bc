"""Breakers in Redis: one per ``provider/model``, shared, so a provider that is down is found out by
one replica for all of them. The states and rules are ``router/providers/_breaker.py``'s
(``breaker.lua``); the half-open probe flag expires after ``hold_s``, so a prober that died cannot
hold the breaker half-open for ever.

``allow`` fails closed (``StateUnavailable``: no call is sent). A failed ``record_success`` or
``record_failure`` is logged and reads ``unknown``: the call it records is over and metered, and
the next ``allow`` asks Redis again.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from router.errors import StateUnavailable

if TYPE_CHECKING:
    from router.state._redis import RedisState

log = logging.getLogger("router.state")
UNKNOWN = "unknown"


class RedisBreakers:
    def __init__(self, redis: RedisState) -> None:
        self.redis = redis
        config = redis.limits.breaker
        self.config = config
        self._args = [config.failures, max(1, int(config.window_s * 1000)), max(1, int(config.cooldown_s * 1000)),
                      "1" if config.reset_on_success else "0", max(1, int(redis.limits.hold_s * 1000))]

    async def _run(self, op: str, key: str) -> list[Any]:
        k = self.redis.key
        answer: list[Any] = await self.redis.script(
            "breaker", [k("breaker", key), k("breaker_failures", key), k("breaker_probe", key)],
            [op, *self._args, uuid.uuid4().hex if op == "failure" else ""])
        return answer

    async def _record(self, op: str, key: str) -> str:
        try:
            return str((await self._run(op, key))[1])
        except StateUnavailable as exc:
            log.warning("redis state: breaker %s of %s not recorded: %s", op, key, exc.detail)
            return UNKNOWN

    async def allow(self, key: str) -> bool:
        return bool(int((await self._run("allow", key))[0]))

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
