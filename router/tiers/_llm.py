"""Tier 2 as a chain step: the escalated queries' best guesses go to the local LLM's escalator.

The escalator never raises for a backend's failure: a query it cannot settle comes back as tier
1's guess, flagged ``degraded``. Tier 2 is async only (its model calls run on the caller's event
loop); the sync path reaches it through the Router's ``SyncBridge`` (``Chain.run``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.tiers._base import Query, TierKind

if TYPE_CHECKING:
    from router.llm._escalator import Escalator


class LLMTier:
    name = "llm"
    kind: TierKind = "io"

    def __init__(self, escalator: Escalator, skills: dict[str, str | None]) -> None:
        self.escalator = escalator
        self.skills = skills  # intent -> skill: the Router's one map, also for tier 2's answers

    def settle(self, queries: list[Query]) -> None:
        raise TypeError("tier 2 is async: run it with asettle (the sync path goes through the Router's SyncBridge)")

    async def asettle(self, queries: list[Query]) -> None:
        ready = [q for q in queries if q.decision is not None]
        settled = await self.escalator.settle_many([(q.text, q.decision) for q in ready if q.decision is not None])
        for q, decision in zip(ready, settled, strict=True):
            decision.skill = self.skills.get(decision.intent) if decision.intent is not None else None
            q.settle(decision)
