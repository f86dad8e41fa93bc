"""The Done-when figures of the core router, on the full test splits (minutes: `make test-slow`)."""

import pytest

from router import EncoderConfig, RouterConfig
from router.datasets import load_dataset
from router.evaluation import run_eval

pytestmark = pytest.mark.slow


def test_clinc150_meets_its_targets() -> None:
    config = RouterConfig(name="acc-clinc", dataset="clinc150", encoder=EncoderConfig(threads=1))
    r = run_eval(config, load_dataset("clinc150").test)
    assert r["accuracy_full"] >= 0.95
    assert r["coverage_in_scope"] >= 0.85 and r["accepted_precision"] >= 0.97
    assert r["oos_recall"] >= 0.90
    assert r["build_seconds"] <= 120


def test_banking77_meets_its_targets() -> None:
    config = RouterConfig(name="acc-banking", dataset="banking77", encoder=EncoderConfig(threads=1))
    r = run_eval(config, load_dataset("banking77").test)
    assert r["accuracy_full"] >= 0.925
    assert r["coverage_in_scope"] >= 0.87 and r["accepted_precision"] >= 0.97
    assert r["oos_recall"] is None
