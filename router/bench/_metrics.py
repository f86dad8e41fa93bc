"""From per-query outcomes to the report's figures.

Definitions (a test query labelled ``oos`` is out of scope; ``known`` are the trained intents):
- accuracy: in-scope queries whose top-1 guess is right, at full coverage (abstention ignored),
  with its 95% Wilson interval;
- coverage: in-scope queries the method accepted (acted on an intent);
- accepted accuracy: accepted queries answered right; an out-of-scope query accepted is wrong;
- OOS recall: out-of-scope queries not accepted (None when the test split has none);
- latency: one ``classify`` call, one query at a time, in this process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from router._intents import OOS
from router.bench.methods._base import Outcome


@dataclass(slots=True)
class Record:
    text: str
    truth: str  # an intent, or OOS
    outcome: Outcome
    latency_us: float

    @property
    def llm_ms(self) -> float:
        return self.outcome.llm.latency_ms if self.outcome.llm is not None else 0.0


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def summarize(records: list[Record]) -> dict[str, Any]:
    truth = np.array([r.truth for r in records])
    guess = np.array([r.outcome.guess or "" for r in records])
    accepted = np.array([r.outcome.accepted for r in records])
    in_scope = truth != OOS
    guess_right = (guess == truth) & in_scope
    latency_ms = np.array([r.latency_us for r in records]) / 1000.0
    llm = [r.outcome.llm for r in records if r.outcome.llm is not None]
    tiers: dict[str, int] = {}
    for r in records:
        tiers[r.outcome.tier] = tiers.get(r.outcome.tier, 0) + 1
    right_in_scope = int(guess_right.sum())
    return {
        "n": len(records),
        "n_oos": int((~in_scope).sum()),
        "accuracy": _share(guess_right[in_scope]),
        "accuracy_ci95": wilson(right_in_scope, int(in_scope.sum())),
        "coverage": _share(accepted[in_scope]),
        "accepted_accuracy": _share(guess_right[accepted]),
        "oos_recall": _share(~accepted[~in_scope]),
        "latency_p50_ms": float(np.percentile(latency_ms, 50)),
        "latency_p99_ms": float(np.percentile(latency_ms, 99)),
        "llm_calls_per_100": 100.0 * len(llm) / len(records),
        "llm_latency_p50_ms": float(np.median([c.latency_ms for c in llm])) if llm else None,
        "llm_prompt_tokens_mean": float(np.mean([c.prompt_tokens for c in llm])) if llm else None,
        "tier_share": {k: v / len(records) for k, v in sorted(tiers.items())},
    }


def coverage_curve(records: list[Record], points: int = 200) -> dict[str, list[float]]:
    """Accuracy of the answered queries when a method answers only its most confident ones.

    Queries are taken in order of confidence; x is the share of all test queries answered
    (out-of-scope ones included, and wrong when answered), y the accuracy of those answered.
    """
    order = np.argsort([-r.outcome.confidence for r in records], kind="stable")
    right = np.array([records[i].outcome.guess == records[i].truth and records[i].truth != OOS for i in order])
    answered = np.arange(1, len(order) + 1)
    accuracy = np.cumsum(right) / answered
    keep = np.unique(np.linspace(0, len(order) - 1, min(points, len(order))).astype(int))
    return {"coverage": (answered[keep] / len(order)).tolist(), "accuracy": accuracy[keep].tolist()}


def operating_point(records: list[Record]) -> dict[str, float | None]:
    """Where a method's own acceptance rule puts it on the coverage curve's axes."""
    accepted = [r for r in records if r.outcome.accepted]
    right = sum(r.outcome.guess == r.truth for r in accepted)
    return {"coverage": len(accepted) / len(records), "accuracy": right / len(accepted) if accepted else None}
