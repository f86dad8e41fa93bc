"""Hot reload under wrk load (marked ``tools``: needs wrk, Debian package ``wrk``).

A real `router serve` process takes ``wrk -t2 -c16`` on /v1/classify while its index is swapped three
times by ``POST /v1/admin/reload``, then offered a corrupt index, which it refuses. wrk's own summary
must show no failed request: no non-2xx answer and no socket error (connect, read, write, timeout).
Run: ``pytest -m tools -s tests/service/test_reload_load.py`` (``-s`` prints the figures).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import Builder, RouterConfig
from router.testing import ServeProcess
from tests.service.test_reload import AUTH, KEY, KEY_ENV, PIZZA, TEXTS, corrupt_copy, version_of, with_pizza

pytestmark = pytest.mark.tools

CONNECTIONS = 16
# wrk sends these in turn; its response() counts the answers by index label and checks that only the
# pizza build answers "pizza" (a request is wholly one index's), and done() prints one JSON line.
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
labels = {}
mixed, pizzas = 0, 0
response = function(status, headers, body)
  local label = body:match('"index":"([^"]*)"') or ("status " .. status)
  labels[label] = (labels[label] or 0) + 1
  if body:match('"decisions":%[{"intent":"pizza"') then
    pizzas = pizzas + 1
    if label ~= "{PIZZA_LABEL}" then mixed = mixed + 1 end
  end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local seen, mixes, pizza = {}, 0, 0
  for _, thread in ipairs(threads) do
    for label, n in pairs(thread:get("labels")) do seen[label] = (seen[label] or 0) + n end
    mixes, pizza = mixes + thread:get("mixed"), pizza + thread:get("pizzas")
  end
  local parts = {}
  for label, n in pairs(seen) do table.insert(parts, string.format('"%s": %d', label, n)) end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, "mixed": %d, "pizzas": %d, ' ..
    '"labels": {%s}}\\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3, mixes, pizza,
    table.concat(parts, ", ")))
end
"""


@pytest.fixture(scope="module")
def pizza_build(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    root = tmp_path_factory.mktemp("reload-load")
    return Builder(with_pizza(mini_config, root)).build(root / "mini").folder


def _readyz_version(url: str) -> str:
    return str(httpx.get(f"{url}/readyz", timeout=30).json()["index"]["version"])


def test_three_swaps_and_a_refusal_under_wrk_fail_no_request(mini_index: Path, pizza_build: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is not on PATH: apt-get install wrk (the tools suite needs it)")
    monkeypatch.setenv(KEY_ENV, KEY)
    old, new = version_of(mini_index), version_of(pizza_build)
    bodies = ", ".join(f"[==[{json.dumps({'text': text})}]==]" for text in TEXTS)  # Lua long strings: no escapes
    script = tmp_path / "classify.lua"
    script.write_text(SCRIPT.replace("{BODIES}", "{" + bodies + "}").replace("{KEY}", KEY)
                      .replace("{PIZZA_LABEL}", f"mini@{new}"))
    corrupt = corrupt_copy(pizza_build, tmp_path / "corrupt" / "mini")
    command = [wrk, "-t2", f"-c{CONNECTIONS}", "-d300s", "--timeout", "10s", "--latency", "-s", str(script)]
    with ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--api-key-env", KEY_ENV) as server:
        for _ in range(20):  # warm the connection path before wrk measures
            httpx.post(f"{server.url}/v1/classify", json={"text": PIZZA}, headers=AUTH, timeout=30)
        load = subprocess.Popen([*command, f"{server.url}/v1/classify"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        swaps: list[dict[str, Any]] = []
        try:
            time.sleep(3)
            for target, version in ((pizza_build, new), (mini_index, old), (pizza_build, new)):
                answer = httpx.post(f"{server.url}/v1/admin/reload", json={"index": str(target)}, headers=AUTH,
                                    timeout=120)
                assert answer.status_code == 200, answer.text
                swaps.append(answer.json())
                assert _readyz_version(server.url) == version  # the new version is the one serving
                time.sleep(3)
            refused = httpx.post(f"{server.url}/v1/admin/reload", json={"index": str(corrupt)}, headers=AUTH,
                                 timeout=120)
            assert refused.status_code == 409 and "does not match the sha256" in refused.json()["detail"]
            assert _readyz_version(server.url) == new  # the old index keeps serving
            time.sleep(3)
        finally:
            load.send_signal(signal.SIGINT)  # wrk stops and prints its summary
            out, _ = load.communicate(timeout=60)
    found = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    assert found is not None, out
    result = json.loads(found.group(1))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    print(f"\n{' '.join(command)} URL/v1/classify (stopped by SIGINT after the swaps)\n{out}")
    print(f"reloads (s): {[s['seconds'] for s in swaps]}; {result}")
    assert "Non-2xx or 3xx responses" not in out and "Socket errors" not in out, out
    assert result["status"] == 0 and result["connect"] == result["read"] == result["write"] == 0
    assert result["timeout"] == 0 and result["requests"] > 100 and rps is not None
    assert result["pizzas"] > 0 and result["mixed"] == 0  # pizza only from the pizza build: no request mixed two
    assert result["labels"].get(f"mini@{new}", 0) > 0 and result["labels"].get(f"mini@{old}", 0) > 0
    assert set(result["labels"]) == {f"mini@{old}", f"mini@{new}"}  # every answer named its index
