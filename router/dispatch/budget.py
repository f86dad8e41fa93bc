"""Token, cost and step budgets, per session and per rolling hour, checked before each call.

A call reserves its worst case (estimated input plus the full output cap, at the uncached
price) before it is made; the reservation counts against every budget until the call settles
with the provider's reported usage, or is released because it failed. So concurrent calls of
one session cannot overshoot a cap together, and a refused call is never sent.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from router.dispatch.config import BudgetConfig
from router.errors import BudgetExceeded

HOUR_S = 3600.0
ZERO = Decimal(0)


@dataclass
class SessionUsage:
    tokens: int = 0
    cost: Decimal = ZERO
    calls: int = 0
    steps: int = 0
    reserved_tokens: int = 0
    reserved_cost: Decimal = ZERO


@dataclass(frozen=True)
class Reservation:
    session: str
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class SessionTotals:
    session_id: str
    tokens: int
    cost_usd: Decimal
    calls: int
    steps: int
    budget_left: dict[str, Any]


class Ledger:
    """In-process budget state for one Dispatcher (one service process)."""

    def __init__(self, budgets: BudgetConfig, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = 100_000) -> None:
        self.budgets = budgets
        self._clock = clock
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, SessionUsage] = OrderedDict()
        self._hour: deque[tuple[float, Decimal]] = deque()
        self._hour_cost = ZERO
        self._hour_reserved = ZERO

    def _session(self, session: str) -> SessionUsage:
        usage = self._sessions.get(session)
        if usage is None:
            usage = self._sessions[session] = SessionUsage()
            # Bounded memory: the longest-idle session is forgotten first.
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        return usage

    def _expire_hour(self) -> None:
        now = self._clock()
        while self._hour and now - self._hour[0][0] > HOUR_S:
            self._hour_cost -= self._hour.popleft()[1]

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

    def settle(self, r: Reservation, tokens: int, cost: Decimal) -> None:
        with self._lock:
            usage = self._session(r.session)
            self._unreserve(usage, r)
            usage.tokens += tokens
            usage.cost += cost
            usage.calls += 1
            self._hour.append((self._clock(), cost))
            self._hour_cost += cost

    def release(self, r: Reservation) -> None:
        """The call failed: the provider billed nothing we know of."""
        with self._lock:
            self._unreserve(self._session(r.session), r)

    def left(self, session: str) -> dict[str, Any]:
        """What remains of each budget (None where switched off)."""
        with self._lock:
            usage = self._sessions.get(session, SessionUsage())
            self._expire_hour()
            b = self.budgets

            def rest(limit: Any, used: Any) -> Any:
                return None if limit is None else max(type(used)(0), limit - used)

            return {
                "session_tokens": rest(b.session_tokens, usage.tokens),
                "session_cost_usd": None if b.session_cost_usd is None
                else float(rest(b.session_cost_usd, usage.cost)),
                "hourly_cost_usd": None if b.hourly_cost_usd is None
                else float(rest(b.hourly_cost_usd, self._hour_cost)),
                "session_steps": rest(b.session_steps, usage.steps),
            }

    def totals(self, session: str) -> SessionTotals:
        left = self.left(session)
        with self._lock:
            usage = self._sessions.get(session, SessionUsage())
            return SessionTotals(session, usage.tokens, usage.cost, usage.calls, usage.steps, left)
