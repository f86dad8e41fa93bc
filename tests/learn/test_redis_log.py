"""The learned-examples log in a real redis-server (``-m redis``): shared by replicas, rate-limited globally,
failing with StateUnavailable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.errors import LearnLogError, StateUnavailable
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry
from router.learn._log import build_log
from router.learn._redis_log import RedisLog
from router.state import StateConfig
from router.testing import RedisServer

pytestmark = pytest.mark.redis


def entry(text: str, intent: str | None = "greet", **fields: object) -> LogEntry:
    return LogEntry.model_validate({"op": "learn", "text": text, "intent": intent, **fields})


def texts(entries: list[LogEntry]) -> list[str]:
    return [e.text for e in entries]


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[tuple[RedisLog, RedisLog]]:
    """Two replicas' logs of the index ``default``, as build_log makes them."""
    state = StateConfig(url=redis_server.url, prefix="t:")
    made = [build_log(LearningConfig(), Path("indexes/default"), state) for _ in range(2)]
    assert all(isinstance(log, RedisLog) for log in made)
    first, second = made
    assert isinstance(first, RedisLog) and isinstance(second, RedisLog)
    yield first, second
    first.close()
    second.close()


def test_every_field_round_trips(replicas: tuple[RedisLog, RedisLog]) -> None:
    a, b = replicas
    full = LogEntry(op="review", id="abc123", at=1712345678.25, text="  Book a Flight ", intent="book_flight",
                    source="llm", heldout=True, override=True, decision_id="d-1", confidence=0.93, review_id="r-9",
                    by="alice")
    oos = LogEntry(op="learn", text="mars weather", intent=None, out_of_scope=True)
    a.append([full, oos, LogEntry(op="reject", review_id="r-9")])
    assert b.read_all()[:2] == [full, oos]


def test_replicas_share_one_log_in_order(replicas: tuple[RedisLog, RedisLog]) -> None:
    a, b = replicas
    assert a.read_all() == [] and b.read_new() == []
    a.append([entry("a1"), entry("a2")])
    b.append([entry("b1")])
    a.append([])
    assert texts(b.read_new()) == ["a1", "a2", "b1"]  # its own appends too
    assert texts(a.read_new()) == ["a1", "a2", "b1"]
    assert a.read_new() == b.read_new() == []
    b.append([entry("b2")])
    assert texts(a.read_new()) == ["b2"]
    assert texts(a.read_all()) == ["a1", "a2", "b1", "b2"]
    assert a.read_new() == []
    assert a.describe() == {"backend": "redis", "url": a.url, "key": "t:learn:default", "entries": 4,
                            "rate_limit": "all replicas"}


def test_read_all_pages_through_a_long_stream(replicas: tuple[RedisLog, RedisLog]) -> None:
    a, b = replicas
    a.append([entry(str(i)) for i in range(2500)])
    assert texts(b.read_all()) == [str(i) for i in range(2500)]
    a.append([entry("last")])
    assert texts(b.read_new()) == ["last"]


def test_admit_is_global_across_replicas(replicas: tuple[RedisLog, RedisLog]) -> None:
    a, b = replicas
    day = 86_400.0  # one window for the whole test: no window boundary falls inside it
    assert [a.admit("human", 3, day), b.admit("human", 3, day), a.admit("human", 3, day)] == [0.0, 0.0, 0.0]
    wait = b.admit("human", 3, day)
    assert 0 < wait <= day  # until the next window
    assert a.admit("human", 3, day) > 0  # a refusal counts nothing, on any replica
    assert b.admit("llm", 3, day) == 0.0  # sources are independent
    other = RedisLog(StateConfig(url=a.config.url, prefix="t:"), "other")
    try:
        assert other.admit("human", 3, day) == 0.0  # so are indexes
    finally:
        other.close()


def test_fold_removes_exactly_those_ids(replicas: tuple[RedisLog, RedisLog]) -> None:
    a, b = replicas
    made = [entry(str(i)) for i in range(6)]
    a.append(made[:4])
    assert texts(b.read_all()) == ["0", "1", "2", "3"]
    a.append(made[4:])
    assert a.fold({made[1].id, made[5].id, "not-there"}) == 2
    assert a.fold([]) == 0
    b.append([entry("6")])
    assert texts(b.read_new()) == ["4", "6"]  # the tail goes on past a fold
    assert texts(a.read_all()) == ["0", "2", "3", "4", "6"]


@pytest.mark.parametrize(("fields", "says"), [
    ({"e": '{"op":"bogus"}'}, "not a valid log entry: op: Input should be"),
    ({"e": '{"op":"learn","text":"b","intent":"greet","format":2}'},
     "not a valid log entry: format: Extra inputs are not permitted"),
    ({"e": "not json"}, "not JSON"),
    ({"entry": "{}"}, "no field 'e'"),
], ids=["bad-op", "unknown-field", "not-json", "no-field-e"])
def test_a_bad_stream_entry_names_key_and_id_and_is_never_deleted(
        replicas: tuple[RedisLog, RedisLog], redis_server: RedisServer, fields: dict[str, str], says: str) -> None:
    a, b = replicas
    a.append([entry("a")])
    assert texts(b.read_all()) == ["a"]  # a tailing reader too
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        # The last entry, as a newer replica would append it.
        stream_id = str(client.xadd("t:learn:default", {k: v for k, v in fields.items()}))
        before = client.xrange("t:learn:default")
        for call in (a.read_all, a.read_new, b.read_new, lambda: a.fold({"anything"})):
            with pytest.raises(LearnLogError, match=re.escape(f"t:learn:default:{stream_id}: ")) as caught:
                call()
            assert says in str(caught.value)
            if "JSON" not in says:
                assert "newer version of tiered-router" in str(caught.value)
            assert client.xrange("t:learn:default") == before  # never deleted
    finally:
        client.close()


def test_a_stopped_redis_is_state_unavailable(replicas: tuple[RedisLog, RedisLog],
                                              redis_server: RedisServer) -> None:
    a, b = replicas
    a.append([entry("a")])
    redis_server.kill()
    for call in (lambda: a.append([entry("b")]), b.read_all, a.read_new, lambda: b.admit("human", 3),
                 lambda: a.fold({"x"})):
        with pytest.raises(StateUnavailable, match="redis") as caught:
            call()
        assert caught.value.backend == "redis"
        assert redis_server.url.split("//")[1] in caught.value.detail
    redis_server.start()  # the same data (appendonly): the log is back
    assert texts(b.read_all()) == ["a"]


def test_the_password_comes_from_the_environment_and_is_never_shown(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.config_set("requirepass", "s3cret-learn")
    client.close()
    monkeypatch.setenv("LEARN_TEST_REDIS_PASSWORD", "s3cret-learn")
    state = StateConfig(url=redis_server.url)
    without = RedisLog(state, "default")
    with_env = RedisLog(state.model_copy(update={"password_env": "LEARN_TEST_REDIS_PASSWORD"}), "default")
    try:
        with pytest.raises(StateUnavailable, match="redis"):
            without.read_all()
        with_env.append([entry("a")])
        assert texts(with_env.read_all()) == ["a"]
        monkeypatch.setenv("LEARN_TEST_REDIS_PASSWORD", "wrong-one")
        wrong = RedisLog(with_env.config, "default")
        with pytest.raises(StateUnavailable) as caught:
            wrong.read_all()
        wrong.close()
        assert "s3cret-learn" not in str(caught.value) + str(with_env.describe())
    finally:
        without.close()
        with_env.close()
