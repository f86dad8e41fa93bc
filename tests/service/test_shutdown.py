"""Graceful shutdown of a real `router serve` process: readiness goes false first, in-flight requests finish."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from router import Builder, RouterConfig
from router.llm import LLMConfig
from router.testing import FakeVLLM
from tests.service.conftest import free_port


def test_sigterm_drains_then_exits(tmp_path: Path, mini_config: RouterConfig) -> None:
    fake = FakeVLLM().start()
    try:
        llm = LLMConfig(gate="on", backends=[{"backend": "vllm", "url": fake.url, "model": fake.model,
                                              "timeout_s": 10}])
        folder = Builder(mini_config.model_copy(update={"llm": llm})).build(tmp_path / "served").folder
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--index", str(folder), "--port",
                                 str(port), "--encoder-threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "server did not become ready"
                time.sleep(0.1)

            fake.fault("slow", seconds=2.0)
            result: dict[str, httpx.Response] = {}
            thread = threading.Thread(target=lambda: result.update(
                slow=httpx.post(f"{url}/v1/classify", json={"text": "clock"}, timeout=30)))
            thread.start()
            time.sleep(0.5)  # the request is now waiting on the slow LLM
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            ready = httpx.get(f"{url}/readyz", timeout=5)
            assert ready.status_code == 503 and ready.json()["draining"]  # readiness goes false first
            thread.join(30)
            assert result["slow"].status_code == 200  # the in-flight request finished
            assert result["slow"].json()["decisions"][0]["tier"] == "llm"
            # uvicorn re-raises the signal once it has shut down cleanly, so the exit is SIGTERM's.
            assert proc.wait(30) in (0, -signal.SIGTERM)
            assert proc.stdout is not None and b"drained and stopped" in proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    finally:
        fake.stop()
