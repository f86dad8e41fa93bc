"""``router build --compact``: the learned-examples log folded into a new version of the index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from router import Router
from router._artifact import LEARNED_FILE, read_manifest
from router.learn._compact import compact, decided_reviews
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry
from router.learn._learner import in_reservoir
from router.learn._log import FileLog

TAUGHT = [
    ("whats my money situation at the bank", "balance"),
    ("wire cash to my brother", "transfer"),
    ("tell me a joke about cats", None),
    ("what is the capital of mongolia", None),
    *[(f"move {n} euros over to my savings", "transfer") for n in ("five", "six", "seven", "eight")],
    *[(f"is it going to be {w} in paris", "weather") for w in ("foggy", "windy", "humid")],
]
SHARE = LearningConfig().reservoir_share  # the index config's (the mini index is built with the default)


def trained(items: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The items a learner trains on: the rest are held out (by a hash of the text)."""
    return [(t, i) for t, i in items if not in_reservoir(t, SHARE)]


def copy_index(src: Path, folder: Path, name: str = "mini") -> Path:
    """A private copy of the session's built index: its generation, and the name linked to it."""
    generation = src.resolve()
    shutil.copytree(generation, folder / generation.name)
    os.symlink(generation.name, folder / name)
    return folder / name


@pytest.fixture
def index(mini_index: Path, tmp_path: Path) -> Path:
    return copy_index(mini_index, tmp_path)


def log_of(index: Path) -> FileLog:
    return FileLog(Path(f"{index}.learned.jsonl"))


def teach(index: Path, items: list[tuple[str, str | None]]) -> None:
    router = Router.load(index)
    try:
        report = router.learn_many(items)
        assert report.swapped, report.reason
    finally:
        router.close()


def decisions(index: Path, items: list[tuple[str, str | None]]) -> list[tuple[str | None, bool, bool]]:
    router = Router.load(index)
    try:
        return [(d.intent, d.accepted, d.out_of_scope) for d in (router.classify(t) for t, _ in items)]
    finally:
        router.close()


def assert_taught(index: Path, items: list[tuple[str, str | None]]) -> None:
    for (text, intent), (got, accepted, oos) in zip(items, decisions(index, items), strict=True):
        if intent is None:
            assert oos, f"{text!r} is out of scope, got {got}"
        else:
            assert accepted and got == intent, f"{text!r} is {intent}, got {got} (accepted={accepted})"


def test_compaction_folds_the_log_into_a_new_version(index: Path) -> None:
    teach(index, TAUGHT)
    before = read_manifest(index.resolve())
    summary = compact("mini", index_dir=index.parent)

    learn = trained(TAUGHT)
    in_scope = [t for t, i in learn if i is not None]
    after = read_manifest(index.resolve())
    assert summary["rewritten"] and summary["version_before"] == before.manifest_sha256[:12]
    assert summary["version_after"] == after.manifest_sha256[:12] != summary["version_before"]
    assert after.n_examples == before.n_examples + len(in_scope) == summary["n_examples_after"]
    assert after.learned is not None
    assert (after.learned.n_learned, after.learned.n_heldout) == (len(learn), len(TAUGHT) - len(learn))
    assert after.learned.n_out_of_scope == sum(i is None for _, i in learn) == summary["n_out_of_scope"]
    assert summary["folded"] == len(TAUGHT) and summary["n_new"] == len(TAUGHT)
    assert summary["log"] == {"backend": "file", "path": str(log_of(index).path)}
    assert log_of(index).read_all() == []  # every entry is in the index now
    held = {LogEntry.model_validate_json(line).text for line in (index / LEARNED_FILE).read_text().splitlines()}
    assert held == {t for t, _ in TAUGHT}  # held-out ones too: they still check precision

    router = Router.load(index)
    try:
        assert len(router.artifact.examples) == after.n_examples  # learned rows are index rows, not added again
        assert router.learning is not None
        stats = router.learning.stats()
        assert (stats["n_folded"], stats["n_learned"], stats["n_unserved"]) == (len(TAUGHT), len(learn), 0)
    finally:
        router.close()
    assert_taught(index, learn)


def test_a_compaction_cut_short_before_its_fold_is_harmless(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teach(index, TAUGHT)

    def killed(self: FileLog, ids: object) -> int:
        raise KeyboardInterrupt("killed between publish and fold")

    with monkeypatch.context() as patch:
        patch.setattr(FileLog, "fold", killed)
        with pytest.raises(KeyboardInterrupt):
            compact(index)
    published = read_manifest(index.resolve())
    assert published.learned is not None and published.learned.n_learned == len(trained(TAUGHT))
    assert len(log_of(index).read_all()) == len(TAUGHT)  # in the index and in the log

    router = Router.load(index)
    try:
        assert len(router.artifact.examples) == published.n_examples  # log entries the index holds: skipped
        assert router.learning is not None and router.learning.stats()["n_folded"] == len(TAUGHT)
    finally:
        router.close()
    unfolded = decisions(index, TAUGHT)
    assert_taught(index, trained(TAUGHT))

    summary = compact(index)  # the next compaction has nothing to write, and folds what was left
    assert not summary["rewritten"] and summary["folded"] == len(TAUGHT)
    assert summary["version_after"] == summary["version_before"] == published.manifest_sha256[:12]
    assert log_of(index).read_all() == []
    assert decisions(index, TAUGHT) == unfolded


def test_nothing_new_writes_nothing_and_later_learning_adds_up(index: Path) -> None:
    empty = compact(index)
    assert not empty["rewritten"] and empty["folded"] == 0 and empty["n_learned"] == 0
    assert empty["version_after"] == empty["version_before"]

    first, second = TAUGHT[:6], TAUGHT[6:]
    teach(index, first)
    one = compact(index)
    again = compact(index)
    assert not again["rewritten"] and again["folded"] == 0 and again["version_after"] == one["version_after"]
    teach(index, second)
    two = compact(index)
    assert two["rewritten"] and two["n_new"] == len(second) and two["version_before"] == one["version_after"]
    assert two["n_learned"] == len(trained(TAUGHT))  # the index's total, not this compaction's
    assert two["n_examples_after"] == empty["n_examples_before"] + sum(i is not None for _, i in trained(TAUGHT))
    assert_taught(index, trained(TAUGHT))


def test_decided_reviews_are_folded_and_pending_ones_stay(index: Path) -> None:
    texts = ["zap me the weather for oslo tomorrow", "is it snowing in bergen", "rain in stavanger today?"]
    assert not any(in_reservoir(t, SHARE) for t in texts[:1])  # the approved one is trained on
    reviews = [LogEntry(op="review", text=t, intent="weather", source="llm", confidence=0.95) for t in texts]
    log_of(index).append(reviews)  # tier-2 answers queued for review (by a served router)
    router = Router.load(index, learning=LearningConfig(mode="review"))
    try:
        assert router.learning is not None
        assert [r.text for r in router.learning.pending_review()] == texts
        router.learning.approve(reviews[0].id, by="alice")
        router.learning.reject(reviews[1].id, by="bob")
    finally:
        router.close()

    summary = compact(index)
    assert summary["rewritten"] and summary["n_pending_review"] == 1
    # the approved item's learn entry, the two decided reviews, the reject
    assert summary["folded"] == 4
    assert [(e.op, e.id) for e in log_of(index).read_all()] == [("review", reviews[2].id)]
    router = Router.load(index, learning=LearningConfig(mode="review"))
    try:
        assert router.learning is not None
        assert [r.id for r in router.learning.pending_review()] == [reviews[2].id]  # decided ones stay decided
        assert router.classify(texts[0]).intent == "weather"
    finally:
        router.close()


def test_decided_reviews() -> None:
    pending, approved = LogEntry(op="review", text="a"), LogEntry(op="review", text="b")
    rejected = LogEntry(op="review", text="c")
    reject = LogEntry(op="reject", review_id=rejected.id)
    learn = LogEntry(op="learn", text="b", intent="x", review_id=approved.id)
    entries = [pending, approved, rejected, reject, learn]
    assert decided_reviews(entries, {pending.id}) == [approved.id, rejected.id, reject.id]


def test_a_log_elsewhere(index: Path, tmp_path: Path) -> None:
    log = tmp_path / "elsewhere" / "learned.jsonl"
    log.parent.mkdir()
    router = Router.load(index, learning=LearningConfig(log=str(log)))
    try:
        router.learn_many(TAUGHT[:3])
    finally:
        router.close()
    assert not compact(index)["rewritten"]  # the index config's log is empty
    summary = compact(index, learn_log=log)
    assert summary["rewritten"] and summary["folded"] == 3 and summary["log"]["path"] == str(log)
    assert FileLog(log).read_all() == []


@pytest.mark.redis
def test_a_log_shared_through_redis(index: Path, redis_server: object) -> None:
    from router.learn._redis_log import RedisLog
    from router.state import StateConfig

    state = StateConfig(url=redis_server.url, prefix="t:")  # type: ignore[attr-defined]
    router = Router.load(index, learn_state=state)
    try:
        router.learn_many(TAUGHT)
    finally:
        router.close()
    summary = compact(index, state=state)
    assert summary["rewritten"] and summary["folded"] == len(TAUGHT) and summary["log"]["backend"] == "redis"
    stream = RedisLog(state, index.name)
    try:
        assert stream.read_all() == []
    finally:
        stream.close()
    assert not Path(f"{index}.learned.jsonl").exists()
    assert_taught(index, trained(TAUGHT))
