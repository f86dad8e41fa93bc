"""The learned-examples log in Redis: one stream shared by every replica that names the same Redis URL and
prefix (``router serve --state redis://...``), so an example learned on one replica is learned on all.

=============================================  ======  ====================================================
key (under ``StateConfig.prefix``)             type    holds
=============================================  ======  ====================================================
``learn:<index>``                              stream  one entry per item, field ``e``: the ``LogEntry`` JSON
``learn:rate:<index>:<source>:<window>``       string  items of that source taken in that window (``window``:
                                                       Redis TIME // ``window_s``; expires after the window)
=============================================  ======  ====================================================

``append`` adds a batch in one MULTI/EXEC (all or none); it is as durable as the server makes it (run
Redis with ``appendonly yes`` for the log to survive a Redis restart). ``read_new`` reads the stream after
the last stream id this reader saw. ``admit`` is one Lua script on Redis's clock: a fixed window per source,
global across replicas (up to twice the limit can pass across a window boundary). ``fold`` deletes the
stream entries holding the folded ids (XDEL). Any Redis error or timeout raises ``StateUnavailable``.

Uses redis-py's synchronous client (the learner runs in threads, off the event loop), imported on first
use: the ``[redis]`` extra.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from router._settings import secret
from router.errors import LearnLogError, MissingDependency, StateUnavailable
from router.learn._entry import LogEntry
from router.learn._log import entry_error
from router.state._config import StateConfig, without_password

if TYPE_CHECKING:
    from redis import Redis

INSTALL_HINT = "the redis learning log needs redis-py: pip install 'tiered-router[redis]'"
_PAGE = 1000  # stream entries per XRANGE call

# KEYS[1]: the rate key without its window number. ARGV: limit, window_s. Returns "0" (taken, counted) or
# the seconds until the next window (refused, nothing counted). Its own TIME: one clock for every replica.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n = math.floor(now / window)
local key = KEYS[1] .. n
local taken = tonumber(redis.call('GET', key) or '0')
if taken < limit then
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
  return '0'
end
return tostring(math.max((n + 1) * window - now, 0.001))
"""


class RedisLog:
    """The log of the index named ``index`` in the Redis of ``state``; nothing connects until the first call."""

    name = "redis"

    def __init__(self, state: StateConfig, index: str) -> None:
        if importlib.util.find_spec("redis") is None:
            raise MissingDependency(INSTALL_HINT)
        self.config = state
        self.url = without_password(state.url)
        self.index = index
        self.key = f"{state.prefix}learn:{index}"
        self._rate_key = f"{state.prefix}learn:rate:{index}:"
        self._lock = threading.Lock()
        self._client: Redis | None = None
        self._admit: Callable[..., Any] | None = None
        self._last = "0-0"  # the last stream id this reader saw
        self._entries = 0

    # -- the connection ----------------------------------------------------------------------------------
    def _redis(self) -> Redis:
        if self._client is None:
            from redis import Redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: an XADD whose answer was lost may have been applied; the caller decides.
            self._client = Redis.from_url(
                self.config.url, password=secret(self.config.password_env), decode_responses=True,
                socket_timeout=self.config.timeout_s, socket_connect_timeout=self.config.timeout_s,
                retry=Retry(NoBackoff(), 0), max_connections=self.config.max_connections)
            self._admit = self._client.register_script(_ADMIT)
        return self._client

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Any Redis error or timeout as ``StateUnavailable("redis", ...)``, naming the URL (no password)."""
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise StateUnavailable(self.name, f"{self.url}: {what} {self.key}: {type(exc).__name__}: {exc}",
                                   self.config.retry_after_s) from exc

    def _decode(self, stream_id: str, fields: dict[str, str]) -> LogEntry:
        """The entry of one stream entry; one that does not load raises ``LearnLogError`` naming the key, the
        stream id and the field (it is never deleted: it may be a newer version's entry)."""
        where = f"{self.url} {self.key}:{stream_id}"
        if "e" not in fields:
            raise LearnLogError(f"{where}: not a log entry: no field 'e' (it has {sorted(fields)}); the stream "
                                "may have been written by a newer version of tiered-router, or by something "
                                "else under this key")
        try:
            return LogEntry.model_validate_json(fields["e"])
        except ValidationError as exc:
            raise LearnLogError(entry_error(where, exc)) from None

    def _range(self, after: str | None) -> list[tuple[str, dict[str, str]]]:
        """Every stream entry after the stream id ``after`` (None: from the start), paged."""
        client = self._redis()
        out: list[tuple[str, dict[str, str]]] = []
        start = "-" if after is None else f"({after}"
        while True:
            page = cast("list[tuple[str, dict[str, str]]]", client.xrange(self.key, start, "+", count=_PAGE))
            out.extend(page)
            if len(page) < _PAGE:
                return out
            start = f"({page[-1][0]}"

    # -- the log -----------------------------------------------------------------------------------------
    def append(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        with self._calling("XADD"):
            pipe = self._redis().pipeline(transaction=True)
            for entry in entries:
                pipe.xadd(self.key, {"e": entry.model_dump_json(exclude_defaults=True)})
            pipe.execute()

    def _read(self, from_start: bool) -> list[LogEntry]:
        with self._lock:
            with self._calling("XRANGE"):
                rows = self._range(None if from_start else self._last)
            entries = [self._decode(stream_id, fields) for stream_id, fields in rows]
            if from_start:
                self._entries = 0
            if rows:
                self._last = rows[-1][0]
            self._entries += len(entries)
            return entries

    def read_all(self) -> list[LogEntry]:
        return self._read(from_start=True)

    def read_new(self) -> list[LogEntry]:
        return self._read(from_start=False)

    def admit(self, source: str, limit: int, window_s: float = 60.0) -> float:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"admit: limit={limit} and window_s={window_s} must be positive")
        with self._calling("admit"):
            self._redis()
            assert self._admit is not None
            answer = self._admit(keys=[f"{self._rate_key}{source}:"], args=[limit, window_s])
        return float(answer)

    def fold(self, ids: Collection[str]) -> int:
        drop = set(ids)
        if not drop:
            return 0
        with self._calling("XDEL"):
            held = [stream_id for stream_id, fields in self._range(None)
                    if self._decode(stream_id, fields).id in drop]
            removed = 0
            for start in range(0, len(held), _PAGE):
                removed += int(self._redis().xdel(self.key, *held[start:start + _PAGE]))
        with self._lock:
            self._entries = max(0, self._entries - removed)
        return removed

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "key": self.key, "entries": self._entries,
                "rate_limit": "all replicas"}

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client, self._admit = None, None
