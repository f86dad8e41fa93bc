"""The held-out precision check: a learned state that would lower precision under the target is refused,
and the rows it is measured on are the calibration split minus what was learned, plus the reservoir."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from router import Router
from router._artifact import IndexArtifact, load_heldout
from router._head import LinearHead
from router.learn import LogEntry, digest
from router.learn._check import Rows, check, check_rows, figures
from router.learn._learner import in_reservoir
from tests.learn.conftest import LoadFn, learner_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OOS_PRIOR = 0.5


def val_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in (FIXTURES / "mini_val.jsonl").read_text().splitlines() if line.strip()]


def of_intent(intent: str) -> list[str]:
    return [r["text"] for r in val_rows() if r["intent"] == intent]


# A reviewer gone wrong: validation-like texts of two intents taught as two others. The split rows of
# translate and greeting that were not taught then go wrong too.
WRONG_LABELS = ([(t, "weather") for t in of_intent("translate")[:12]]
                + [(t, "alarm") for t in of_intent("greeting")[:12]])


def log_entries(path: Path) -> list[LogEntry]:
    return [LogEntry.model_validate_json(line) for line in path.read_text().splitlines()]




@pytest.fixture(scope="module")
def built(mini_index: Path) -> Iterator[Router]:
    router = Router.load(mini_index, llm="off", learning="off")
    yield router
    router.close()




# -- through the Learner -------------------------------------------------------------------------------
# A faster refit than the default makes a dozen wrong labels move the heads far enough to fail the check.
WRONG_FAST = {"refit_lr": 0.05}


def test_a_state_that_lowers_precision_under_the_target_is_refused(load: LoadFn, tmp_path: Path) -> None:
    router = load(**WRONG_FAST)
    learner = learner_of(router)
    serving = router.artifact
    probe = of_intent("translate")[0]
    assert router.classify(probe).intent == "translate"

    report = router.learn_many(WRONG_LABELS)
    assert not report.swapped and report.n_learned == len(WRONG_LABELS)
    assert "under the target" in report.reason and "held-out precision would fall" in report.reason
    assert report.check is not None
    assert report.check["learned"]["precision"] < report.check["target"]
    assert report.check["learned"]["precision"] < report.check["serving"]["precision"]
    # Still serving the old state, and saying so.
    assert router.artifact is serving
    assert router.classify(probe).intent == "translate"
    stats = learner.stats()
    assert (stats["refused"], stats["applies"], stats["n_unserved"]) == (1, 1, len(WRONG_LABELS))
    assert learner.last_apply is report and stats["last_apply"]["swapped"] is False
    assert stats["last_apply"]["reason"] == report.reason
    # The log keeps every entry: a reviewer can see what was refused, and nothing is lost.
    assert [(e.text, e.intent) for e in log_entries(tmp_path / "l.jsonl")] == WRONG_LABELS
    # A good item on top of them is refused too: the learned state holds them all.
    result = router.learn("good morning, ai", "greeting")
    assert result.status == "refused"
    assert router.artifact is serving and learner.stats()["refused"] == 2


def test_a_refused_log_stays_refused_after_a_restart(load: LoadFn) -> None:
    first = load(**WRONG_FAST)
    assert not first.learn_many(WRONG_LABELS).swapped
    again = load(fresh=True, **WRONG_FAST)
    assert learner_of(again).stats()["refused"] == 1
    assert again.classify(of_intent("translate")[0]).intent == "translate"


def test_an_unpowered_check_passes_and_says_so(load: LoadFn) -> None:
    router = load(min_check=10_000)
    report = router.learn_many(WRONG_LABELS)
    assert report.swapped and report.reason.startswith("unpowered")
    assert "min_check=10000" in report.reason


def test_learned_texts_leave_the_split(load: LoadFn, mini_index: Path) -> None:
    router = load()
    split = load_heldout(router.artifact)
    assert split is not None
    n_split = len(split.truth)
    assert digest("wassup") in set(split.digests.tolist())

    router.learn("please tell me the chance of snow in oslo", "weather")  # not a validation text
    assert learner_of(router).last_apply.check["rows"] == n_split  # type: ignore[union-attr]
    router.learn("WASSUP ", "greeting")  # a validation text, normalised: its row leaves the split
    assert learner_of(router).last_apply.check["rows"] == n_split - 1  # type: ignore[union-attr]


def test_reservoir_rows_weigh_one_over_the_share(load: LoadFn) -> None:
    share = 0.25
    router = load(reservoir_share=share)
    learner = learner_of(router)
    held = [r for r in val_rows() if r["intent"] != "oos" and in_reservoir(r["text"], share)][:3]
    assert len(held) == 3
    results = [router.learn(r["text"], r["intent"]) for r in held]
    assert [r.status for r in results] == ["held_out"] * 3
    assert learner.last_apply is None  # held-out items alone change nothing: no refit, no check
    trained = next(r for r in val_rows() if r["intent"] != "oos" and not in_reservoir(r["text"], share))
    assert router.learn(trained["text"], trained["intent"]).status == "learned"
    report = learner.last_apply
    assert report is not None and report.n_heldout == 3 and report.check is not None
    split = load_heldout(router.artifact)
    assert split is not None
    # The four left the split (their texts are learned from); the three held out came back as reservoir rows.
    assert report.check["rows"] == len(split.truth) - 1

    heldout = [LogEntry(op="learn", text=r["text"], intent=r["intent"], heldout=True) for r in held]
    rows, from_split = check_rows(learner._base, learner._refitter, [], heldout, share)
    assert rows is not None and from_split
    assert len(rows.truth) == len(split.truth)
    assert np.allclose(rows.weight[-3:], 1 / share) and np.allclose(rows.weight[:-3], 1.0)
    names = list(router.artifact.head_intents)
    assert rows.truth[-3:].tolist() == [names.index(r["intent"]) for r in held]


# -- check() on constructed rows ---------------------------------------------------------------------
def split_rows(state: IndexArtifact) -> Rows:
    split = load_heldout(state)
    assert split is not None
    return Rows(split.vectors, split.static_vectors, split.truth, np.ones(len(split.truth)))


def shifted(head: LinearHead) -> LinearHead:
    """A head that answers each row with the class after the right one: confident and wrong."""
    order = np.roll(np.arange(head.weights.shape[1]), 1)
    return LinearHead(head.weights[:, order].copy(), head.bias[order].copy(), head.reject)


def broken(state: IndexArtifact) -> IndexArtifact:
    static = None if state.static is None else dataclasses.replace(state.static, head=shifted(state.static.head))
    return dataclasses.replace(state, head=shifted(state.head), static=static)


def test_check_refuses_a_worse_state_under_the_target(built: Router) -> None:
    good = built.artifact
    bad = broken(good)
    rows = split_rows(good)
    target = good.manifest.calibration.target_precision
    refused = check(bad, good, rows, True, target, OOS_PRIOR, min_check=5)
    assert refused.figures["learned"]["accepted"] >= 5
    assert not refused.passed and "under the target" in refused.reason
    assert refused.figures["learned"]["precision"] < target <= refused.figures["serving"]["precision"]
    assert refused.figures["from_split"] is True and refused.figures["rows"] == len(rows.truth)
    # Better than what serves (even if under the target): passes. As bad as what serves: passes.
    assert check(good, bad, rows, True, target, OOS_PRIOR, min_check=5).passed
    assert check(bad, bad, rows, True, target, OOS_PRIOR, min_check=5).passed
    # Too few accepted answers to tell: passes as unpowered.
    few = Rows(rows.vectors[:5], rows.static_vectors[:5] if rows.static_vectors is not None else None,
               rows.truth[:5], rows.weight[:5])
    unpowered = check(bad, good, few, False, target, OOS_PRIOR, min_check=5)
    assert unpowered.passed and unpowered.reason.startswith("unpowered")
    assert check(bad, good, None, False, target, OOS_PRIOR, min_check=20).reason.startswith("unchecked")


def test_check_passes_the_built_state(built: Router) -> None:
    good = built.artifact
    result = check(good, good, split_rows(good), True, good.manifest.calibration.target_precision, OOS_PRIOR, 20)
    assert result.passed
    assert result.figures["learned"] == result.figures["serving"]
    assert result.figures["learned"]["precision"] >= good.manifest.calibration.target_precision


def test_a_row_of_weight_two_counts_as_two_rows(built: Router) -> None:
    state = broken(built.artifact)  # some right, most wrong: precision is not 0 or 1
    rows = split_rows(built.artifact)
    half = np.arange(len(rows.truth)) % 2 == 0
    weighted = Rows(rows.vectors, rows.static_vectors, rows.truth, np.where(half, 2.0, 1.0))
    static = rows.static_vectors
    doubled = Rows(np.vstack([rows.vectors, rows.vectors[half]]),
                   None if static is None else np.vstack([static, static[half]]),
                   np.concatenate([rows.truth, rows.truth[half]]), np.ones(len(rows.truth) + int(half.sum())))
    for st in (state, built.artifact):
        a, b = figures(st, weighted, OOS_PRIOR), figures(st, doubled, OOS_PRIOR)
        for key in ("precision", "coverage", "oos_recall"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
