"""Budgets in Redis: the same rules as the in-process ledger (``_ledger.py``), for every process at once.

``step`` and ``reserve`` are one script each (``budget_step.lua``, ``budget_reserve.lua``): the checks
and the change happen together in Redis, so processes reserving at once cannot overshoot a cap
together. Each reservation has an id (uuid) and a record that a later ``reserve`` reaps once it
has been held ``hold_s`` (its process died). ``settle`` and ``release`` (``budget_settle.lua``) apply
once per id: a replay changes nothing, and a settle after its reservation was reaped still charges
what was billed.

The outbox: a settle or release that cannot reach Redis is kept here, in order, and retried every
``retry_after_s`` in the background and before each ``step``/``reserve``, which are refused
(``StateUnavailable``) until it is empty: nothing reserved before an outage is lost or charged
twice, and no new call is sent while the ledger is behind. ``aclose`` flushes it and logs at
CRITICAL what it could not apply. A ``reserve`` whose answer was lost (a timeout, a cancellation:
the script may have run) owes a release of its id too, so that no orphan reservation holds budget
until ``hold_s``; if the script never ran, that release only marks the id done, and a reserve
script arriving after it holds nothing.

The bound: "applied once" rests on ``done:<id>``, kept ``max(session_ttl_s, hold_s)`` after the
first try that reached Redis. An item still owed after that long (Redis unreachable, from this
process, for a day by default) might be applied twice if that first try did run: it is logged at
CRITICAL once it is that old, and counted by ``overdue()`` (``describe()["outbox_overdue"]``,
shown by ``/readyz``), so an operator can reconcile it against the trace.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from router.errors import BudgetExceeded, SessionsFull, StateUnavailable
from router.state._protocol import Reservation, SessionTotals
from router.state._units import from_pico, ms, to_pico

if TYPE_CHECKING:
    from router.state._redis import RedisState

log = logging.getLogger("router.state")
ZERO = Decimal(0)


def _limit(value: Any, money: bool = False) -> str:
    """A cap as a script argument: '' when switched off."""
    if value is None:
        return ""
    return str(to_pico(value)) if money else str(value)


@dataclass(eq=False)
class _Owed:
    """A settle (``charge``) or release not yet applied in Redis. ``since``: when it was first tried
    (this process's monotonic clock); ``overdue``: logged as older than its ``done:<id>`` mark."""

    reservation: Reservation
    tokens: int
    pico: int
    charge: bool
    since: float = field(default_factory=time.monotonic)
    overdue: bool = False

    def __str__(self) -> str:
        r = self.reservation
        what = f"settle {self.tokens} tokens / ${from_pico(self.pico)}" if self.charge else "release"
        return f"{what} of reservation {r.id} (session {r.session!r})"


class RedisBudgets:
    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.budgets = state.limits.budgets
        self._ttl_ms = ms(self.budgets.session_ttl_s)
        self._hold_ms = ms(state.limits.hold_s)
        # A replayed settle must find its mark for as long as an outbox may hold it (past that: overdue()).
        self._done_ms = max(self._ttl_ms, self._hold_ms)
        self._lock = threading.Lock()  # the outbox is shared by every loop of the process
        self._outbox: deque[_Owed] = deque()
        self._retrier: asyncio.Task[None] | None = None

    def _keys(self, session: str) -> list[str]:
        k = self.state.key
        return [k("session", session), k("sessions"), k("reservations"), k("reservation_amounts"),
                k("reserved_cost"), k("hour")]

    def _done(self, rid: str) -> str:
        return self.state.key("done", rid)

    # -- refusals ----------------------------------------------------------------------------------
    def _check(self, answer: list[Any], session: str, tokens: int = 0, cost: Decimal = ZERO) -> None:
        kind, b, scope = answer[0], self.budgets, f"session {session!r}"
        if kind == "ok":
            return
        if kind == "released":  # only a script arriving after the client gave up on it, and owed its release
            raise self.state.unavailable("the reservation was released before it was made")
        if kind == "sessions_full":
            raise SessionsFull(b.max_sessions, max(1.0, int(answer[1]) / 1000))
        if kind == "session_steps":
            raise BudgetExceeded("session_steps", b.session_steps or 0, int(answer[1]), 1, scope)
        if kind == "session_tokens":
            raise BudgetExceeded("session_tokens", b.session_tokens or 0, int(answer[1]) + int(answer[2]), tokens,
                                 scope)
        used = float(from_pico(int(answer[1]) + int(answer[2])))
        if kind == "session_cost_usd":
            raise BudgetExceeded("session_cost_usd", float(b.session_cost_usd or 0), used, float(cost), scope)
        if kind == "hourly_cost_usd":
            raise BudgetExceeded("hourly_cost_usd", float(b.hourly_cost_usd or 0), used, float(cost),
                                 "all sessions in the last hour")
        raise self.state.unavailable(f"unexpected answer from a budget script: {answer!r}")

    # -- the Protocol ------------------------------------------------------------------------------
    async def step(self, session: str) -> None:
        await self._ready()
        keys = self._keys(session)[:2]
        answer = await self.state.script("budget_step", keys, [
            session, _limit(self.budgets.session_steps), self._ttl_ms, self._hold_ms, self.budgets.max_sessions])
        self._check(answer, session)

    async def reserve(self, session: str, tokens: int, cost: Decimal) -> Reservation:
        await self._ready()
        b, rid = self.budgets, uuid.uuid4().hex
        try:
            answer = await self.state.script("budget_reserve", [*self._keys(session), self._done(rid)], [
                self.state.prefix, session, rid, tokens, to_pico(cost), _limit(b.session_tokens),
                _limit(b.session_cost_usd, money=True), _limit(b.hourly_cost_usd, money=True), self._ttl_ms,
                self._hold_ms, b.max_sessions])
        except (StateUnavailable, asyncio.CancelledError) as exc:
            # The script may have run though its answer was lost: the reservation would be held, by no
            # one, until hold_s. Its release is owed (a no-op, or a mark that stops a late script).
            why = exc.detail if isinstance(exc, StateUnavailable) else "cancelled"
            self._owe(_Owed(Reservation(session, tokens, cost, rid), 0, 0, charge=False),
                      f"its reserve's answer was lost ({why}); it may have been held")
            raise
        self._check(answer, session, tokens, cost)
        if int(answer[1]):
            log.warning("redis state: %s reservation(s) held past hold_s=%gs were let go (their process died, or "
                        "lost Redis for that long)", answer[1], self.state.limits.hold_s)
        return Reservation(session, tokens, cost, rid)

    async def settle(self, reservation: Reservation, tokens: int, cost: Decimal) -> None:
        await self._apply_or_owe(_Owed(reservation, tokens, to_pico(cost), charge=True))

    async def release(self, reservation: Reservation) -> None:
        await self._apply_or_owe(_Owed(reservation, 0, 0, charge=False))

    async def _read(self, session: str) -> tuple[list[int], int]:
        """The session's tokens, cost, calls, steps and the hourly window's settled cost (picodollars),
        in one round trip."""
        keys = self._keys(session)
        answer = await self.state.script("budget_read", [keys[0], keys[5]], [])
        minute = int(answer[0]) // 60_000
        hour = answer[5]
        settled = sum(int(hour[i + 1]) for i in range(0, len(hour), 2) if int(hour[i]) >= minute - 60)
        return [int(v) for v in answer[1:5]], settled

    def _left(self, fields: list[int], hour_pico: int) -> dict[str, Any]:
        tokens, cost, _, steps = fields
        return self.budgets.left(tokens, from_pico(cost), from_pico(hour_pico), steps)

    async def left(self, session: str) -> dict[str, Any]:
        return self._left(*await self._read(session))

    async def totals(self, session: str) -> SessionTotals:
        fields, hour = await self._read(session)
        tokens, cost, calls, steps = fields
        return SessionTotals(session, tokens, from_pico(cost), calls, steps, self._left(fields, hour))

    # -- the outbox --------------------------------------------------------------------------------
    def owed(self) -> int:
        """Settlements waiting in the outbox."""
        return len(self._outbox)

    def overdue(self) -> int:
        """Settlements owed for longer than their ``done:<id>`` mark lives: each is logged at CRITICAL
        (see the module docstring)."""
        limit = time.monotonic() - self._done_ms / 1000
        with self._lock:
            late = [owed for owed in self._outbox if owed.since <= limit and not owed.overdue]
            for owed in late:
                owed.overdue = True
            count = sum(1 for owed in self._outbox if owed.overdue)
        for owed in late:
            log.critical("redis state: %s has been owed for over %gs, longer than its done mark lives: if its "
                         "first try reached Redis, applying it may count it twice; reconcile it against the "
                         "trace", owed, self._done_ms / 1000)
        return count

    async def _apply(self, owed: _Owed) -> None:
        r = owed.reservation
        await self.state.script("budget_settle", [*self._keys(r.session), self._done(r.id)], [
            self.state.prefix, r.session, r.id, owed.tokens, owed.pico, self._ttl_ms, self._hold_ms, self._done_ms,
            "1" if owed.charge else "0"])

    async def _apply_or_owe(self, owed: _Owed) -> None:
        try:
            await self._apply(owed)
        except StateUnavailable as exc:
            self._owe(owed, f"not applied: {exc.detail}")
        except asyncio.CancelledError:
            # Cut while it was being applied (a step cut at close): it may or may not have run, and a
            # replay is a no-op if it did, so it is owed rather than lost.
            self._owe(owed, "cancelled while it was being applied")
            raise

    def _owe(self, owed: _Owed, why: str) -> None:
        with self._lock:
            self._outbox.append(owed)
            waiting = len(self._outbox)
        log.error("redis state: %s is owed (%s); kept in the outbox (%d waiting), retried every %gs, and new "
                  "reservations are refused until it is applied", owed, why, waiting, self.state.config.retry_after_s)
        self._retry_later()

    def _retry_later(self) -> None:
        task = self._retrier
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        self._retrier = asyncio.get_running_loop().create_task(self._retry_loop(), name="router-state-outbox")

    async def _retry_loop(self) -> None:
        while self._outbox:
            await asyncio.sleep(self.state.config.retry_after_s)
            try:
                await self.flush()
            except Exception:  # the retrier must outlive any one failure
                log.exception("redis state: the outbox retry failed")

    async def flush(self) -> bool:
        """Apply what the outbox holds, oldest first; True once it is empty."""
        if self._outbox:
            self.overdue()  # logs what has just become overdue
        while True:
            with self._lock:
                if not self._outbox:
                    return True
                owed = self._outbox[0]
            try:
                await self._apply(owed)
            except StateUnavailable:
                return False
            with self._lock:
                if owed in self._outbox:  # another flusher may have taken it (applied once all the same)
                    self._outbox.remove(owed)
            log.warning("redis state: applied from the outbox: %s", owed)

    async def _ready(self) -> None:
        """Before a step or a reservation: the outbox applied first, else refused."""
        if self._outbox and not await self.flush():
            raise self.state.unavailable(f"{self.owed()} settlement(s) from before the outage are not applied "
                                         "yet; new calls wait for them")

    async def aclose(self) -> None:
        if self._outbox and not await self.flush():
            with self._lock:
                lost = list(self._outbox)
            for owed in lost:
                log.critical("redis state: closing with a settlement never applied (Redis unreachable): %s", owed)
        task = self._retrier
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
