"""Graceful shutdown of a real `router serve` process: readiness goes false first, in-flight requests finish."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from router import Builder, RouterConfig
from router.llm import LLMConfig
from router.testing import FakeVLLM, ServeProcess


def test_sigterm_drains_then_exits(tmp_path: Path, mini_config: RouterConfig) -> None:
    fake = FakeVLLM().start()
    try:
        llm = LLMConfig(gate="on", backends=[{"backend": "vllm", "url": fake.url, "model": fake.model,
                                              "timeout_s": 10}])
        folder = Builder(mini_config.model_copy(update={"llm": llm})).build(tmp_path / "served").folder
        server = ServeProcess("--index", str(folder), "--encoder-threads", "1", capture=True).start()
        proc, url = server.proc, server.url
        assert proc is not None and proc.stdout is not None
        try:
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
            assert proc.wait(30) == 0  # a stop by signal is the normal end: exit 0
            out = proc.stdout.read()
            assert b"drained and stopped" in out and b"Traceback" not in out
        finally:
            server.stop()
    finally:
        fake.stop()


def test_sigint_stops_with_its_one_line_exit_0_and_no_traceback(mini_index: Path) -> None:
    """Ctrl-C on `router serve`: uvicorn would re-raise SIGINT as a KeyboardInterrupt after draining."""
    server = ServeProcess("--index", str(mini_index), "--encoder-threads", "1", capture=True).start()
    proc = server.proc
    assert proc is not None and proc.stdout is not None
    try:
        answer = httpx.post(f"{server.url}/v1/classify", json={"text": "what is my balance"}, timeout=10)
        assert answer.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        out = proc.stdout.read().decode()
        assert "drained and stopped" in out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
    finally:
        server.stop()
