"""The ``State`` Protocol: budgets, approvals and breakers, async, behind one backend.

Three parts, each an attribute of a state:

- ``budgets`` (``Budgets``): ``step`` counts a dispatch step, ``reserve`` holds a call's worst case
  against every budget before it is sent, ``settle`` replaces it with what the provider billed,
  ``release`` drops it (the call failed before any work), ``left`` and ``totals`` read.
- ``approvals`` (``Approvals``): pending actions of ``writes`` skills, single use, expiring, capped;
  ``claim`` takes one to run (a second claim gets ``ApprovalRunning``), ``finish`` ends it.
- ``breakers`` (``router.providers.Breakers``): one circuit breaker per ``provider/model``.

A backend that cannot answer raises ``StateUnavailable``: the step is refused, nothing is sent.
Costs cross this boundary as ``Decimal`` dollars with at most 12 decimals (whole picodollars).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from router.errors import ApprovalError, ApprovalRunning, TooManyApprovals
from router.providers import Breakers
from router.state._config import StateLimits


@dataclass(frozen=True)
class Reservation:
    """A call's worst case, held against the budgets until it is settled or released. ``id``: the
    reservation's own record in a shared state (empty in memory)."""

    session: str
    tokens: int
    cost: Decimal
    id: str = ""


@dataclass(frozen=True)
class SessionTotals:
    session_id: str
    tokens: int
    cost_usd: Decimal
    calls: int
    steps: int
    budget_left: dict[str, Any]


@dataclass(frozen=True)
class PendingAction:
    """A ``writes`` skill's action waiting for approval. ``created``: seconds on the state's clock
    (this process's monotonic clock in memory, Redis's TIME in Redis)."""

    approval_id: str
    session_id: str
    skill: str
    params: dict[str, Any]
    text: str | None
    created: float


# The approvals' refusals, the same words from either backend.
def approval_running(approval_id: str) -> ApprovalRunning:
    return ApprovalRunning(f"approval_id {approval_id!r} is running now; its outcome goes to the trace, and it is "
                           "never run twice")


def approval_gone(approval_id: str, ttl_s: float) -> ApprovalError:
    return ApprovalError(f"approval_id {approval_id!r} is unknown, expired (ttl {ttl_s:g}s) or already used")


def too_many_approvals(session_id: str | None, limit: int, retry_after: float) -> TooManyApprovals:
    """``session_id``: the session at its own cap; None: all sessions at the global cap."""
    if session_id is None:
        return TooManyApprovals("max_pending_approvals", limit, "all sessions", retry_after)
    return TooManyApprovals("max_pending_approvals_per_session", limit, f"session {session_id!r}", retry_after)


class Budgets(Protocol):
    async def step(self, session: str) -> None:
        """Count one dispatch step; ``BudgetExceeded`` past ``session_steps``, ``SessionsFull``
        for a new session past ``max_sessions``."""

    async def reserve(self, session: str, tokens: int, cost: Decimal) -> Reservation:
        """Hold ``tokens``/``cost`` against the session's and the hourly budgets, counting every live
        reservation; ``BudgetExceeded`` (nothing held) when one would be exceeded."""

    async def settle(self, reservation: Reservation, tokens: int, cost: Decimal) -> None:
        """Replace the reservation with what was billed. Never raises for an unreachable backend: a
        shared state keeps it and applies it once (see its docs)."""

    async def release(self, reservation: Reservation) -> None:
        """Drop the reservation: the call failed before the provider billed anything."""

    async def left(self, session: str) -> dict[str, Any]:
        """What remains of each budget (None where switched off)."""

    async def totals(self, session: str) -> SessionTotals:
        """The session's spend and what is left, in one read."""


class Approvals(Protocol):
    async def check(self, session_id: str) -> None:
        """``TooManyApprovals`` now if ``create`` would raise it: before a model is paid to extract."""

    async def create(self, session_id: str, skill: str, params: dict[str, Any], text: str | None) -> PendingAction:
        ...

    async def claim(self, approval_id: str) -> PendingAction:
        """Pending -> running (the caller runs the handler, then calls ``finish``); ``ApprovalRunning``
        when it runs now, ``ApprovalError`` when it is unknown, expired or used."""

    async def take(self, approval_id: str) -> PendingAction:
        """Remove a pending action (a rejection)."""

    async def finish(self, approval_id: str, consumed: bool) -> None:
        """Running -> gone when ``consumed`` (its handler was entered), else pending again."""

    async def pending(self, session_id: str | None = None) -> list[PendingAction]:
        """Pending actions, oldest first: of one session, or of all."""


class State(Protocol):
    """Budgets, approvals and breakers of one deployment (see the module docstring)."""

    @property
    def name(self) -> str:
        """The backend: "memory" or "redis"."""

    @property
    def limits(self) -> StateLimits: ...

    @property
    def budgets(self) -> Budgets: ...

    @property
    def approvals(self) -> Approvals: ...

    @property
    def breakers(self) -> Breakers: ...

    def describe(self) -> dict[str, Any]:
        """``backend``, ``url`` (any password masked), ``prefix``, and what else the backend reports."""

    async def ping(self) -> bool:
        """Whether the backend answers now (readiness)."""

    async def aclose(self) -> None:
        """Flush what is owed and close this loop's connections."""
