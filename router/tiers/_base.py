"""What every tier shares: the per-query state that flows down the chain, and the Tier Protocol.

A tier takes the queries still pending (a batch; one query is a batch of one), settles the ones
it is sure of by setting their Decision and ``done``, and leaves the rest pending with what it
learned (token ids, flags, a best-guess Decision). The Router runs an ordered chain of tiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Literal, Protocol

import numpy as np

from router._decision import Decision

# Where a tier may run: ``inline`` on the caller's thread or event loop (tens of µs: rules, the
# static table), ``compute`` on a worker thread (ms of CPU: the transformer), ``io`` awaited
# (network: tier 2, async only). The sync path runs them all in order in the calling thread (an io
# tier through the Router's SyncBridge); the async path uses the kind to avoid a thread hop for
# cheap tiers and to hand only compute tiers to its compute runner (the service's micro-batcher).
TierKind = Literal["inline", "compute", "io"]


def top_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable classes, best first (ties keep class order)."""
    top = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
    result: np.ndarray = top[np.argsort(-probs[top], kind="stable")]
    return result


def elapsed_us(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1000.0, 1)


@dataclass(slots=True, eq=False)
class Query:
    """One text on its way down the chain."""

    text: str
    start_ns: int = field(default_factory=perf_counter_ns)
    latency_us: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # Token ids with the encoder's special tokens, set once by the first tier that tokenises
    # and reused by every later one (the static table and the transformer share them).
    ids: np.ndarray | None = None
    decision: Decision | None = None  # the settled answer, or the latest best guess when escalated
    done: bool = False

    def settle(self, decision: Decision) -> None:
        self.decision = decision
        self.done = True


class Tier(Protocol):
    """One step of the chain. ``settle`` is given only pending queries and mutates them in place."""

    name: str
    kind: TierKind

    def settle(self, queries: list[Query]) -> None: ...

    async def asettle(self, queries: list[Query]) -> None: ...
