"""The ``memory`` state: budgets, approvals and breakers in this process, the default.

The ledger (``_ledger.py``), the approval store (``_approval_store.py``) and ``LocalBreakers`` behind
the async Protocol. Each is thread-safe and never waits, so one state serves every event loop of
the process (the HTTP service's, the sync bridge's). Several processes each keep their own: run
one process per budget domain, or use the Redis state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from router.providers import LocalBreakers
from router.state._approval_store import ApprovalStore
from router.state._config import StateConfig, StateLimits
from router.state._ledger import Ledger
from router.state._protocol import PendingAction, Reservation, SessionTotals


class MemoryBudgets:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def step(self, session: str) -> None:
        self.ledger.step(session)

    async def reserve(self, session: str, tokens: int, cost: Decimal) -> Reservation:
        return self.ledger.reserve(session, tokens, cost)

    async def settle(self, reservation: Reservation, tokens: int, cost: Decimal) -> None:
        self.ledger.settle(reservation, tokens, cost)

    async def release(self, reservation: Reservation) -> None:
        self.ledger.release(reservation)

    async def left(self, session: str) -> dict[str, Any]:
        return self.ledger.left(session)

    async def totals(self, session: str) -> SessionTotals:
        return self.ledger.totals(session)


class MemoryApprovals:
    def __init__(self, store: ApprovalStore) -> None:
        self.store = store

    async def check(self, session_id: str) -> None:
        self.store.check(session_id)

    async def create(self, session_id: str, skill: str, params: dict[str, Any], text: str | None) -> PendingAction:
        return self.store.create(session_id, skill, params, text)

    async def claim(self, approval_id: str) -> PendingAction:
        return self.store.claim(approval_id)

    async def take(self, approval_id: str) -> PendingAction:
        return self.store.take(approval_id)

    async def finish(self, approval_id: str, consumed: bool) -> None:
        self.store.finish(approval_id, consumed)

    async def pending(self, session_id: str | None = None) -> list[PendingAction]:
        return self.store.pending(session_id)


class MemoryState:
    """``clock``: the budgets', approvals' and breakers' clock (monotonic seconds; tests set it)."""

    name = "memory"

    def __init__(self, limits: StateLimits | None = None, config: StateConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits if limits is not None else StateLimits()
        self.config = config if config is not None else StateConfig()
        self.budgets = MemoryBudgets(Ledger(self.limits.budgets, clock=clock))
        self.approvals = MemoryApprovals(ApprovalStore(
            self.limits.approval_ttl_s, clock=clock, max_pending=self.limits.max_pending_approvals,
            max_per_session=self.limits.max_pending_approvals_per_session))
        self.breakers = LocalBreakers(self.limits.breaker, clock)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": "memory", "prefix": self.config.prefix}

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
