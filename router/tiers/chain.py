"""The ordered chain of tiers the Router runs: one sync path and one async path, batch-shaped."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from time import perf_counter_ns

from router.decision import Decision
from router.tiers.base import Query, Tier, TierKind, elapsed_us

ALL_KINDS: tuple[TierKind, ...] = ("inline", "compute", "io")
INLINE: tuple[TierKind, ...] = ("inline",)
COMPUTE: tuple[TierKind, ...] = ("compute",)
IO: tuple[TierKind, ...] = ("io",)
LOCAL: tuple[TierKind, ...] = ("inline", "compute")  # tiers 0-1: everything but tier 2


class Chain:
    def __init__(self, tiers: Sequence[Tier]) -> None:
        self.tiers = list(tiers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def get(self, name: str) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    @staticmethod
    def start(texts: Sequence[str]) -> list[Query]:
        now = perf_counter_ns()
        return [Query(text, now) for text in texts]

    def run(self, queries: list[Query], kinds: Collection[TierKind] = ALL_KINDS) -> None:
        """Each tier of ``kinds``, in order, on the queries still pending."""
        for tier in self.tiers:
            if tier.kind in kinds:
                pending = [q for q in queries if not q.done]
                if not pending:
                    return
                tier.settle(pending)

    async def arun(self, queries: list[Query], kinds: Collection[TierKind] = ALL_KINDS) -> None:
        """Inline tiers run on the event loop (µs: cheaper than a thread hop), compute tiers on a
        worker thread, io tiers are awaited."""
        for tier in self.tiers:
            if tier.kind in kinds:
                pending = [q for q in queries if not q.done]
                if not pending:
                    return
                if tier.kind == "inline":
                    tier.settle(pending)
                elif tier.kind == "compute":
                    await asyncio.to_thread(tier.settle, pending)
                else:
                    await tier.asettle(pending)

    @staticmethod
    def finish(queries: list[Query]) -> list[Decision]:
        decisions = []
        for q in queries:
            decision = q.decision
            if decision is None:
                raise RuntimeError(f"no tier produced a Decision for {q.text!r:.40}; the chain lacks a last tier")
            decision.latency_us["total"] = elapsed_us(q.start_ns, perf_counter_ns())
            decisions.append(decision)
        return decisions
