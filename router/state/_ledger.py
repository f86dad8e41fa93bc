"""Token, cost and step budgets, per session and per rolling hour, checked before each call: in this
process (the ``memory`` state; ``_redis_budgets.py`` is the same across processes).

A call reserves its worst case before it is made: an upper bound on its input tokens (one per
byte sent, plus framing), the full output cap, every input token at the dearest input price (a
cache write costs more than a plain input token). The reservation counts against every budget
until the call settles with the provider's reported usage, or is released because it failed. So
neither one call nor concurrent calls of one session can overshoot a cap, and a refused call is
never sent.

Memory is bounded without forgetting spend that still counts: a session's usage is kept until
the session has been idle ``session_ttl_s``; past ``max_sessions`` live sessions a new one is
refused (``SessionsFull``) rather than evicting one. The hourly window keeps one entry per second.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from router.errors import BudgetExceeded, SessionsFull
from router.state._config import BudgetConfig
from router.state._protocol import Reservation, SessionTotals

HOUR_S = 3600.0
# Costs settled within this many seconds of an entry's first share it (the hourly window then holds
# at most HOUR_S / HOUR_BUCKET_S entries). The entry expires by its newest time: a cost may leave the
# window up to this late, never early.
HOUR_BUCKET_S = 1.0
ZERO = Decimal(0)


@dataclass(slots=True)
class SessionUsage:
    tokens: int = 0
    cost: Decimal = ZERO
    calls: int = 0
    steps: int = 0
    reserved_tokens: int = 0
    reserved_cost: Decimal = ZERO
    seen: float = 0.0  # last activity (ledger clock): the session ends session_ttl_s after it


class Ledger:
    """In-process budget state for one Dispatcher (one service process)."""

    def __init__(self, budgets: BudgetConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.budgets = budgets
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently active first: expiry looks at the front only.
        self._sessions: OrderedDict[str, SessionUsage] = OrderedDict()
        self._hour: deque[list[Any]] = deque()  # [first time, newest time, summed cost] per HOUR_BUCKET_S
        self._hour_cost = ZERO
        self._hour_reserved = ZERO

    def __len__(self) -> int:
        """Live sessions held."""
        return len(self._sessions)

    def _session(self, session: str) -> SessionUsage:
        """The session's usage, marked active now; a new session is refused when the table is full."""
        now = self._clock()
        usage = self._sessions.get(session)
        if usage is not None and self._ended(usage, now):
            # Idle past its TTL, the session has ended whether or not expiry has reached it yet: the same
            # id now starts a new session, exactly as it would after its entry was dropped.
            usage = self._sessions[session] = SessionUsage()
        if usage is None:
            self._expire_sessions(now)
            if len(self._sessions) >= self.budgets.max_sessions:
                oldest = next(iter(self._sessions.values()))
                raise SessionsFull(self.budgets.max_sessions,
                                   max(1.0, oldest.seen + self.budgets.session_ttl_s - now))
            usage = self._sessions[session] = SessionUsage()
        else:
            self._sessions.move_to_end(session)
        usage.seen = now
        return usage

    def _ended(self, usage: SessionUsage, now: float) -> bool:
        # A call still in flight keeps its session alive: its settlement must find it.
        idle = now - usage.seen >= self.budgets.session_ttl_s
        return idle and not (usage.reserved_tokens or usage.reserved_cost)

    def _peek(self, session: str) -> SessionUsage:
        """The session's usage without touching it: an ended session reads as a new one."""
        usage = self._sessions.get(session)
        return SessionUsage() if usage is None or self._ended(usage, self._clock()) else usage

    def _expire_sessions(self, now: float) -> None:
        """Forget sessions idle past session_ttl_s: they have ended, their spend no longer counts."""
        while self._sessions:
            name, usage = next(iter(self._sessions.items()))
            if now - usage.seen < self.budgets.session_ttl_s:
                return
            if not self._ended(usage, now):  # idle, but a call is in flight
                usage.seen = now
                self._sessions.move_to_end(name)
                continue
            del self._sessions[name]

    def _expire_hour(self) -> None:
        now = self._clock()
        while self._hour and now - self._hour[0][1] > HOUR_S:
            self._hour_cost -= self._hour.popleft()[2]

    def step(self, session: str) -> None:
        """Count one dispatch step; refuse it past ``session_steps``."""
        with self._lock:
            usage = self._session(session)
            limit = self.budgets.session_steps
            if limit is not None and usage.steps + 1 > limit:
                raise BudgetExceeded("session_steps", limit, usage.steps, 1, f"session {session!r}")
            usage.steps += 1

    def reserve(self, session: str, tokens: int, cost: Decimal) -> Reservation:
        with self._lock:
            usage = self._session(session)
            self._expire_hour()
            b, scope = self.budgets, f"session {session!r}"
            if b.session_tokens is not None and usage.tokens + usage.reserved_tokens + tokens > b.session_tokens:
                raise BudgetExceeded("session_tokens", b.session_tokens, usage.tokens + usage.reserved_tokens,
                                     tokens, scope)
            if b.session_cost_usd is not None and usage.cost + usage.reserved_cost + cost > b.session_cost_usd:
                raise BudgetExceeded("session_cost_usd", float(b.session_cost_usd),
                                     float(usage.cost + usage.reserved_cost), float(cost), scope)
            hour_used = self._hour_cost + self._hour_reserved
            if b.hourly_cost_usd is not None and hour_used + cost > b.hourly_cost_usd:
                raise BudgetExceeded("hourly_cost_usd", float(b.hourly_cost_usd), float(hour_used), float(cost),
                                     "all sessions in the last hour")
            usage.reserved_tokens += tokens
            usage.reserved_cost += cost
            self._hour_reserved += cost
            return Reservation(session, tokens, cost)

    def _unreserve(self, usage: SessionUsage, r: Reservation) -> None:
        usage.reserved_tokens -= r.tokens
        usage.reserved_cost -= r.cost
        self._hour_reserved -= r.cost

    def _held(self, session: str) -> SessionUsage:
        """A session with a reservation: never expired while it holds one, so it is always here."""
        usage = self._sessions[session]
        self._sessions.move_to_end(session)
        usage.seen = self._clock()
        return usage

    def settle(self, r: Reservation, tokens: int, cost: Decimal) -> None:
        """Replace the reservation with what the provider reported it billed."""
        with self._lock:
            usage = self._held(r.session)
            self._unreserve(usage, r)
            usage.tokens += tokens
            usage.cost += cost
            usage.calls += 1
            now = self._clock()
            if self._hour and now - self._hour[-1][0] < HOUR_BUCKET_S:
                self._hour[-1][1] = now
                self._hour[-1][2] += cost
            else:
                self._hour.append([now, now, cost])
            self._hour_cost += cost

    def release(self, r: Reservation) -> None:
        """The call failed: the provider billed nothing we know of."""
        with self._lock:
            self._unreserve(self._held(r.session), r)

    def _left(self, usage: SessionUsage) -> dict[str, Any]:
        self._expire_hour()
        return self.budgets.left(usage.tokens, usage.cost, self._hour_cost, usage.steps)

    def left(self, session: str) -> dict[str, Any]:
        """What remains of each budget (None where switched off)."""
        with self._lock:
            return self._left(self._peek(session))

    def totals(self, session: str) -> SessionTotals:
        """The session's spend and what is left, read together."""
        with self._lock:
            usage = self._peek(session)
            return SessionTotals(session, usage.tokens, usage.cost, usage.calls, usage.steps, self._left(usage))
