"""Crash safety: a real `router serve` killed with SIGKILL during a feedback burst leaves a log that loads.

A `router serve` process (``--feedback on``, its own ``--learn-log``) takes ``POST /v1/feedback`` from a few
client threads. Once a chosen number of items has been acknowledged (202), one of those threads sends
SIGKILL to the server while the others still have requests in flight (and the learner's worker may be
refitting). A 202 means "durable" (the entry was appended and fsynced first), so after the kill:

- the log loads (``FileLog.read_all`` does not raise: a torn last line is dropped, never fatal);
- every item acknowledged before the kill is in it, with its text and label;
- a Router loaded on the index with that log replays it and classifies the acknowledged trained (not held
  out) items as taught.

Three rounds, each killing at another point of the burst, share one log: each round's server starts on
the log the previous kill left, so a crashed log must also be one that `router serve` starts on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import Builder, Router, RouterConfig
from router._intents import IntentSet
from router.learn import LearningConfig
from router.learn._log import FileLog
from router.testing import ServeProcess

# A real server killed three times: about 25 s, so in `make test-slow` (which .ci/run runs), not `make test`.
pytestmark = pytest.mark.slow

KEY_ENV = "ROUTER_TEST_CRASH_KEY"
KEY = "crash-test-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
THREADS = 4
PER_ROUND = 400  # more than any round acknowledges before its kill: the burst is always in flight
# 202s acknowledged before the kill: at the very first one, mid-burst, and late (a refit is likely running).
KILL_AFTER = (1, 25, 120)


@pytest.fixture(scope="module")
def crash_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    """The mini index built with a rate limit no burst here reaches (the default is 600 a minute)."""
    root = tmp_path_factory.mktemp("crash")
    config = mini_config.model_copy(update={"learning": LearningConfig(max_per_minute=100_000)})
    return Builder(config).build(root / "mini").folder


def feedback_items(index: Path, tag: str) -> list[dict[str, Any]]:
    """PER_ROUND new texts (the index's examples, each made new by a suffix naming the round), with the
    intent of the example they come from."""
    intents = IntentSet.model_validate_json((index.resolve() / "intents.json").read_text())
    pairs = [(text, intent.name) for intent in intents.intents for text in intent.examples]
    return [{"text": f"{pairs[i % len(pairs)][0]} for case {tag}-{i}", "intent": pairs[i % len(pairs)][1]}
            for i in range(PER_ROUND)]


class Burst:
    """THREADS clients posting ``items`` in turn; the one whose 202 makes ``kill_after`` kills the server."""

    def __init__(self, server: ServeProcess, items: list[dict[str, Any]], kill_after: int) -> None:
        assert server.proc is not None
        self.server = server
        self.proc = server.proc
        self.items: Iterator[dict[str, Any]] = iter(items)
        self.kill_after = kill_after
        self.lock = threading.Lock()
        self.killed = threading.Event()
        self.acked: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (item sent, the 202 body)
        self.refused: list[str] = []  # any answer but 202: a failure of the test's premise
        self.errors_before_kill: list[str] = []

    def _next(self) -> dict[str, Any] | None:
        with self.lock:
            return next(self.items, None)

    def _client(self) -> None:
        with httpx.Client(base_url=self.server.url, headers=AUTH, timeout=30) as client:
            while (item := self._next()) is not None:
                try:
                    answer = client.post("/v1/feedback", json=item)
                except httpx.HTTPError as exc:
                    if not self.killed.is_set():
                        with self.lock:
                            self.errors_before_kill.append(repr(exc))
                    return  # the server is gone
                with self.lock:
                    if answer.status_code != 202:
                        self.refused.append(f"{answer.status_code} {answer.text[:200]}")
                        continue
                    # Acknowledged: durable, whenever it arrives (a 202 sent just before the kill counts too).
                    self.acked.append((item, answer.json()))
                    kill = len(self.acked) >= self.kill_after and not self.killed.is_set()
                    if kill:
                        self.killed.set()
                if kill:
                    self.proc.send_signal(signal.SIGKILL)  # the other clients' requests are in flight

    def run(self) -> None:
        threads = [threading.Thread(target=self._client, name=f"feedback-{n}") for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a feedback client hung after the kill"


def test_sigkill_during_a_feedback_burst_leaves_a_log_that_loads_and_replays(
        crash_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    log = tmp_path / "learned.jsonl"
    acked: list[tuple[dict[str, Any], dict[str, Any]]] = []  # every round's, the log is shared
    for round_no, kill_after in enumerate(KILL_AFTER):
        server = ServeProcess("--index", str(crash_index), "--encoder-threads", "1", "--api-key-env", KEY_ENV,
                              "--learn-log", str(log), "--feedback", "on")
        with server:
            burst = Burst(server, feedback_items(crash_index, f"r{round_no}"), kill_after)
            burst.run()
            code = server.proc.wait(30) if server.proc is not None else None
        assert burst.killed.is_set(), f"round {round_no}: the burst ended before {kill_after} items were taken"
        assert code == -signal.SIGKILL, f"round {round_no}: the server exited with {code}, not by SIGKILL"
        assert not burst.refused, f"round {round_no}: answers other than 202 before the kill: {burst.refused[:5]}"
        assert not burst.errors_before_kill, burst.errors_before_kill[:5]
        assert len(burst.acked) >= kill_after
        acked += burst.acked

        # The log loads, and holds every acknowledged item as it was sent.
        entries = {entry.id: entry for entry in FileLog(log).read_all()}
        missing = [body["id"] for _, body in acked if body["id"] not in entries]
        assert not missing, f"round {round_no}: {len(missing)} acknowledged items are not in the log: {missing[:5]}"
        for item, body in acked:
            entry = entries[body["id"]]
            assert (entry.op, entry.text, entry.intent, entry.out_of_scope) == ("learn", item["text"],
                                                                               item["intent"], False)
            assert entry.heldout == (body["status"] == "held_out")

        # A Router loaded on the index replays the log and serves what was taught (a round killed at its first
        # 202 may have acknowledged held-out items only: the load must still replay the log).
        assert all(body["status"] in ("queued", "held_out") for _, body in acked)
        taught = [(item, body) for item, body in acked if body["status"] == "queued"]
        router = Router.load(crash_index, learning=LearningConfig(log=str(log)))
        try:
            learner = router.learning
            assert learner is not None
            unserved = [body["id"] for _, body in taught if not learner.served(body["id"])]
            assert not unserved, (f"round {round_no}: {len(unserved)} of {len(taught)} acknowledged items not "
                                  f"served after the replay: {learner.stats()['last_apply']}")
            decisions = [router.classify(item["text"]) for item, _ in taught]
        finally:
            router.close()
        right = sum(d.accepted and d.intent == item["intent"] for d, (item, _) in zip(decisions, taught, strict=True))
        assert right >= 0.95 * len(taught), f"round {round_no}: {right} of {len(taught)} classified as taught"
    assert sum(body["status"] == "queued" for _, body in acked) >= KILL_AFTER[-1] // 2  # the replay had work
