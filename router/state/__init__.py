"""Where the dispatcher's budgets, approvals and breakers live: the ``State`` backends.

``STATES`` maps a URL scheme to a backend: ``memory`` (this process, the default: today's
behaviour; one process per budget domain) and ``redis``/``rediss`` (redis-py asyncio, the
``[redis]`` extra: shared by every worker and replica, atomic across processes, failing closed).
``build_state(StateConfig, StateLimits)`` makes one; the Dispatcher builds its own from the
model-routing file's ``state:`` key unless given one. Key names, units and failure behaviour:
``router/state/_redis.py`` and docs/state.md.

``router.dispatch`` imports this package, never the reverse; nothing here imports redis-py until a
Redis state is built.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from router.state._build import STATES, StateFactory, build_state
from router.state._config import BudgetConfig, StateConfig, StateLimits
from router.state._memory import MemoryState
from router.state._protocol import Approvals, Budgets, PendingAction, Reservation, SessionTotals, State

if TYPE_CHECKING:
    from router.state._redis import RedisState

# redis-py loads with the first Redis state, not with this package.
_LAZY = {"RedisState": "router.state._redis"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router.state' has no attribute {name!r}")


__all__ = [
    "STATES",
    "Approvals",
    "BudgetConfig",
    "Budgets",
    "MemoryState",
    "PendingAction",
    "RedisState",
    "Reservation",
    "SessionTotals",
    "State",
    "StateConfig",
    "StateFactory",
    "StateLimits",
    "build_state",
]
