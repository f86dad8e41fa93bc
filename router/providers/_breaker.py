"""A circuit breaker per backend: stop calling a backend that keeps failing, probe it later.

States: ``closed`` (calls go through; failures are counted in a sliding window), ``open``
(calls are refused without being made, for ``cooldown_s``), ``half_open`` (one probe call
goes through; its success closes the breaker, its failure opens it again).

The probe is held by a token, the caller's: a caller whose allowed call was not made after all
(its budget refused it, it was cancelled, no time was left) gives it back with ``abandon``, so that
the next caller probes at once. A probe held longer than ``probe_s`` (what ``allow`` was told: the
call's timeout plus a margin) is presumed lost and the next caller gets it: a prober that never
reports cannot hold a breaker half-open.

``Breakers`` is what a ``Chain`` asks, one breaker per ``provider/model`` key, async so that the
state can live elsewhere: ``LocalBreakers`` keeps them in this process (tier 2, the dispatcher's
``memory`` state); ``router.state``'s Redis backend shares them between processes with the same
semantics.

Written here rather than taken from a library because the ones on PyPI count consecutive
failures (not failures within a window) or are tied to one concurrency model; this one is
a few lines of state, safe from several threads, with an injectable clock for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pydantic import Field

from router._strict import Strict

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class BreakerConfig(Strict):
    failures: int = Field(5, ge=1, le=10_000, description="failures within window_s that open the breaker")
    window_s: float = Field(60.0, gt=0)
    cooldown_s: float = Field(30.0, gt=0, description="how long it stays open before one probe")
    reset_on_success: bool = Field(
        True, description="a success clears the failure count (tier 2); false counts every failure in the window "
                          "(the dispatcher: '5 failures within 10 minutes' whatever succeeded between)")


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probe: str | None = None  # the token of the half-open probe in flight
        self._probe_until = math.inf

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.config.cooldown_s:
            return HALF_OPEN
        return OPEN

    def allow(self, token: str = "", probe_s: float | None = None) -> bool:
        """True if a call may be made now; in half-open state only one probe at a time, held by
        ``token`` for at most ``probe_s`` (None: until its outcome is recorded or it is abandoned)."""
        with self._lock:
            state = self._state_locked()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and (self._probe is None or self._clock() >= self._probe_until):
                self._probe = token
                self._probe_until = math.inf if probe_s is None else self._clock() + probe_s
                return True
            return False

    def abandon(self, token: str = "") -> None:
        """Give back the half-open probe if ``token`` holds it: its call was not made, or its outcome
        will not be recorded."""
        with self._lock:
            if self._probe == token:
                self._probe = None

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is None:
                if self.config.reset_on_success:
                    self._failures.clear()
                return
            if self._probe is not None:  # the probe answered: close
                self._failures.clear()
                self._opened_at = None
                self._probe = None
            # else: a call that began before the breaker opened; its success says nothing new

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:  # a failed probe: open again for a full cooldown
                self._opened_at = now
                self._probe = None
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.config.window_s:
                self._failures.popleft()
            if len(self._failures) >= self.config.failures:
                self._opened_at = now
                self._failures.clear()

    def retry_after(self) -> float:
        """Seconds until the next probe is allowed (0 when closed or half-open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.config.cooldown_s - (self._clock() - self._opened_at))


class Breakers(Protocol):
    """One breaker per key (``provider/model``). ``record_success``/``record_failure`` return the
    breaker's state after the record (the attempt's trace record shows it).

    ``allow``'s ``token`` names the caller: if it gets the half-open probe, it holds it for at most
    ``probe_s`` (None: the backend's own bound), and ``abandon(key, token)`` gives it back when no
    outcome will be recorded; ``abandon`` never raises and does nothing if ``token`` holds no probe."""

    async def allow(self, key: str, token: str = "", probe_s: float | None = None) -> bool: ...

    async def abandon(self, key: str, token: str = "") -> None: ...

    async def record_success(self, key: str) -> str: ...

    async def record_failure(self, key: str) -> str: ...

    async def state(self, key: str) -> str: ...

    async def retry_after(self, key: str) -> float: ...


class LocalBreakers:
    """``Breakers`` in this process: a ``CircuitBreaker`` per key, made on first use.

    ``breakers[key]`` is the key's ``CircuitBreaker`` (tests and tier 2 read its ``state``)."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers.setdefault(key, CircuitBreaker(self.config, clock=self._clock))
        return breaker

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def keys(self) -> list[str]:
        return list(self._breakers)

    async def allow(self, key: str, token: str = "", probe_s: float | None = None) -> bool:
        return self[key].allow(token, probe_s)

    async def abandon(self, key: str, token: str = "") -> None:
        self[key].abandon(token)

    async def record_success(self, key: str) -> str:
        breaker = self[key]
        breaker.record_success()
        return breaker.state

    async def record_failure(self, key: str) -> str:
        breaker = self[key]
        breaker.record_failure()
        return breaker.state

    async def state(self, key: str) -> str:
        return self[key].state

    async def retry_after(self, key: str) -> float:
        return self[key].retry_after()
