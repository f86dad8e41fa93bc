"""Learning live under wrk load (marked ``tools``: needs wrk, Debian package ``wrk``).

A real `router serve` process takes ``wrk -t2 -c8`` on /v1/classify. wrk runs twice: once alone, for
the baseline, and once while 1,000 feedback items arrive over HTTP (``POST /v1/feedback``, four
client threads). The learner refits in its background thread and swaps each learned state in. The
test waits for ``GET /v1/learning`` to show every item learned or held out, with nothing unserved or
waiting. It reports how long after the last 202 that took (the issue asks for 60 s at most), then
stops wrk. wrk's own summary must show no failed request. Both p99s are printed (``-s``) and not
asserted: a latency figure is a measurement on a shared machine, not a unit test's business.

``ROUTER_LEARN_LOAD_INDEX=/path/to/index`` measures on another index instead of the mini one (for
CLINC150's 15,000 examples, build it with ``learning: {max_per_minute: 100000}``: 1,000 items in a
few seconds is over the default rate limit). Run:
``pytest -m tools -s tests/learn/test_learn_load.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import Builder, RouterConfig
from router._intents import IntentSet
from router.learn import LearningConfig
from router.testing import ServeProcess

pytestmark = pytest.mark.tools

KEY_ENV = "ROUTER_TEST_LEARN_KEY"
KEY = "learn-load-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
ITEMS = 1000
CONNECTIONS = 8
SCRIPT = """
local bodies = {BODIES}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f}\\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


@pytest.fixture(scope="module")
def load_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    chosen = os.environ.get("ROUTER_LEARN_LOAD_INDEX")
    if chosen:
        return Path(chosen)
    root = tmp_path_factory.mktemp("learn-load")
    config = mini_config.model_copy(update={"learning": LearningConfig(max_per_minute=100_000)})
    return Builder(config).build(root / "mini").folder


def _items(index: Path) -> list[dict[str, Any]]:
    """ITEMS feedback items: the index's examples, each made a new text by a suffix, with its intent."""
    intents = IntentSet.model_validate_json((index.resolve() / "intents.json").read_text())
    pairs = [(text, intent.name) for intent in intents.intents for text in intent.examples]
    return [{"text": f"{pairs[i % len(pairs)][0]} for case {i}", "intent": pairs[i % len(pairs)][1]}
            for i in range(ITEMS)]


def _wrk(command: list[str], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*command, f"{url}/v1/classify"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _result(process: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    process.send_signal(signal.SIGINT)  # wrk stops and prints its summary
    out, _ = process.communicate(timeout=60)
    found = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    assert found is not None, out
    result = json.loads(found.group(1))
    assert "Non-2xx or 3xx responses" not in out and "Socket errors" not in out, out
    assert result["status"] == 0 and result["connect"] == result["read"] == result["write"] == 0, out
    assert result["timeout"] == 0 and result["requests"] > 100, out
    return result, out


def test_a_thousand_items_learned_under_wrk_fail_no_request(load_index: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is not on PATH: apt-get install wrk (the tools suite needs it)")
    monkeypatch.setenv(KEY_ENV, KEY)
    items = _items(load_index)
    bodies = ", ".join(f"[==[{json.dumps({'text': item['text'].rsplit(' for case', 1)[0]})}]==]"
                       for item in items[:50])
    script = tmp_path / "classify.lua"
    script.write_text(SCRIPT.replace("{BODIES}", "{" + bodies + "}").replace("{KEY}", KEY))
    command = [wrk, "-t2", f"-c{CONNECTIONS}", "-d600s", "--timeout", "10s", "--latency", "-s", str(script)]
    log = tmp_path / "learned.jsonl"
    with ServeProcess("--index", str(load_index), "--encoder-threads", "1", "--api-key-env", KEY_ENV,
                      "--learn-log", str(log)) as server:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            for item in items[:20]:  # warm the connection path before wrk measures
                client.post("/v1/classify", json={"text": item["text"]})
            baseline = _wrk(command, server.url)
            time.sleep(10)
            base, base_out = _result(baseline)

            during = _wrk(command, server.url)
            try:
                time.sleep(2)
                lock = threading.Lock()
                statuses: dict[int, int] = {}

                def send(item: dict[str, Any]) -> None:
                    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
                        answer = c.post("/v1/feedback", json=item)
                    with lock:
                        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                    assert answer.status_code == 202, answer.text

                started = time.monotonic()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(send, items))
                last = time.monotonic()
                while True:
                    stats = client.get("/v1/learning").json()
                    if (stats["n_learned"] + stats["n_heldout"] >= ITEMS and stats["n_unserved"] == 0
                            and stats["n_waiting"] == 0):
                        break
                    assert time.monotonic() - last < 300, stats
                    time.sleep(0.25)
                applied = time.monotonic()
                time.sleep(1)
            finally:
                load, load_out = _result(during)
            taught = client.post("/v1/classify", json={"texts": [item["text"] for item in items[:200]]}).json()
    learned_s = applied - last
    print(f"\n{' '.join(command)} URL/v1/classify\nbaseline (wrk alone, 10 s):\n{base_out}\n"
          f"during learning ({ITEMS} items sent in {last - started:.1f} s):\n{load_out}\n"
          f"all applied {learned_s:.1f} s after the last 202; {stats['applies']} refits, last: "
          f"{stats['last_apply']}\np99 during / baseline: {load['p99_ms']:.2f} / {base['p99_ms']:.2f} ms = "
          f"{load['p99_ms'] / base['p99_ms']:.2f}x; p50 {load['p50_ms']:.2f} / {base['p50_ms']:.2f} ms")
    assert statuses == {202: ITEMS}
    assert stats["refused"] == 0 and stats["last_apply"]["swapped"], stats
    assert learned_s <= 60, f"learned {learned_s:.1f} s after the last item; the issue asks for 60 s at most"
    # What was taught is what is served: the trained items (not the held-out ones) classify as their intent.
    heldout = {entry["text"] for entry in map(json.loads, log.read_text().splitlines()) if entry.get("heldout")}
    trained = [i for i in range(200) if items[i]["text"] not in heldout]
    decisions = taught["decisions"]
    right = sum(decisions[i]["intent"] == items[i]["intent"] for i in trained)
    assert right >= 0.95 * len(trained), (right, len(trained))
