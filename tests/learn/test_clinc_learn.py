"""The issue's learning figures on CLINC150 (minutes: `pytest -m slow -s tests/learn/test_clinc_learn.py`).

One ``router eval clinc150 --learn-from val`` run: a scratch build with the default config, the test split
evaluated (``before``), the validation split streamed through the router with its escalated and wrong
queries fed back with their gold labels, then the test split evaluated again. The build is most of the
time (about 4 minutes in all). The figures are printed (``-s``) whether or not a target is missed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router import RouterConfig
from router._evaluation import run_eval
from router.datasets import load_dataset

pytestmark = pytest.mark.slow

FIGURES = ("accepted_precision", "oos_recall", "coverage_in_scope", "escalation_rate", "accuracy_full")


def test_learning_from_clinc150_val_covers_more_at_the_same_precision(tmp_path: Path) -> None:
    splits = load_dataset("clinc150")
    assert splits.val is not None
    r = run_eval(RouterConfig(name="learn-clinc", dataset="clinc150"), splits.test, index_dir=tmp_path,
                 learn_from=splits.val)
    before = r["before"]
    figures = {key: {"before": before[key], "after": r[key]} for key in FIGURES}
    learning = {key: r[key] for key in ("n_stream", "stream_escalation_rate", "stream_wrong", "n_fed_back",
                                        "feedback", "n_learned", "n_heldout", "n_unserved", "learn_seconds",
                                        "learn_applies", "learn_check")}
    print(f"\nCLINC150, learning from val: {json.dumps(figures)}\n{json.dumps(learning)}")

    assert r["accepted_precision"] >= 0.97
    assert r["oos_recall"] >= before["oos_recall"] - 0.01
    assert r["coverage_in_scope"] > before["coverage_in_scope"]
    assert r["escalation_rate"] < before["escalation_rate"]
    assert r["n_learned"] > 0
    assert r["learn_check"]["swapped"], r["learn_check"]["reason"]
