"""Two `router serve` replicas learn from one Redis stream (marked ``redis``: needs redis-server).

Feedback sent to replica A is learned by replica B too, in the same order, and a contradicting item sent
to B after A's is refused at B (409) once B has read A's. The rate limit is global: one budget for both.
Run: ``pytest -m redis tests/learn/test_replicas_learn.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import Builder, RouterConfig
from router.learn import LearningConfig
from router.testing import RedisServer, ServeProcess

pytestmark = pytest.mark.redis

KEY_ENV = "ROUTER_TEST_REPLICA_LEARN_KEY"
KEY = "replica-learn-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
TAUGHT = "can you find out if it rains in lisbon on friday"  # the mini index: weather; taught as weather


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    root = tmp_path_factory.mktemp("replica-learn")
    config = mini_config.model_copy(update={"learning": LearningConfig(max_per_minute=5, reservoir_share=0.0)})
    return Builder(config).build(root / "mini").folder


def _learning(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/learning", headers=AUTH, timeout=30).json())


def _wait(url: str, done: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = _learning(url)
        if done(stats):
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)


def test_an_item_taught_to_one_replica_is_learned_by_the_other(index: Path, redis_server: RedisServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    args = ("--index", str(index), "--encoder-threads", "1", "--api-key-env", KEY_ENV, "--state", redis_server.url)
    with ServeProcess(*args) as a, ServeProcess(*args) as b:
        for stats in (_learning(a.url), _learning(b.url)):
            assert stats["log"]["backend"] == "redis"
        answer = httpx.post(f"{a.url}/v1/feedback", json={"text": TAUGHT, "intent": "weather", "source": "human"},
                            headers=AUTH, timeout=30)
        assert answer.status_code == 202, answer.text
        for url in (a.url, b.url):  # B reads A's item from the stream and learns it too
            _wait(url, lambda s: s["n_learned"] == 1 and s["n_unserved"] == 0 and s["n_waiting"] == 0)
            decision = httpx.post(f"{url}/v1/classify", json={"text": TAUGHT}, headers=AUTH, timeout=30).json()
            assert decision["decisions"][0]["intent"] == "weather"
        # B knows A's item now: the contradicting one is refused there, naming both intents.
        refused = httpx.post(f"{b.url}/v1/feedback", json={"text": TAUGHT, "intent": "alarm", "source": "human"},
                             headers=AUTH, timeout=30)
        assert refused.status_code == 409 and "weather" in refused.text and "alarm" in refused.text
        # One rate budget for both (max_per_minute 5 per source): 1 taken on A, 4 more across A and B, then 429.
        texts = [f"what will the weather be in town number {i}" for i in range(5)]
        statuses = [httpx.post(f"{url}/v1/feedback", json={"text": text, "intent": "weather", "source": "human"},
                               headers=AUTH, timeout=30).status_code
                    for url, text in zip((a.url, b.url, a.url, b.url, a.url), texts, strict=True)]
        assert statuses == [202, 202, 202, 202, 429]
