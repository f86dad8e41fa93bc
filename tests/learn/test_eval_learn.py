"""``router eval --learn-from``: stream a split, feed back the escalated and wrong queries, evaluate again."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from router import EncoderConfig, Router, RouterConfig
from router._evaluation import run_eval
from router._intents import Labelled, read_labelled
from router.errors import ConfigError, LearningError
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry
from router.learn._eval import is_wrong, learn_from, learn_stream
from router.learn._learner import in_reservoir
from router.learn._log import FileLog
from tests.learn.test_compact import copy_index

FIXTURES = Path(__file__).parents[1] / "fixtures"
EVAL_KEYS = {"accuracy_full", "coverage_in_scope", "accepted_precision", "oos_recall", "tier_share",
             "static_accepted_precision", "static_oos_leak", "n_test", "n_test_oos", "latency_p50_us",
             "latency_p99_us", "escalation_rate"}
SHARE = LearningConfig().reservoir_share


@pytest.fixture
def learning_router(mini_index: Path, tmp_path: Path) -> Iterator[Router]:
    router = Router.load(copy_index(mini_index, tmp_path), learning=LearningConfig(log=str(tmp_path / "log.jsonl")))
    yield router
    router.close()


def log_entries(tmp_path: Path) -> list[LogEntry]:
    return FileLog(tmp_path / "log.jsonl").read_all()


def test_learning_from_the_test_stream_lowers_its_escalation(mini_config: RouterConfig, tmp_path: Path) -> None:
    """Taught the very queries it is tested on, the router escalates fewer of them and covers more: the
    protocol feeds back what it should, learns it, and measures before and after on the same split."""
    test = read_labelled(FIXTURES / "mini_test.jsonl")
    report = run_eval(mini_config, test, index_dir=tmp_path, learn_from=test)

    before = report["before"]
    assert set(before) == EVAL_KEYS
    assert EVAL_KEYS | {"before", "n_learned", "learn_seconds", "n_fed_back", "learn_check",
                        "stream_escalation_rate", "encoder", "calibration"} <= set(report)
    assert report["n_fed_back"] > 0 and report["n_fed_back"] == sum(report["feedback"].values())
    assert report["n_learned"] == report["feedback"].get("queued", 0) > 0
    assert report["n_heldout"] == report["feedback"].get("held_out", 0)
    assert report["stream_escalation_rate"] == before["escalation_rate"]  # the stream is the test split, as built
    assert report["learn_check"]["swapped"], report["learn_check"]["reason"]
    assert report["learn_applies"] == 1 and report["learn_seconds"] >= 0
    assert report["escalation_rate"] == report["tier_share"]["escalated"] < before["escalation_rate"]
    assert report["coverage_in_scope"] > before["coverage_in_scope"]
    assert report["accepted_precision"] >= 0.97
    assert list(tmp_path.iterdir()) == []  # the scratch index and its learning log are gone


def test_a_plain_eval_reports_no_learning(mini_intents: Path, tmp_path: Path) -> None:
    config = RouterConfig(name="h", intents=str(mini_intents), encoder=EncoderConfig(backend="hashing"),
                          static={"enabled": False}, vector_index={"kind": "numpy"})
    report = run_eval(config, read_labelled(FIXTURES / "mini_test.jsonl"), index_dir=tmp_path)
    assert "before" not in report and "n_learned" not in report and report["n_test"] == 280
    assert list(tmp_path.iterdir()) == []


def test_what_is_fed_back(learning_router: Router, tmp_path: Path) -> None:
    unseen = "zorp the glimmer to my other account"
    paraphrase = "what is the balance of all of my bank accounts"  # accepted as balance
    assert learning_router.classify(paraphrase).accepted
    assert not learning_router.classify(unseen).accepted
    assert not in_reservoir(unseen, SHARE) and not in_reservoir(paraphrase, SHARE)
    stream = Labelled(
        texts=["what is the balance of my bank accounts",  # a built example of balance: right, not fed back
               "what is the balance of my bank accounts ",  # said to be a transfer: wrong, and a conflict
               unseen, unseen.upper(),  # escalated twice: learned, then a duplicate
               paraphrase],  # out of scope by a label the index does not know: wrong
        labels=["balance", "transfer", "transfer", "transfer", "not_an_intent"])
    test = read_labelled(FIXTURES / "mini_test.jsonl")
    report = learn_from(learning_router, stream, test)

    assert report["feedback"] == {"conflict": 1, "duplicate": 1, "queued": 2}
    assert report["n_fed_back"] == 4 and report["stream_wrong"] == 2 and report["n_learned"] == 2
    assert report["stream_escalation_rate"] == pytest.approx(2 / 5)
    entries = log_entries(tmp_path)
    assert [(e.text, e.intent, e.out_of_scope, e.source) for e in entries] == [
        (unseen, "transfer", False, "human"), (paraphrase, None, True, "human")]
    assert all(e.decision_id for e in entries)  # the Decisions they correct
    assert learning_router.classify(unseen).intent == "transfer"
    assert learning_router.classify(paraphrase).out_of_scope
    assert report["n_test"] == report["before"]["n_test"] == len(test)


def test_learning_goes_in_batches_as_the_stream_goes(learning_router: Router, tmp_path: Path) -> None:
    stream = read_labelled(FIXTURES / "mini_test.jsonl")
    report = learn_from(learning_router, stream, stream, batch=5)
    taken = report["feedback"].get("queued", 0) + report["feedback"].get("held_out", 0)
    assert taken > 5
    assert report["learn_applies"] == math.ceil(taken / 5)
    assert learning_router.learning is not None and learning_router.learning.applies == report["learn_applies"]
    trained = [e for e in log_entries(tmp_path) if not e.heldout]
    right = [learning_router.classify(e.text).intent == e.intent or e.out_of_scope for e in trained]
    assert sum(right) >= 0.9 * len(trained)


def test_wrong() -> None:
    from router._decision import Candidate, Decision

    def decision(intent: str | None, *, escalate: bool = False, oos: bool = False) -> Decision:
        return Decision(intent, oos, 0.9, "embedding", escalate, [Candidate("balance", 0.9)])

    assert is_wrong(decision("balance"), "transfer") and not is_wrong(decision("balance"), "balance")
    assert is_wrong(decision("balance"), "oos")  # an out-of-scope query accepted
    assert is_wrong(decision(None, oos=True), "balance") and not is_wrong(decision(None, oos=True), "oos")
    assert not is_wrong(decision("balance", escalate=True), "transfer")  # escalated: not answered


def test_a_router_that_does_not_learn_is_refused(mini_index: Path, tmp_path: Path) -> None:
    data = Labelled(["hi"], ["greeting"])
    router = Router.load(mini_index, learning="off")
    try:
        with pytest.raises(LearningError, match="learning='off'"):
            learn_from(router, data, data)
    finally:
        router.close()
    router = Router.load(mini_index, learning=LearningConfig(feedback=False, log=str(tmp_path / "log.jsonl")))
    try:
        with pytest.raises(LearningError, match="learning.feedback"):
            learn_from(router, data, data)
    finally:
        router.close()


def test_the_stream_a_flag_names(tmp_path: Path) -> None:
    val = FIXTURES / "mini_val.jsonl"
    assert learn_stream("val", val=str(val)) == read_labelled(val)
    assert learn_stream(str(val)) == read_labelled(val)
    with pytest.raises(ConfigError, match="--learn-from val needs a validation split"):
        learn_stream("val")
