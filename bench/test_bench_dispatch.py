"""The dispatcher's own overhead, with the providers' time taken out (loopback servers answer at once).

- ``dispatch_params``: a skill with caller-given parameters: allowlist, step budget, validation,
  handler, result check, trace records, the hop to the dispatcher's loop. No model call.
- ``dispatch_extract``: the same with one extraction call through the OpenAI adapter to the
  loopback server: budget reservation, breaker, retry wrapper, HTTP round trip, usage, cost, trace.
- ``raw_httpx_post``: the same HTTP request to the same server with a bare httpx client, for scale:
  ``dispatch_extract - raw_httpx_post`` is what the dispatcher adds around a provider call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from router.dispatch import Dispatcher, model_routing_from_dict
from router.dispatch._extraction import first_request
from router.dispatch.demo import build_registry
from router.providers import HttpClients
from router.providers._openai import OpenAIChat
from router.testing import FakeOpenAI

KEY = "bench-key"


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY).start()
    server.script("set a timer for 10 minutes", '{"minutes": 10}')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dispatcher(openai: FakeOpenAI) -> Iterator[Dispatcher]:
    os.environ["BENCH_OPENAI_KEY"] = KEY
    ref = {"provider": "openai", "model": "gpt-5.4-nano"}
    config = model_routing_from_dict({
        "providers": {"openai": {"kind": "openai", "base_url": openai.url, "api_key_env": "BENCH_OPENAI_KEY"}},
        "defaults": {s: ref for s in ("routing", "extraction", "formatting", "diagnostic")},
        "fallbacks": {s: [] for s in ("routing", "extraction", "formatting", "diagnostic")},  # merged per stage
        "budgets": {"session_steps": "off", "session_tokens": "off", "session_cost_usd": "off",
                    "hourly_cost_usd": "off"},
        "trace": {"sink": "memory"}})
    with Dispatcher(config, build_registry()) as d:
        yield d


def test_dispatch_params(benchmark: BenchmarkFixture, dispatcher: Dispatcher) -> None:
    result = benchmark(dispatcher.dispatch, "bench", "balance", None, {"account": "savings"})
    assert result.status == "ok"


def test_dispatch_extract(benchmark: BenchmarkFixture, dispatcher: Dispatcher) -> None:
    registry = dispatcher.skills
    timer = registry.get("timer")
    plain = type(timer)(timer.name, timer.description, timer.params, timer.handler)  # no formatting call
    dispatcher.skills = type(registry)([plain])
    try:
        result = benchmark(dispatcher.dispatch, "bench", "timer", "set a timer for 10 minutes")
    finally:
        dispatcher.skills = registry
    assert result.params == {"minutes": 10} and len(result.calls) == 1


def test_raw_httpx_post(benchmark: BenchmarkFixture, dispatcher: Dispatcher, openai: FakeOpenAI) -> None:
    provider = OpenAIChat("openai", dispatcher.config.providers["openai"], HttpClients())
    body = provider.body("gpt-5.4-nano", first_request(build_registry().get("timer"), "set a timer for 10 minutes"))
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client() as client:
        def post() -> dict[str, object]:
            return dict(client.post(f"{openai.url}/chat/completions", json=body, headers=headers).json())

        answer = benchmark(post)
    assert json.loads(str(answer["choices"][0]["message"]["content"])) == {"minutes": 10}  # type: ignore[index]
