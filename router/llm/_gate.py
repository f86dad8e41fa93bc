"""Does escalation pay? Tier-2 metrics over Decisions, and the gate that keeps a losing LLM off.

A query is in the *escalated slice* when tier 1 escalated it: it was then either settled by
tier 2 (``tier == "llm"``) or left degraded (``escalate`` still set). Over that slice:

- ``llm_slice_accuracy``: the final answer (tier 2's label, ``none`` = out of scope; tier 1's
  best guess where tier 2 was unavailable) equals the truth;
- ``tier1_slice_accuracy``: tier 1's best guess equals the truth (an out-of-scope query
  counts as wrong, since an escalated Decision always carries a best-guess intent);
- ``end_to_end_accuracy`` / ``end_to_end_accuracy_tier1``: the same over every query, with
  and without tier 2 (accepted or out-of-scope answers as given, escalated ones as above).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router._decision import TIER_LLM, Decision
from router._intents import OOS
from router.llm._config import LLMConfig, LLMGate


def was_escalated(decision: Decision) -> bool:
    return decision.tier == TIER_LLM or decision.escalate


def final_label(decision: Decision) -> str:
    return OOS if decision.out_of_scope or decision.intent is None else decision.intent


def tier1_label(decision: Decision) -> str:
    if was_escalated(decision):
        return decision.candidates[0].intent if decision.candidates else OOS
    return final_label(decision)


def _mean(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if flags else None


def tier2_metrics(decisions: Sequence[Decision], truth: Sequence[str]) -> dict[str, Any]:
    """``truth`` holds intent names, ``oos`` for out-of-scope queries."""
    slice_ = [(d, t) for d, t in zip(decisions, truth, strict=True) if was_escalated(d)]
    calls = [d.llm for d, _ in slice_ if d.llm is not None]
    latencies = np.array([c.latency_ms for c in calls]) if calls else np.array([0.0])
    n = len(decisions)
    return {
        "escalation_rate": round(len(slice_) / n, 4) if n else None,
        "n_escalated": len(slice_),
        "llm_slice_accuracy": _mean([final_label(d) == t for d, t in slice_]),
        "tier1_slice_accuracy": _mean([tier1_label(d) == t for d, t in slice_]),
        "end_to_end_accuracy": _mean([final_label(d) == t for d, t in zip(decisions, truth, strict=True)]),
        "end_to_end_accuracy_tier1": _mean([tier1_label(d) == t for d, t in zip(decisions, truth, strict=True)]),
        "llm_calls": len(calls),
        "llm_degraded": sum(d.degraded for d, _ in slice_),
        "llm_none_answers": sum(d.tier == TIER_LLM and d.out_of_scope for d, _ in slice_),
        "llm_latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if calls else None,
        "llm_latency_p90_ms": round(float(np.percentile(latencies, 90)), 1) if calls else None,
        "llm_prompt_tokens_mean": round(float(np.mean([c.prompt_tokens for c in calls])), 1) if calls else None,
        "llm_completion_tokens_mean": round(float(np.mean([c.completion_tokens for c in calls])), 1) if calls else None,
        "llm_cached_tokens_mean": round(float(np.mean([c.cached_tokens for c in calls])), 1) if calls else None,
    }


def decide_gate(metrics: dict[str, Any], backend: str, model: str) -> LLMGate:
    llm, tier1 = metrics["llm_slice_accuracy"], metrics["tier1_slice_accuracy"]
    n = metrics["n_escalated"]
    if llm is None or tier1 is None:
        enabled, reason = True, "no escalated validation query to measure on"
    elif llm > tier1:
        enabled, reason = True, f"{backend} {llm:.1%} beats tier 1 {tier1:.1%} on {n} escalated validation queries"
    else:
        enabled, reason = False, (f"{backend} {llm:.1%} does not beat tier 1 {tier1:.1%} on {n} escalated "
                                  "validation queries")
    return LLMGate(backend=backend, model=model, n_escalated=n, llm_slice_accuracy=llm, tier1_slice_accuracy=tier1,
                   degraded=metrics["llm_degraded"], enabled=enabled, reason=reason)


def gate_status(config: LLMConfig, gate: LLMGate | None) -> tuple[bool, str]:
    """(enabled, why) for tier 2 at load time."""
    if config.gate == "on":
        return True, "on (gate: on)"
    if config.gate == "off":
        return False, "off (gate: off)"
    primary = config.backends[0]
    if gate is None:
        return True, "on (not measured at build: no validation split or no llm section then)"
    if (gate.backend, gate.model) != (primary.label, primary.model or primary.backend):
        return True, f"on (the build measured {gate.backend}/{gate.model}, not this backend)"
    return gate.enabled, ("on: " if gate.enabled else "off: ") + gate.reason
