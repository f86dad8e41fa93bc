"""Stability of the served state under repeated applies: learning moves what it taught, not the rest.

Each apply that refits warm-starts the heads from their current weights, under fixed thresholds. Two
things must hold for a service that applies often (each burst, each restart, each worker):

- An apply with nothing new does not refit: the state served, and every decision, stay exactly as they were.
- A run of refits, each teaching one new item, leaves the decisions on unrelated queries (neither their
  gold intent nor the router's best guess is a taught intent) as they were for at least 95% of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from router import Router
from router._decision import Decision
from router.learn import LearningConfig
from router.learn._learner import in_reservoir
from tests.learn.test_compact import copy_index

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHARE = LearningConfig().reservoir_share  # the mini index is built with the default
TAUGHT_FIRST = [
    ("will i need an umbrella in lisbon on friday", "weather"),
    ("how chilly does it get in oslo tonight", "weather"),
    ("is a heatwave coming to madrid this weekend", "weather"),
    ("wake me at six thirty tomorrow", "alarm"),
]
# Taught one at a time after the first batch: one refit each.
TAUGHT_ONE_BY_ONE = [
    ("set a buzzer for 5 am", "alarm"),
    ("please get me up at quarter past seven", "alarm"),
    ("sound an alarm at noon please", "alarm"),
    ("get me out of bed at dawn tomorrow", "alarm"),
    ("do i need sunscreen in cairo tomorrow", "weather"),
]
TAUGHT_INTENTS = {intent for _, intent in TAUGHT_FIRST + TAUGHT_ONE_BY_ONE}


def val_rows() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (FIXTURES / "mini_val.jsonl").read_text().splitlines() if line.strip()]
    return [(row["text"], row["intent"]) for row in rows]


def outcome(d: Decision) -> tuple[str | None, bool, bool, float]:
    """What a caller sees of a decision: the intent (or best guess), whether it is out of scope, whether it is
    escalated, and the confidence."""
    return d.intent, d.out_of_scope, d.escalate, d.confidence


@pytest.fixture
def router(mini_index: Path, tmp_path: Path) -> Iterator[Router]:
    router = Router.load(copy_index(mini_index, tmp_path), learning=LearningConfig(log=str(tmp_path / "log.jsonl")))
    yield router
    router.close()


def test_applies_with_nothing_new_change_no_decision(router: Router) -> None:
    assert not any(in_reservoir(text, SHARE) for text, _ in TAUGHT_FIRST)  # premise: every item is trained on
    report = router.learn_many(TAUGHT_FIRST)
    assert report.swapped and report.n_learned == len(TAUGHT_FIRST), report
    learner = router.learning
    assert learner is not None
    texts = [text for text, _ in val_rows()]
    served, applies = router.artifact, learner.applies
    before = [outcome(d) for d in router.classify_many(texts)]

    for _ in range(20):
        report = learner.apply()
        assert not report.swapped and report.n_new == 0, report

    assert learner.applies == applies  # nothing new: no refit
    assert router.artifact is served
    after = [outcome(d) for d in router.classify_many(texts)]
    changed = [(t, b, a) for t, b, a in zip(texts, before, after, strict=True) if b != a]
    assert not changed, f"{len(changed)} decisions changed with nothing new learned: {changed[:5]}"


def test_one_item_refits_leave_unrelated_decisions_alone(router: Router) -> None:
    assert not any(in_reservoir(text, SHARE) for text, _ in TAUGHT_FIRST + TAUGHT_ONE_BY_ONE)  # all trained on
    assert router.learn_many(TAUGHT_FIRST).swapped
    learner = router.learning
    assert learner is not None
    rows = val_rows()
    first = router.classify_many([text for text, _ in rows])
    # Unrelated: neither the gold label nor the router's answer or best guess is an intent taught here.
    unrelated = [(text, d) for (text, gold), d in zip(rows, first, strict=True)
                 if gold not in TAUGHT_INTENTS and d.intent not in TAUGHT_INTENTS]
    assert len(unrelated) >= 100  # premise: most of the split (6 of 8 intents, and out of scope)

    applies = learner.applies
    for text, intent in TAUGHT_ONE_BY_ONE:
        result = router.learn(text, intent)
        assert result.status == "learned", result
    assert learner.applies == applies + len(TAUGHT_ONE_BY_ONE)  # one refit each

    after = router.classify_many([text for text, _ in unrelated])
    same = sum(d.intent == a.intent and d.out_of_scope == a.out_of_scope and d.escalate == a.escalate
               for (_, d), a in zip(unrelated, after, strict=True))
    assert same >= 0.95 * len(unrelated), f"{same} of {len(unrelated)} unrelated decisions unchanged after 5 refits"
    # And what was taught is served.
    assert all(d.accepted and d.intent == intent for d, (_, intent)
               in zip(router.classify_many([t for t, _ in TAUGHT_ONE_BY_ONE]), TAUGHT_ONE_BY_ONE, strict=True))
