"""Tier 2 as a chain step: the escalated queries' best guesses go to the local LLM's escalator.

The escalator never raises for a backend's failure: a query it cannot settle comes back as tier
1's guess, flagged ``degraded``.
"""

from __future__ import annotations

from router.decision import Decision
from router.llm.escalator import Escalator
from router.tiers.base import Query, TierKind


class LLMTier:
    name = "llm"
    kind: TierKind = "io"

    def __init__(self, escalator: Escalator) -> None:
        self.escalator = escalator

    @staticmethod
    def _items(ready: list[Query]) -> list[tuple[str, Decision]]:
        return [(q.text, q.decision) for q in ready if q.decision is not None]

    def settle(self, queries: list[Query]) -> None:
        ready = [q for q in queries if q.decision is not None]
        settled = self.escalator.resolve_many(self._items(ready))
        for q, decision in zip(ready, settled, strict=True):
            q.settle(decision)

    async def asettle(self, queries: list[Query]) -> None:
        ready = [q for q in queries if q.decision is not None]
        settled = await self.escalator.aresolve_many(self._items(ready))
        for q, decision in zip(ready, settled, strict=True):
            q.settle(decision)
