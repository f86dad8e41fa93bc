"""The ordered chain of tiers the Router runs: one sync path and one async path, batch-shaped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import nullcontext
from time import perf_counter_ns
from typing import TYPE_CHECKING

from router import _telemetry
from router._decision import Decision, next_decision_id
from router.tiers._base import Query, Tier, TierKind, elapsed_us

if TYPE_CHECKING:
    from router._sync import SyncBridge

ALL_KINDS: tuple[TierKind, ...] = ("inline", "compute", "io")
INLINE: tuple[TierKind, ...] = ("inline",)
COMPUTE: tuple[TierKind, ...] = ("compute",)
IO: tuple[TierKind, ...] = ("io",)
LOCAL: tuple[TierKind, ...] = ("inline", "compute")  # tiers 0-1: everything but tier 2

# How the async path runs a compute tier on its pending queries: by default on a worker thread;
# the HTTP service plugs in its micro-batcher (one encoder thread, fair jobs shared by requests).
ComputeRunner = Callable[[Tier, list[Query]], Awaitable[None]]
# Telemetry off: each tier runs in this (reusable) no-op context instead of its span.
_UNTRACED = nullcontext()


async def on_a_thread(tier: Tier, queries: list[Query]) -> None:
    await asyncio.to_thread(tier.settle, queries)


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

    def run(self, queries: list[Query], kinds: Collection[TierKind] = ALL_KINDS,
            bridge: SyncBridge | None = None, traced: bool = False) -> None:
        """Each tier of ``kinds``, in order, on the queries still pending, in the calling thread; an io
        tier (async) runs through ``bridge``, the one sync→async boundary. ``traced``: each tier in a
        ``router.tier.<name>`` span (``router._telemetry``; the Router asks when telemetry is on)."""
        for tier in self.tiers:
            if tier.kind in kinds:
                pending = [q for q in queries if not q.done]
                if not pending:
                    return
                with _telemetry.tier_span(tier, pending) if traced else _UNTRACED:
                    if tier.kind != "io":
                        tier.settle(pending)
                    elif bridge is None:
                        raise RuntimeError(f"tier {tier.name!r} is async: the sync path runs it through a SyncBridge")
                    else:  # the bridge's loop runs in a thread of its own: the trace context goes along
                        bridge.call(_telemetry.carried(tier.asettle) if traced else tier.asettle, pending)

    async def arun(self, queries: list[Query], kinds: Collection[TierKind] = ALL_KINDS,
                   compute: ComputeRunner = on_a_thread, inline_off_loop: bool = False,
                   traced: bool = False) -> None:
        """Inline tiers run on the event loop (µs: cheaper than a thread hop; ``inline_off_loop`` for a
        many-text call, where they can take ms), compute tiers through ``compute``, io tiers are awaited.
        ``traced``: as ``run``'s (a compute tier's span includes its wait for the compute runner)."""
        for tier in self.tiers:
            if tier.kind in kinds:
                pending = [q for q in queries if not q.done]
                if not pending:
                    return
                with _telemetry.tier_span(tier, pending) if traced else _UNTRACED:
                    if tier.kind == "inline":
                        if inline_off_loop:
                            await asyncio.to_thread(tier.settle, pending)
                        else:
                            tier.settle(pending)
                    elif tier.kind == "compute":
                        await compute(tier, pending)
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
            decision.id = next_decision_id()
            decisions.append(decision)
        return decisions
