"""Tier 0 as a chain step: one regex pass per query; a single intent's rule hit settles it."""

from __future__ import annotations

from time import perf_counter_ns

from router._decision import TIER_RULES, Candidate, Decision
from router._rules import RuleSet
from router.tiers._base import Query, TierKind, elapsed_us


class RulesTier:
    name = "rules"
    kind: TierKind = "inline"

    def __init__(self, rules: RuleSet, skills: dict[str, str | None]) -> None:
        self.rules = rules
        self._skills = skills

    def settle(self, queries: list[Query]) -> None:
        for q in queries:
            start = perf_counter_ns()
            match = self.rules.match(q.text)
            q.flags = match.flags
            q.latency_us["rules"] = elapsed_us(start, perf_counter_ns())
            if match.intent is not None:
                q.settle(Decision(
                    intent=match.intent, out_of_scope=False, confidence=1.0, tier=TIER_RULES, escalate=False,
                    candidates=[Candidate(match.intent, 1.0)], slots=match.slots, flags=q.flags,
                    latency_us=q.latency_us, skill=self._skills.get(match.intent),
                ))

    async def asettle(self, queries: list[Query]) -> None:
        self.settle(queries)
