"""The fine-tuned CLINC150 eval, end to end (`make test-train`: about 12 minutes on 2 cores).

One ``router eval clinc150 --finetune`` with FinetuneConfig's defaults (3 epochs, out-of-scope
examples left out of training and held out): the build tunes MiniLM, serves it from the index as
ONNX, and the test split is classified one query at a time. The bounds are what this machine
measured (accuracy 0.969, coverage 0.943 at precision 0.968, out-of-scope recall 0.920) with a
margin: the tuned encoder gains over a point of accuracy and five of coverage on the frozen one
(0.955, 0.894 at 0.973). Two of the issue's figures are not reached at the fitted thresholds
(precision 0.97, out-of-scope recall 0.94); docs/finetune.md says by how much.
"""

from __future__ import annotations

import pytest

from router import EncoderConfig, RouterConfig
from router._config import FinetuneConfig
from router._evaluation import run_eval
from router.datasets import load_dataset
from tests.test_acceptance import AT_LEAST, misses

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_clinc150_finetuned() -> None:
    config = RouterConfig(name="acc-clinc-ft", dataset="clinc150", encoder=EncoderConfig(threads=1),
                          finetune=FinetuneConfig())
    r = run_eval(config, load_dataset("clinc150").test)
    record = r["finetune"]
    assert record is not None and "+ft@" in r["encoder"] and r["static"] is not None
    assert record["heldout"] == "validation" and record["best_epoch"] >= 1
    assert len(record["epoch_seconds"]) == len(record["heldout_accuracy"]) <= 3
    assert r["finetune_seconds"] > 0
    missed = misses(r, [
        ("accuracy_full", AT_LEAST, 0.964),
        ("coverage_in_scope", AT_LEAST, 0.93),
        ("accepted_precision", AT_LEAST, 0.96),
        ("oos_recall", AT_LEAST, 0.90),
        ("static_accepted_precision", AT_LEAST, 0.975),
    ])
    assert not missed, f"CLINC150 fine-tuned misses: {missed}"
