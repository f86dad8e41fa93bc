"""The Learner through the Router: feedback is learned, kept, replayed, reviewed, and swapped in atomically.

Every test that teaches loads a Router of its own on the session's mini index, with its own log in
``tmp_path``; the read-only tests share one. Texts are chosen from the validation split by what the
built index does with them (escalated, wrong, accepted), and each test checks that premise first.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router._decision import TIER_LLM, Candidate, Decision
from router.errors import ReviewError
from router.learn import LogEntry
from router.learn._learner import Learner, in_reservoir
from router.learn._log import FileLog
from tests.learn.conftest import LoadFn, learner_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

ESCALATED = "how do i ask about the weather in chinese"  # translate; the built index escalates it (weather?)
WRONG = "wassup"  # greeting; the built index calls it out of scope
BUSY = "am kind of busy now"  # out of scope; the built index escalates it (greeting?)
BUSY_PARAPHRASE = "i am kind of busy right now"
HELD = "when will the clothes i ordered online arrive"  # order_status; in the 20% reservoir


def val_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in (FIXTURES / "mini_val.jsonl").read_text().splitlines() if line.strip()]


def log_lines(path: Path) -> list[LogEntry]:
    """The log file's entries, one a line (each line must be a whole entry)."""
    if not path.exists():
        return []
    return [LogEntry.model_validate_json(line) for line in path.read_text().splitlines()]




@pytest.fixture(scope="module")
def fixed(mini_index: Path) -> Iterator[Router]:
    """A Router nobody teaches (learning off): what the built index answers."""
    router = Router.load(mini_index, llm="off", learning="off")
    yield router
    router.close()




# -- Router.learn ------------------------------------------------------------------------------------
def test_learn_teaches_an_escalated_and_a_wrong_text(load: LoadFn, fixed: Router) -> None:
    assert fixed.classify(ESCALATED).escalate and fixed.classify(ESCALATED).intent != "translate"
    assert fixed.classify(WRONG).out_of_scope
    router = load()
    asked = router.classify(ESCALATED)
    result = router.learn(ESCALATED, "translate", decision_id=asked.id)
    assert (result.status, result.intent, result.out_of_scope, result.source) == ("learned", "translate", False,
                                                                                   "human")
    assert result.id and result.decision_id == asked.id
    assert router.learn(WRONG, "greeting").status == "learned"

    for decision, intent in ((router.classify(ESCALATED), "translate"), (router.classify(WRONG), "greeting")):
        assert decision.accepted and decision.intent == intent
    assert [(d.intent, d.accepted) for d in router.classify_many([ESCALATED, WRONG])] == [("translate", True),
                                                                                          ("greeting", True)]
    decision = asyncio.run(router.aclassify(ESCALATED))
    assert decision.accepted and decision.intent == "translate"

    stats = learner_of(router).stats()
    assert (stats["n_learned"], stats["n_unserved"], stats["refused"]) == (2, 0, 0)
    assert learner_of(router).last_apply is not None and learner_of(router).last_apply.swapped
    entries = log_lines(Path(stats["log"]["path"]))
    assert [(e.text, e.intent) for e in entries] == [(ESCALATED, "translate"), (WRONG, "greeting")]
    assert entries[0].decision_id == asked.id


def test_learn_out_of_scope_covers_the_text_and_a_paraphrase_only(load: LoadFn, fixed: Router) -> None:
    in_scope = [r["text"] for r in val_rows() if r["intent"] != "oos"]
    before = fixed.classify_many(in_scope)
    assert not fixed.classify(BUSY).out_of_scope and not fixed.classify(BUSY_PARAPHRASE).out_of_scope

    router = load()
    result = router.learn(BUSY, out_of_scope=True)
    assert (result.status, result.intent, result.out_of_scope) == ("learned", None, True)
    for text in (BUSY, BUSY_PARAPHRASE):
        decision = router.classify(text)
        assert decision.out_of_scope and decision.intent is None, text
    assert learner_of(router).stats()["n_out_of_scope"] == 1
    after = router.classify_many(in_scope)
    # Every in-scope text the built index answered keeps its intent, and none becomes out of scope.
    kept = [(t, b.intent, a.intent, a.out_of_scope) for t, b, a in zip(in_scope, before, after, strict=True)
            if b.accepted and (a.intent != b.intent or a.out_of_scope)]
    assert kept == []


def test_held_out_item_is_logged_not_trained(load: LoadFn, tmp_path: Path) -> None:
    share = 0.2
    assert in_reservoir(HELD, share) and not in_reservoir(ESCALATED, share)
    both = load(log=tmp_path / "both.jsonl", reservoir_share=share)
    report = both.learn_many([(ESCALATED, "translate"), (HELD, "order_status")])
    assert (report.n_learned, report.n_heldout, report.swapped) == (1, 1, True)
    entries = log_lines(tmp_path / "both.jsonl")
    assert [(e.text, e.heldout) for e in entries] == [(ESCALATED, False), (HELD, True)]

    alone = load(log=tmp_path / "alone.jsonl", reservoir_share=share, fresh=True)
    alone.learn_many([(ESCALATED, "translate")])
    # The held-out item moved nothing: the same refit, so the same answer to it, to the last digit.
    held_both, held_alone = both.classify(HELD), alone.classify(HELD)
    assert (held_both.intent, held_both.escalate) == (held_alone.intent, held_alone.escalate)
    assert held_both.confidence == pytest.approx(held_alone.confidence, abs=1e-6)
    assert len(both.artifact.examples) == len(alone.artifact.examples)


def test_learn_reports_held_out_without_learning(load: LoadFn, fixed: Router) -> None:
    router = load(reservoir_share=0.2)
    served = router.artifact
    result = router.learn(HELD, "order_status")
    assert result.status == "held_out" and result.id
    assert router.artifact is served  # nothing to learn: the state is the one it served
    assert router.classify(HELD).confidence == fixed.classify(HELD).confidence
    [entry] = log_lines(Path(learner_of(router).log.describe()["path"]))
    assert (entry.text, entry.intent, entry.heldout) == (HELD, "order_status", True)


def test_a_held_out_item_alone_changes_no_decision(load: LoadFn, fixed: Router) -> None:
    """An apply with nothing new to train on (only a held-out item arrived, as the service's worker does
    it) must not change what the router answers."""
    router = load(reservoir_share=0.2)
    texts = [r["text"] for r in val_rows()]
    before = [(d.intent, d.accepted, d.out_of_scope) for d in fixed.classify_many(texts)]
    assert router.learn(HELD, "order_status").status == "held_out"
    report = learner_of(router).apply()
    assert (report.n_learned, report.n_heldout) == (0, 1)
    after = [(d.intent, d.accepted, d.out_of_scope) for d in router.classify_many(texts)]
    changed = [(t, b, a) for t, b, a in zip(texts, before, after, strict=True) if a != b]
    assert changed == []


def test_duplicates_are_not_logged(load: LoadFn) -> None:
    router = load()
    built = router.learn("what is the weather like in denver", "weather")  # a built example, same intent
    assert (built.status, built.id, built.intent) == ("duplicate", "", "weather")
    path = Path(learner_of(router).log.describe()["path"])
    assert log_lines(path) == []
    assert router.learn(ESCALATED, "translate").status == "learned"
    again = router.learn("  How do I ask about the WEATHER in chinese ", "translate")  # case and spacing
    assert again.status == "duplicate"
    assert len(log_lines(path)) == 1


# -- persistence -------------------------------------------------------------------------------------
def test_a_new_router_replays_the_log(load: LoadFn, tmp_path: Path) -> None:
    path = tmp_path / "kept.jsonl"
    first = load(log=path)
    first.learn(ESCALATED, "translate")
    first.learn(WRONG, "greeting")
    first.learn(BUSY, out_of_scope=True)
    entries = log_lines(path)
    assert [(e.op, e.text) for e in entries] == [("learn", ESCALATED), ("learn", WRONG), ("learn", BUSY)]
    assert len({e.id for e in entries}) == 3

    second = load(log=path, fresh=True)  # a restart
    assert [(d.intent, d.accepted) for d in second.classify_many([ESCALATED, WRONG])] == [("translate", True),
                                                                                           ("greeting", True)]
    assert second.classify(BUSY).out_of_scope
    stats = learner_of(second).stats()
    assert (stats["n_learned"], stats["n_out_of_scope"], stats["n_unserved"]) == (3, 1, 0)
    assert len(log_lines(path)) == 3  # replaying appends nothing


def test_an_entry_another_writer_logged_is_learned_by_apply(load: LoadFn, tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    router = load(log=path)
    assert router.classify(WRONG).out_of_scope
    other = FileLog(path)  # as another worker process appends to the same file
    try:
        other.append([LogEntry(op="learn", text=WRONG, intent="greeting")])
    finally:
        other.close()
    report = learner_of(router).apply()
    assert (report.n_new, report.n_learned, report.swapped) == (1, 1, True)
    decision = router.classify(WRONG)
    assert decision.accepted and decision.intent == "greeting"
    assert learner_of(router).apply().reason == "nothing new to learn"


# -- tier 2's answers: review and auto ----------------------------------------------------------------
def llm_decision(intent: str | None, confidence: float = 0.95, id: str = "d-1") -> Decision:
    return Decision(intent=intent, out_of_scope=intent is None, confidence=confidence, tier=TIER_LLM,
                    escalate=False, candidates=[] if intent is None else [Candidate(intent, confidence)], id=id)


def settle(learner: Learner) -> None:
    """Until the worker has logged and learned every offer. ``wait_applied`` alone may return while an offer
    is between the queue and the log (test_wait_applied_waits_for_an_offer_being_logged); an ``apply`` of
    our own runs after the worker's, under the same lock, and flushes what is left."""
    learner.wait_applied(timeout=60)
    learner.apply()


def test_review_queues_then_approve_learns_as_human(load: LoadFn, tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    router = load(log=path, mode="review", apply_delay_s=0.05)
    learner = learner_of(router)
    learner.offer(ESCALATED, llm_decision("translate", 0.95, "d-1"))
    settle(learner)
    [item] = learner.pending_review()
    assert (item.text, item.intent, item.out_of_scope, item.confidence, item.decision_id) == (
        ESCALATED, "translate", False, 0.95, "d-1")
    assert router.classify(ESCALATED).escalate  # queued for a person: not learned yet

    result = learner.approve(item.id, by="ann")
    assert (result.status, result.source, result.intent) == ("queued", "human", "translate")
    settle(learner)
    decision = router.classify(ESCALATED)
    assert decision.accepted and decision.intent == "translate"
    assert learner.pending_review() == []
    with pytest.raises(ReviewError, match=item.id):
        learner.approve(item.id)
    learned = [e for e in log_lines(path) if e.op == "learn"]
    assert [(e.source, e.review_id, e.by, e.decision_id) for e in learned] == [
        ("human", item.id, "ann", "d-1")]


def test_review_reject_drops_the_item(load: LoadFn, tmp_path: Path) -> None:
    path = tmp_path / "reject.jsonl"
    router = load(log=path, mode="review", apply_delay_s=0.05)
    learner = learner_of(router)
    learner.offer(WRONG, llm_decision("greeting", 0.97, "d-2"))
    learner.offer(ESCALATED, llm_decision("translate", 0.97, "d-3"))
    settle(learner)
    items = {i.text: i for i in learner.pending_review()}
    assert set(items) == {WRONG, ESCALATED}
    rejected = learner.reject(items[WRONG].id, by="bob")
    assert (rejected.id, rejected.text) == (items[WRONG].id, WRONG)
    assert [i.text for i in learner.pending_review()] == [ESCALATED]
    for decide in (learner.approve, learner.reject):
        with pytest.raises(ReviewError):
            decide(items[WRONG].id)
    assert router.classify(WRONG).out_of_scope  # never learned
    ops = [(e.op, e.review_id) for e in log_lines(path)]
    assert ("reject", items[WRONG].id) in ops

    # A new Router replays the queue: the rejected item stays gone, the other still waits.
    again = load(log=path, mode="review", fresh=True)
    assert [i.id for i in learner_of(again).pending_review()] == [items[ESCALATED].id]


def test_auto_learns_confident_answers_as_llm(load: LoadFn, tmp_path: Path) -> None:
    path = tmp_path / "auto.jsonl"
    router = load(log=path, mode="auto", apply_delay_s=0.05, min_llm_confidence=0.9, protected=("transfer",))
    learner = learner_of(router)
    learner.offer(WRONG, llm_decision("greeting", 0.5, "d-low"))  # below min_llm_confidence: ignored
    learner.offer("move my money to the other account please", llm_decision("transfer", 0.99, "d-w"))  # writes
    learner.offer(ESCALATED, llm_decision("translate", 0.95, "d-ok"))
    settle(learner)
    decision = router.classify(ESCALATED)
    assert decision.accepted and decision.intent == "translate"
    assert router.classify(WRONG).out_of_scope
    entries = log_lines(path)
    assert [(e.text, e.source, e.decision_id, e.confidence) for e in entries] == [
        (ESCALATED, "llm", "d-ok", 0.95)]
    stats = learner.stats()
    assert (stats["dropped_offers"], stats["n_learned"], stats["n_pending_review"]) == (1, 1, 0)


def test_offers_are_ignored_when_mode_is_off_or_not_tier_two(load: LoadFn, tmp_path: Path) -> None:
    off = learner_of(load(log=tmp_path / "off.jsonl", mode="off"))
    off.offer(ESCALATED, llm_decision("translate", 0.99))
    assert off.pending_review() == [] and off.wait_applied(timeout=60) is not None
    assert not (tmp_path / "off.jsonl").exists()
    auto = load(log=tmp_path / "auto.jsonl", mode="auto", apply_delay_s=0.05)
    tier1 = llm_decision("translate", 0.99)
    tier1.tier = "embedding"
    learner_of(auto).offer(ESCALATED, tier1)
    learner_of(auto).offer(WRONG, llm_decision(None, 0.99))  # an out-of-scope answer is learned as such
    settle(learner_of(auto))
    assert [(e.text, e.out_of_scope) for e in log_lines(tmp_path / "auto.jsonl")] == [(WRONG, True)]


def test_wait_applied_waits_for_an_offer_being_logged(load: LoadFn, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait_applied`` returns once every offer is logged and learned, however long the log takes to
    write it (a slow fsync): the offer must not fall between "taken off the queue" and "logged"."""
    router = load(log=tmp_path / "slow.jsonl", mode="review", apply_delay_s=0.0)
    learner = learner_of(router)
    append = learner.log.append
    appending = threading.Event()

    def slow_append(entries: Any) -> None:
        appending.set()
        threading.Event().wait(1.5)  # the fsync of a busy disk
        append(entries)

    monkeypatch.setattr(learner.log, "append", slow_append)
    learner.offer(ESCALATED, llm_decision("translate", 0.95))
    assert appending.wait(30)
    learner.wait_applied(timeout=60)
    assert [i.text for i in learner.pending_review()] == [ESCALATED]


def test_wait_applied_returns_a_report_when_nothing_was_refitted(load: LoadFn) -> None:
    """None means the timeout passed; an offer that was only queued for review is still applied."""
    router = load(mode="review", apply_delay_s=0.05)
    learner = learner_of(router)
    learner.offer(ESCALATED, llm_decision("translate", 0.95))
    report = learner.wait_applied(timeout=60)
    assert [i.text for i in learner.pending_review()] == [ESCALATED]
    assert report is not None and not report.swapped


# -- swaps are atomic --------------------------------------------------------------------------------
def test_classify_from_threads_while_learning(load: LoadFn) -> None:
    router = load()
    names = set(router.artifact.head_intents)
    rows = [r for r in val_rows() if r["intent"] != "oos"]
    probes = [r["text"] for r in rows[::5]] + [ESCALATED, WRONG, BUSY]
    decisions: list[Decision] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Barrier(5)

    def classify() -> None:
        try:
            started.wait(timeout=60)
            while not stop.is_set():
                for text in probes:
                    decisions.append(router.classify(text))
                decisions.extend(router.classify_many(probes))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=classify) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        started.wait(timeout=60)
        first = router.learn_many([(r["text"], r["intent"]) for r in rows[1:40:4]])
        second = router.learn_many([(ESCALATED, "translate"), (WRONG, "greeting"), (BUSY, None)])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert first.swapped and second.swapped and learner_of(router).applies == 2
    assert len(decisions) >= len(probes) * 4
    for d in decisions:
        assert (d.intent in names and not d.out_of_scope) or (d.out_of_scope and d.intent is None), d
    ids = [d.id for d in decisions]
    assert all(ids) and len(set(ids)) == len(ids)
    assert router.classify(ESCALATED).intent == "translate"


# -- Decision ids ------------------------------------------------------------------------------------
def test_decision_ids_are_unique_and_round_trip(fixed: Router) -> None:
    texts = [r["text"] for r in val_rows()[:30]]
    decisions = [*fixed.classify_many(texts), fixed.classify(texts[0]), fixed.classify(texts[0]),
                 asyncio.run(fixed.aclassify(texts[1])), *asyncio.run(fixed.aclassify_many(texts[:5]))]
    ids = [d.id for d in decisions]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)
    for d in decisions:
        data = d.to_dict()
        assert data["id"] == d.id
        back = Decision.from_dict(json.loads(json.dumps(data)))
        assert back.id == d.id and back == d


def test_decision_ids_differ_across_processes() -> None:
    code = "from router._decision import next_decision_id as n; print(n(), n())"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    ids = [i for run in runs for i in run]
    assert len(ids) == 4 and len(set(ids)) == 4
