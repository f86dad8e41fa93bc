"""The ``redis`` state: budgets, approvals and breakers shared by every process that names the same
Redis URL and prefix (``router serve --workers N``, replicas behind a load balancer).

Every change that touches several keys is ONE Lua script (``router/state/*.lua``, run by EVALSHA
through redis-py's ``register_script``), and every script takes its time from Redis's ``TIME``: so
concurrent calls from any number of processes cannot overshoot a cap together, and all replicas
share one clock. ``left`` and ``totals`` are one read script, one round trip.

Keys, all under ``StateConfig.prefix`` (default ``router:``); amounts in tokens and integer
picodollars (1e-12 USD), exact:

=================================  ======  ==========================================================
key                                type    holds (TTL)
=================================  ======  ==========================================================
``session:<session>``              hash    tokens, cost, calls, steps, rtokens, rcost (reserved)
                                           (``budgets.session_ttl_s`` after its last activity;
                                           at least ``hold_s`` while it holds a reservation)
``sessions``                       zset    session -> when it ends (ms): counts live sessions
                                           against ``budgets.max_sessions`` (pruned by score)
``reservations``                   zset    reservation id -> when it is presumed dead (ms, ``hold_s``)
``reservation_amounts``            hash    reservation id -> "tokens cost session" (with the zset)
``reserved_cost``                  string  the cost held by every live reservation (hourly cap)
``hour``                           hash    minute -> cost settled in it (fields older than 60
                                           minutes dropped; key TTL 62 min)
``done:<reservation id>``          string  a settle or release was applied: a replay is a no-op
                                           (``max(session_ttl_s, hold_s)``)
``approval:<id>``                  hash    a pending action: action (JSON), created (ms), session
                                           (expires ``approval_ttl_s`` after it was made)
``running:<id>``                   hash    the same action, claimed by an approve (``hold_s``)
``pending``                        zset    approval id -> created (ms), all sessions (pruned)
``pending:<session>``              zset    the same for one session (``approval_ttl_s``)
``breaker:<provider/model>``       hash    opened (ms) while the breaker is open or half-open
``breaker_failures:<provider/model>``  zset  failures within ``window_s`` (``window_s``)
``breaker_probe:<provider/model>`` string  the half-open probe in flight: its holder's token (the
                                           probing call's ``timeout_s`` plus a margin)
=================================  ======  ==========================================================

Failures: any Redis error or timeout (``timeout_s``) in ``step``, ``reserve``, a breaker's ``allow``
or an approval call raises ``StateUnavailable`` (HTTP 503 with Retry-After): nothing is sent
unmetered. A ``settle`` or ``release`` that cannot reach Redis is kept in an in-process outbox,
retried in the background and before the next ``step``/``reserve`` (refused while it is not
empty), and flushed at ``aclose``; each is applied once (``done:<id>``, within the bound that
``_redis_budgets.py`` states). A ``reserve`` whose answer was lost owes the release of its id.
Redis Cluster is not supported (the scripts touch keys they derive); one primary (with replicas
or Sentinel for failover) is. For budgets to survive a Redis restart, run it with ``appendonly yes``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import weakref
from collections.abc import AsyncGenerator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from router._settings import secret
from router.errors import MissingDependency, StateUnavailable
from router.state._config import StateConfig, StateLimits, without_password
from router.state._redis_approvals import RedisApprovals
from router.state._redis_breakers import RedisBreakers
from router.state._redis_budgets import RedisBudgets

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger("router.state")
SCRIPTS = ("budget_step", "budget_reserve", "budget_settle", "budget_read", "approval_add", "approval_take",
           "approval_finish", "approval_pending", "breaker")
INSTALL_HINT = "the redis state needs redis-py: pip install 'tiered-router[redis]'"


def _source(name: str) -> str:
    """A script with the shared helpers (common.lua) in front: package data, read once per state."""
    folder = resources.files("router.state")
    return folder.joinpath("common.lua").read_text() + "\n" + folder.joinpath(f"{name}.lua").read_text()


class _Connection:
    """One event loop's client (its own connection pool) and scripts."""

    def __init__(self, client: Redis, sources: dict[str, str]) -> None:
        self.client = client
        self.scripts: dict[str, AsyncScript] = {name: client.register_script(src) for name, src in sources.items()}


class RedisState:
    """``StateConfig.url`` ``redis://`` or ``rediss://``; nothing connects until the first call.

    A redis-py client belongs to the event loop that opened its connections: one client (one
    connection pool of ``max_connections``) per loop, closed by ``aclose`` on that loop or by the
    loop's own shutdown, as ``router.providers.HttpClients`` does."""

    name = "redis"

    def __init__(self, config: StateConfig, limits: StateLimits | None = None) -> None:
        if importlib.util.find_spec("redis") is None:
            raise MissingDependency(INSTALL_HINT)
        self.config = config
        self.limits = limits if limits is not None else StateLimits()
        self.prefix = config.prefix
        self.url = without_password(config.url)
        self._sources = {name: _source(name) for name in SCRIPTS}
        self._connections: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[_Connection, AsyncGenerator[None, None]]] = weakref.WeakKeyDictionary()
        self.budgets = RedisBudgets(self)
        self.approvals = RedisApprovals(self)
        self.breakers = RedisBreakers(self)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "prefix": self.prefix, "outbox": self.budgets.owed(),
                "outbox_overdue": self.budgets.overdue()}

    # -- connections -------------------------------------------------------------------------------
    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: a script that timed out may have run, and running it again could
        # reserve twice. A failed call is refused (fail closed); settlements are replayed, once, by id.
        return Redis.from_url(
            self.config.url, password=secret(self.config.password_env), decode_responses=True,
            socket_timeout=self.config.timeout_s, socket_connect_timeout=self.config.timeout_s,
            retry=Retry(NoBackoff(), 0), max_connections=self.config.max_connections)

    async def connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        held = self._connections.get(loop)
        if held is not None:
            return held[0]
        connection = _Connection(self._client(), self._sources)
        closer = _closed_with_the_loop(connection.client)
        await closer.asend(None)  # started here: the loop's shutdown closes the client
        self._connections[loop] = (connection, closer)
        return connection

    def unavailable(self, exc: BaseException | str) -> StateUnavailable:
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return StateUnavailable(self.name, f"{self.url}: {detail}", self.config.retry_after_s)

    async def _failed(self, connection: _Connection, exc: BaseException) -> StateUnavailable:
        # Idle connections may be stale (Redis restarted): dropped, so the next call connects afresh.
        try:
            await connection.client.connection_pool.disconnect(inuse_connections=False)
        except Exception:  # best effort, on a connection already failing
            pass
        return self.unavailable(exc)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run one script; ``StateUnavailable`` for any Redis error or timeout."""
        from redis.exceptions import RedisError

        connection = await self.connection()
        try:
            return await connection.scripts[name](keys=list(keys), args=list(args), client=connection.client)
        except (RedisError, OSError) as exc:
            raise await self._failed(connection, exc) from exc

    async def ping(self) -> bool:
        try:
            connection = await self.connection()
            return bool(await connection.client.ping())
        except Exception:  # readiness reports it, it does not raise
            return False

    async def aclose(self) -> None:
        """Flush the outbox (what cannot be flushed is logged, loudly), then close this loop's client."""
        await self.budgets.aclose()
        held = self._connections.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()


async def _closed_with_the_loop(client: Redis) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()
