from __future__ import annotations

import pytest

from router._decision import LLMCall
from router.bench._metrics import Record, coverage_curve, operating_point, summarize, wilson
from router.bench.methods._base import Outcome


def rec(truth: str, guess: str | None, accepted: bool, confidence: float = 0.5, latency_us: float = 1000.0,
        llm: LLMCall | None = None, tier: str = "embedding") -> Record:
    return Record("q", truth, Outcome(guess, accepted, confidence, tier, llm), latency_us)


def test_summary_definitions() -> None:
    records = [
        rec("a", "a", True),            # in scope, right, accepted
        rec("b", "b", False),           # in scope, right, abstained
        rec("c", "a", True),            # in scope, wrong, accepted
        rec("oos", "a", True),          # out of scope, accepted: wrong
        rec("oos", None, False),        # out of scope, refused
    ]
    s = summarize(records)
    assert s["n"] == 5 and s["n_oos"] == 2
    assert s["accuracy"] == pytest.approx(2 / 3)  # top-1 at full coverage, abstention ignored
    assert s["coverage"] == pytest.approx(2 / 3)
    assert s["accepted_accuracy"] == pytest.approx(1 / 3)  # a right; c wrong; the accepted oos wrong
    assert s["oos_recall"] == pytest.approx(1 / 2)


def test_no_out_of_scope_queries_gives_no_oos_recall() -> None:
    assert summarize([rec("a", "a", True)])["oos_recall"] is None


def test_latency_llm_calls_and_tier_shares() -> None:
    call = LLMCall("llama_cpp", "m", latency_ms=900.0, prompt_tokens=100)
    records = [rec("a", "a", True, latency_us=1000.0 * (i + 1)) for i in range(99)]
    records.append(rec("a", "a", True, latency_us=1_000_000.0, llm=call, tier="llm"))
    s = summarize(records)
    assert s["latency_p50_ms"] == pytest.approx(50.5)
    assert s["latency_p99_ms"] > 99.0
    assert s["llm_calls_per_100"] == 1.0
    assert s["llm_latency_p50_ms"] == 900.0
    assert s["tier_share"] == {"embedding": 0.99, "llm": 0.01}


def test_wilson_interval() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson(10, 10)[1] == pytest.approx(1.0)


def test_the_curve_answers_the_most_confident_first() -> None:
    records = [rec("a", "a", True, 0.9), rec("b", "x", True, 0.8), rec("oos", "a", True, 0.7),
               rec("c", "c", False, 0.1)]
    curve = coverage_curve(records)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["accuracy"] == pytest.approx([1.0, 0.5, 1 / 3, 0.5])
    assert operating_point(records) == {"coverage": 0.75, "accuracy": pytest.approx(1 / 3)}
