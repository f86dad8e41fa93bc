"""What feedback is taken: conflicts, overrides, unknown intents, protected intents, text limits, rate
limits, the feedback switch and max_learned. A refused item is never logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router import Router
from router._intents import Intent, IntentSet
from router.errors import (
    FeedbackConflict,
    FeedbackNotAllowed,
    FeedbackRateLimited,
    InputError,
    LearningError,
    UnknownIntent,
)
from router.learn import LearningConfig, LogEntry
from router.learn._guard import FeedbackGuard
from tests.learn.conftest import LoadFn, Reused, learner_of, reset

BUILT = "what is the weather like in denver"  # a built example of weather
WRONG = "wassup"  # greeting in the validation split; the built index calls it out of scope
NEW = "could you translate water into dutch for me"  # translate in the validation split, not built


def entries(path: Path) -> list[LogEntry]:
    if not path.exists():
        return []
    return [LogEntry.model_validate_json(line) for line in path.read_text().splitlines()]




@pytest.fixture(scope="module")
def shared(mini_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """A Router the refusing tests share: nothing they send is taken, so nothing changes it."""
    log = tmp_path_factory.mktemp("guard") / "l.jsonl"
    router = Router.load(mini_index, llm="off", learning=LearningConfig(log=str(log), reservoir_share=0.0),
                         protected_intents=("transfer",))
    yield router
    assert not log.exists() or log.read_text() == "", "a refused item was logged"
    router.close()




# -- conflicts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [BUILT, "  What is the WEATHER like in Denver "])
def test_conflict_with_a_built_example_names_both_intents(shared: Router, text: str) -> None:
    with pytest.raises(FeedbackConflict) as caught:
        shared.learn(text, "alarm")
    assert (caught.value.existing, caught.value.requested) == ("weather", "alarm")
    assert "'weather'" in str(caught.value) and "'alarm'" in str(caught.value)
    with pytest.raises(FeedbackConflict, match="'weather'"):
        shared.learn(text, out_of_scope=True)


def test_conflict_with_an_out_of_scope_or_negative_example() -> None:
    intents = IntentSet(intents=(Intent(name="greet", examples=("hello there",), negative_examples=("hello world",)),
                                 Intent(name="bye", examples=("see you",))),
                        oos_examples=("tell me a joke",))
    guard = FeedbackGuard(intents, ["greet", "bye"], max_text_chars=100)
    with pytest.raises(FeedbackConflict) as caught:
        guard.check("Tell me a JOKE", "greet", False, "human", False)
    assert (caught.value.existing, caught.value.requested) == ("oos", "greet")
    assert "out-of-scope example" in str(caught.value) and "'greet'" in str(caught.value)
    with pytest.raises(FeedbackConflict, match="negative example of 'greet'"):
        guard.check("hello world", "greet", False, "human", False)
    assert guard.check("tell me a joke", None, True, "human", False) == "oos"
    assert guard.duplicate("tell me a joke", "oos") and not guard.duplicate("tell me a joke", "greet")
    assert guard.check("Tell me a joke", "bye", False, "human", True) == "bye"  # a person's override


def test_conflict_with_a_learned_example(load: LoadFn, tmp_path: Path) -> None:
    router = load()
    assert router.learn(WRONG, "greeting").status == "learned"
    with pytest.raises(FeedbackConflict) as caught:
        router.learn("WASSUP", "alarm")
    assert (caught.value.existing, caught.value.requested) == ("greeting", "alarm")
    assert "a learned example" in str(caught.value)
    assert router.learn(NEW, out_of_scope=True).status == "learned"
    with pytest.raises(FeedbackConflict, match="'oos'.*'translate'"):
        router.learn(NEW, "translate")
    assert [(e.text, e.label) for e in entries(tmp_path / "l.jsonl")] == [(WRONG, "greeting"), (NEW, "oos")]
    # The conflict holds after a restart too: the log replays into the guard.
    again = load(fresh=True)
    with pytest.raises(FeedbackConflict, match="'greeting'"):
        again.learn(WRONG, "alarm")


def test_human_override_replaces_a_built_example(load: LoadFn, tmp_path: Path) -> None:
    router = load()
    built = router.artifact
    names = list(built.head_intents)
    weather, translate = names.index("weather"), names.index("translate")
    assert router.classify(BUILT).intent == "weather"
    result = router.learn(BUILT, "translate", override=True)
    assert (result.status, result.intent) == ("learned", "translate")
    decision = router.classify(BUILT)
    assert decision.accepted and decision.intent == "translate"
    # The built row is masked: weather has one example fewer, translate one more, the total is the same.
    before, after = built.offsets, router.artifact.offsets
    assert after[weather + 1] - after[weather] == before[weather + 1] - before[weather] - 1
    assert after[translate + 1] - after[translate] == before[translate + 1] - before[translate] + 1
    assert len(router.artifact.examples) == len(built.examples)
    [entry] = entries(tmp_path / "l.jsonl")
    assert (entry.override, entry.source, entry.heldout) == (True, "human", False)
    # Now the learned label is the one a later item conflicts with.
    with pytest.raises(FeedbackConflict) as caught:
        router.learn(BUILT, "weather")
    assert (caught.value.existing, caught.value.requested) == ("translate", "weather")


def test_human_override_replaces_a_learned_example(load: LoadFn) -> None:
    router = load()
    router.learn(WRONG, "greeting")
    assert router.learn(WRONG, "alarm", override=True).status == "learned"
    assert router.classify(WRONG).intent == "alarm"
    assert learner_of(router).stats()["n_learned"] == 1  # the override supersedes the first


def test_override_is_for_people_only(shared: Router) -> None:
    with pytest.raises(InputError, match="override=true is for source='human'"):
        shared.learn(BUILT, "translate", source="llm", override=True)


# -- intents ------------------------------------------------------------------------------------------
def test_unknown_intent_is_named(shared: Router) -> None:
    with pytest.raises(UnknownIntent, match="'no_such_intent'") as caught:
        shared.learn(NEW, "no_such_intent")
    assert isinstance(caught.value, InputError) and isinstance(caught.value, LearningError)
    assert "balance" in str(caught.value)  # and names some that exist


def test_intent_without_examples_is_refused() -> None:
    intents = IntentSet(intents=(Intent(name="greet", examples=("hello there",)),
                                 Intent(name="ruled", keywords=("refund",))))
    guard = FeedbackGuard(intents, ["greet"], max_text_chars=100)
    with pytest.raises(UnknownIntent, match="'ruled' has no examples"):
        guard.check("i want a refund", "ruled", False, "human", False)
    assert guard.check("hi there", "greet", False, "human", False) == "greet"


def test_protected_intent_learns_from_people_only(shared: Router, load: LoadFn) -> None:
    text = "wire forty dollars to my other account"
    with pytest.raises(FeedbackNotAllowed, match="'transfer'.*source='human'"):
        shared.learn(text, "transfer", source="llm")
    router = load(protected=("transfer",))
    assert router.learn(text, "transfer", source="human").status == "learned"
    assert router.learn(NEW, "translate", source="llm").source == "llm"  # others learn from an llm


# -- the text -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, match", [("", "text is empty"), ("   \n", "text is empty"),
                                         ("x" * 2049, "text has 2049 characters")])
def test_text_obeys_the_classify_limits(shared: Router, text: str, match: str) -> None:
    assert shared.limits.max_text_chars < 2049
    with pytest.raises(InputError, match=match):
        shared.learn(text, "greeting")


def test_exactly_one_of_intent_or_out_of_scope(shared: Router) -> None:
    with pytest.raises(InputError, match="exactly one of intent"):
        shared.learn(NEW)
    with pytest.raises(InputError, match="exactly one of intent"):
        shared.learn(NEW, "translate", out_of_scope=True)
    with pytest.raises(InputError, match="source='robot'"):
        shared.learn(NEW, "translate", source="robot")


# -- limits and switches ------------------------------------------------------------------------------
def test_rate_limit_is_per_source(load: LoadFn, tmp_path: Path) -> None:
    router = load(max_per_minute=2)
    learner = learner_of(router)
    learner.submit("first thing to learn about flights", "book_flight")
    learner.submit("second thing to learn about flights", "book_flight")
    with pytest.raises(FeedbackRateLimited) as caught:
        learner.submit("third thing to learn about flights", "book_flight")
    assert caught.value.retry_after > 0 and caught.value.source == "human"
    assert "max_per_minute=2" in str(caught.value) and "'human'" in str(caught.value)
    # The other source has its own budget.
    learner.submit("third thing to learn about flights", "book_flight", source="llm")
    learner.submit("fourth thing to learn about flights", "book_flight", source="llm")
    with pytest.raises(FeedbackRateLimited, match="'llm'"):
        learner.submit("fifth thing to learn about flights", "book_flight", source="llm")
    assert [e.source for e in entries(tmp_path / "l.jsonl")] == ["human", "human", "llm", "llm"]


def test_feedback_off_is_refused(load: LoadFn, reused: Reused, tmp_path: Path) -> None:
    router = load(feedback=False)
    with pytest.raises(FeedbackNotAllowed, match="feedback is off"):
        router.learn(NEW, "translate")
    assert entries(tmp_path / "l.jsonl") == []
    reset(reused)  # a Router without a Learner, as Router.load(..., learning="off") gives
    assert reused.router.learning is None
    with pytest.raises(FeedbackNotAllowed, match="learning is off"):
        reused.router.learn(NEW, "translate")


def test_max_learned(load: LoadFn, tmp_path: Path) -> None:
    router = load(max_learned=2)
    router.learn(NEW, "translate")
    router.learn(WRONG, "greeting")
    with pytest.raises(FeedbackNotAllowed, match="max_learned=2"):
        router.learn("is it going to be sunny in paris", "weather")
    assert len(entries(tmp_path / "l.jsonl")) == 2


def test_max_learned_holds_within_a_burst(load: LoadFn, tmp_path: Path) -> None:
    """Items submitted faster than they are applied (the service's burst) count toward max_learned too."""
    router = load(max_learned=2)
    learner = learner_of(router)
    learner.submit(NEW, "translate")
    learner.submit(WRONG, "greeting")
    with pytest.raises(FeedbackNotAllowed, match="max_learned=2"):
        learner.submit("is it going to be sunny in paris", "weather")
    assert len(entries(tmp_path / "l.jsonl")) == 2


def test_learn_many_takes_none_when_one_is_refused(load: LoadFn, tmp_path: Path) -> None:
    router = load()
    with pytest.raises(UnknownIntent):
        router.learn_many([(NEW, "translate"), (WRONG, "nope")])
    with pytest.raises(FeedbackConflict):
        router.learn_many([(NEW, "translate"), (BUILT, "alarm")])
    assert entries(tmp_path / "l.jsonl") == []


def test_learn_many_takes_none_when_two_items_contradict(load: LoadFn, tmp_path: Path) -> None:
    """The docstring's promise: every item is checked before any is logged. Two items of the batch that
    contradict each other are such a check too."""
    router = load()
    with pytest.raises(FeedbackConflict):
        router.learn_many([(NEW, "translate"), (NEW.upper(), "weather")])
    assert entries(tmp_path / "l.jsonl") == []
