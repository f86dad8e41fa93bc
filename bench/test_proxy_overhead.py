"""The proxy's overhead: what `router serve --proxy` adds to a chat call over calling the provider directly.

In ONE run, one request at a time, interleaved (a, b, c, a, b, c, ...) so that drift in the shared
machine's load falls on all three alike, over the default index (CLINC150, built if missing):

- (a) the `openai` SDK straight to the loopback OpenAI (``FakeOpenAI``);
- (b) the same SDK through the proxy with ``model="auto"``, which classifies the text, meters one step of
  its session, forwards it to the same FakeOpenAI and writes its trace record;
- (c) ``POST /v1/classify`` of the same text on the same server (httpx).

The issue's bar: p50(b) - p50(a) <= p50(c) + 1 ms. The figures are printed (run with ``-s``); no timing is
asserted. ``pytest bench/test_proxy_overhead.py --benchmark-disable -s`` (``BENCH_PROXY_N`` requests
each, 300 by default).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from router.testing import FakeOpenAI, ServeProcess

from .conftest import QUERY, TRANSFORMER_QUERY

N = int(os.environ.get("BENCH_PROXY_N", "300"))
WARMUP = 30
KEY = "sk-bench-proxy"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(index_folder: Path, upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("proxy-bench")
    ref = {"provider": "openai", "model": "gpt-5.4-nano", "timeout_s": 10, "max_tokens": 256}
    routing = {
        "providers": {"openai": {"kind": "openai", "base_url": upstream.url, "api_key_env": "BENCH_PROXY_KEY"}},
        "defaults": {"chat": ref}, "fallbacks": {"chat": []},
        "proxy": {"out_of_scope": {"model": ref}},  # every query reaches the upstream, out of scope or not
        # Thousands of steps in one session: the budgets would stop it (they are still checked, per request).
        "budgets": {"session_steps": 1_000_000, "session_tokens": 1_000_000_000, "session_cost_usd": 1_000_000,
                    "hourly_cost_usd": 1_000_000},
        "trace": {"sink": "jsonl", "path": str(folder / "dispatch.jsonl")},
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(routing))
    os.environ["BENCH_PROXY_KEY"] = KEY  # the child process reads it
    with ServeProcess("--index", str(index_folder), "--proxy", "on", "--model-routing", str(path),
                      "--encoder-cache-size", "0") as served:
        yield served.url


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


@pytest.mark.parametrize("text", [QUERY, TRANSFORMER_QUERY], ids=["static-tier", "embedding-tier"])
def test_proxy_overhead(proxy: str, upstream: FakeOpenAI, text: str) -> None:
    messages: Any = [{"role": "user", "content": text}]
    direct = openai.OpenAI(base_url=upstream.url, api_key=KEY, max_retries=0)
    routed = openai.OpenAI(base_url=f"{proxy}/v1", api_key="unused", max_retries=0)
    classify = httpx.Client(base_url=proxy, timeout=30)
    calls: dict[str, Callable[[], Any]] = {
        "direct": lambda: direct.chat.completions.create(model="gpt-5.4-nano", messages=messages),
        "proxy": lambda: routed.chat.completions.create(model="auto", messages=messages),
        "classify": lambda: classify.post("/v1/classify", json={"text": text}).raise_for_status(),
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(WARMUP + N):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if i >= WARMUP:
                samples[name].append(time.perf_counter() - started)
    direct.close()
    routed.close()
    classify.close()
    p50 = {name: _p50_ms(s) for name, s in samples.items()}
    overhead = p50["proxy"] - p50["direct"]
    bar = p50["classify"] + 1.0
    print(f"\nproxy overhead ({text!r}, n={N}): p50 direct {p50['direct']:.2f} ms, via proxy {p50['proxy']:.2f} ms, "
          f"classify {p50['classify']:.2f} ms -> overhead {overhead:.2f} ms vs classify + 1 ms = {bar:.2f} ms "
          f"({'within' if overhead <= bar else 'OVER'} the bar)")
    assert len(upstream.requests) >= 2 * (WARMUP + N)  # (a) and (b) both reached the upstream
