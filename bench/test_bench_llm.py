"""Tier 2's own overhead around an LLM call, with the model's time taken out.

- ``tier2_memory``: an escalated Decision settled by the in-memory backend (answers at once):
  prompt building, the hop to the sync bridge's event loop, breaker, timeout, the new Decision. This
  is the pipeline's overhead; the target is <= 1 ms p50.
- ``tier2_loopback_http``: the same through the vLLM protocol to the loopback server on
  127.0.0.1 (adds httpx, JSON and a real HTTP round trip; the "model" still answers at once).
- ``tier01_escalated``: tiers 0-1 on the same query, for scale (the default index has no tier 2,
  so ``classify`` stops at tier 1b's escalated Decision; the static tier passes it on first).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from router import Router
from router._sync import SyncBridge
from router.llm import LLMConfig
from router.llm._escalator import Escalator
from router.testing import FakeVLLM

ESCALATED_QUERY = "blah blah car keys"


@pytest.fixture(scope="module")
def vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


def _escalator(router: Router, backend: dict[str, object]) -> Escalator:
    return Escalator(LLMConfig(backends=[backend], gate="on"), router.artifact.intents)


def test_tier01_escalated(benchmark: BenchmarkFixture, router: Router) -> None:
    decision = benchmark(router.classify, ESCALATED_QUERY)
    assert decision.escalate and decision.tier == "embedding" and "static" in decision.latency_us


def test_tier2_memory(benchmark: BenchmarkFixture, router: Router) -> None:
    escalator = _escalator(router, {"backend": "memory"})
    decision = router.classify(ESCALATED_QUERY)
    assert decision.escalate
    bridge = SyncBridge()  # what Router.classify uses to reach tier 2 from sync code
    try:
        settled = benchmark(bridge.call, escalator.settle, ESCALATED_QUERY, decision)
        assert settled.tier == "llm"
    finally:
        bridge.close(last=escalator.aclose)


def test_tier2_loopback_http(benchmark: BenchmarkFixture, router: Router, vllm: FakeVLLM) -> None:
    escalator = _escalator(router, {"backend": "vllm", "url": vllm.url, "model": vllm.model})
    decision = router.classify(ESCALATED_QUERY)
    bridge = SyncBridge()
    try:
        settled = benchmark(bridge.call, escalator.settle, ESCALATED_QUERY, decision)
        assert settled.tier == "llm" and not settled.degraded
    finally:
        bridge.close(last=escalator.aclose)
