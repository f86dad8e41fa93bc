"""The Done-when figures of the core router, on the full test splits (minutes: `make test-slow`).

One ``router eval`` run per dataset (a build and ~3-5k one-by-one classifications, 2-3 minutes
each) with the default config, static tier on. Every target is checked and every miss reported
at once, so one run says all that is left to do.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest

from router import EncoderConfig, RouterConfig
from router._evaluation import run_eval
from router.datasets import load_dataset

pytestmark = pytest.mark.slow

AT_LEAST, AT_MOST = (">=", operator.ge), ("<=", operator.le)
Target = tuple[str, tuple[str, Callable[[float, float], bool]], float]


def _value(report: dict[str, Any], key: str) -> Any:
    value: Any = report
    for part in key.split("."):
        value = value[part]
    return value


def misses(report: dict[str, Any], targets: list[Target]) -> str:
    """Every target missed, then every figure measured (one slow run says where each one stands)."""
    missed = []
    for key, (symbol, ok), target in targets:
        value = _value(report, key)
        if value is None or not ok(value, target):
            missed.append(f"{key} = {value} (target {symbol} {target})")
    if not missed:
        return ""
    figures = {key: _value(report, key) for key, _, _ in targets}
    return "; ".join(missed) + f"\nall figures: {figures}"


def test_clinc150_meets_its_targets() -> None:
    config = RouterConfig(name="acc-clinc", dataset="clinc150", encoder=EncoderConfig(threads=1))
    r = run_eval(config, load_dataset("clinc150").test)
    assert r["static"] is not None and r["n_test_oos"] > 0
    missed = misses(r, [
        ("accuracy_full", AT_LEAST, 0.953),
        ("coverage_in_scope", AT_LEAST, 0.89),
        ("accepted_precision", AT_LEAST, 0.97),
        ("oos_recall", AT_LEAST, 0.935),
        ("tier_share.static", AT_LEAST, 0.50),
        ("static_accepted_precision", AT_LEAST, 0.985),
        # The documented leak (README, "Measured"): 1.9% of CLINC150's out-of-scope test queries (int8), most of
        # them label noise tier 1b accepts too; the bound leaves room for that and no more.
        ("static_oos_leak", AT_MOST, 0.025),
        ("build_seconds", AT_MOST, 120),
    ])
    assert not missed, f"CLINC150 misses: {missed}"
    # Out-of-scope recall may fall by at most 1 pt against the transformer alone (held-out, from the build).
    held = r["static"]
    assert held["end_to_end"]["oos_recall"] >= held["transformer_only"]["oos_recall"] - 0.01


def test_banking77_meets_its_targets() -> None:
    config = RouterConfig(name="acc-banking", dataset="banking77", encoder=EncoderConfig(threads=1))
    r = run_eval(config, load_dataset("banking77").test)
    assert r["static"] is not None
    # No out-of-scope queries in BANKING77: the out-of-scope figures must say so rather than invent a number.
    assert r["n_test_oos"] == 0 and r["oos_recall"] is None and r["static_oos_leak"] is None
    missed = misses(r, [
        ("accuracy_full", AT_LEAST, 0.93),
        ("coverage_in_scope", AT_LEAST, 0.87),
        ("accepted_precision", AT_LEAST, 0.97),
        ("tier_share.static", AT_LEAST, 0.40),
    ])
    assert not missed, f"BANKING77 misses: {missed}"
