"""Tier 2 end to end over the loopback vLLM server: settled, degraded, fallbacks, breaker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from router import Router
from router._decision import TIER_EMBEDDING, TIER_LLM, TIER_STATIC, Decision
from router.testing import FakeVLLM
from router.tiers import LOCAL
from tests.dispatch.conftest import Fakes, fakes  # noqa: F401 - the fixture
from tests.llm.conftest import ESCALATED, BrokenProvider, ping

RouterFactory = Callable[..., Router]


def tiers01(router: Router, text: str) -> Decision:
    """What tiers 0-1 alone decide: the chain's local tiers, not tier 2."""
    queries = router.chain.start([text])
    router.chain.run(queries, kinds=LOCAL)
    return router.chain.finish(queries)[0]


def test_the_fixture_queries_escalate(mini_router: Router) -> None:
    for text in ESCALATED:
        d = mini_router.classify(text)
        assert d.escalate and not d.out_of_scope, text


def test_only_escalated_queries_reach_tier2(make_router: RouterFactory, vllm: FakeVLLM,
                                            vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend)
    confident = router.classify("what is the balance of my bank accounts")
    assert confident.tier in (TIER_STATIC, TIER_EMBEDDING) and confident.accepted
    assert vllm.requests == []
    settled = router.classify("what about my money")
    assert len(vllm.requests) == 1
    assert settled.tier == TIER_LLM and not settled.escalate and not settled.degraded


def test_request_is_exactly_vllms_structured_outputs_choice(make_router: RouterFactory, vllm: FakeVLLM,
                                                            vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, top_k=3)
    tier1 = tiers01(router, "what about my money")
    router.classify("what about my money")
    body = vllm.requests[0]["body"]
    choice = body["structured_outputs"]["choice"]
    assert sorted(choice[:-1]) == sorted(c.intent for c in tier1.candidates[:3]) and choice[-1] == "none"
    assert body["temperature"] == 0 and body["model"] == vllm.model
    assert set(body) == {"model", "messages", "temperature", "max_tokens", "structured_outputs"}


def test_decision_records_model_tokens_latency_and_skill(make_router: RouterFactory, vllm: FakeVLLM,
                                                         vllm_backend: dict[str, Any]) -> None:
    vllm.script["what about my money"] = "transfer"
    router = make_router(vllm_backend)
    d = router.classify("what about my money")
    assert d.intent == "transfer" and d.skill == "payments.transfer"
    assert d.llm is not None and d.llm.backend == "vllm" and d.llm.model == vllm.model
    assert d.llm.prompt_tokens > 0 and d.llm.completion_tokens == 2 and d.llm.latency_ms > 0
    assert d.latency_us["llm"] > 0 and d.latency_us["total"] >= d.latency_us["llm"]
    assert d.candidates[0].intent == "balance"  # tier 1's evidence is kept
    # The static prefix is identical across calls, so the second call's prefix is cached.
    d2 = router.classify("how much")
    assert d2.llm is not None and d2.llm.cached_tokens > 0


def test_none_means_out_of_scope(make_router: RouterFactory, vllm: FakeVLLM, vllm_backend: dict[str, Any]) -> None:
    vllm.script["my stuff"] = "none"
    d = make_router(vllm_backend).classify("my stuff")
    assert d.tier == TIER_LLM and d.out_of_scope and d.intent is None and d.skill is None and not d.accepted


def test_guided_choice_for_servers_before_0_12(make_router: RouterFactory) -> None:
    old = FakeVLLM(legacy=True).start()
    try:
        router = make_router({"backend": "vllm", "url": old.url, "model": old.model, "structured": "guided_choice"})
        d = router.classify("clock")
        assert d.tier == TIER_LLM and "guided_choice" in old.requests[0]["body"]
    finally:
        old.stop()


def test_a_request_the_server_rejects_degrades_with_the_status(make_router: RouterFactory) -> None:
    old = FakeVLLM(legacy=True).start()  # refuses structured_outputs, as a strict pre-0.12 server
    try:
        d = make_router({"backend": "vllm", "url": old.url, "model": old.model}).classify("clock")
        assert d.degraded and d.degraded_reason == "vllm: http_400" and d.tier == TIER_EMBEDDING
    finally:
        old.stop()


@pytest.mark.parametrize(("fault", "reason"), [
    ("500", "http_500"),
    ("429", "rate_limited"),  # one HTTP boundary for tier 2 and the dispatcher: 429 is RateLimited
    ("malformed", "malformed"),
    ("drop", "connection"),
    ("outside", "bad_response"),
])
def test_faults_degrade_to_tier1_best_guess(make_router: RouterFactory, vllm: FakeVLLM,
                                            vllm_backend: dict[str, Any], fault: str, reason: str) -> None:
    router = make_router(vllm_backend)
    tier1 = tiers01(router, "what about my money")
    vllm.fault(fault)
    d = router.classify("what about my money")
    assert d.degraded and d.degraded_reason == f"vllm: {reason}"
    assert d.intent == tier1.candidates[0].intent and d.escalate and d.tier == TIER_EMBEDDING and d.llm is None
    # The next call (no fault queued) is answered again.
    assert router.classify("what about my money").tier == TIER_LLM


def test_slow_answer_times_out_without_waiting_for_it(make_router: RouterFactory, vllm: FakeVLLM,
                                                      vllm_backend: dict[str, Any]) -> None:
    router = make_router({**vllm_backend, "timeout_s": 0.2})
    vllm.fault("slow", seconds=3.0)
    start = time.monotonic()
    d = router.classify("how much")
    assert d.degraded and d.degraded_reason == "vllm: timeout"
    assert time.monotonic() - start < 2.5  # returned at the timeout, not after the 3 s answer


def test_breaker_opens_after_n_failures_then_probes(make_router: RouterFactory, vllm: FakeVLLM,
                                                    vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, breaker={"failures": 3, "window_s": 60, "cooldown_s": 0.3})
    vllm.always("500")
    reasons = [router.classify(ESCALATED[i % len(ESCALATED)]).degraded_reason for i in range(5)]
    assert reasons == ["vllm: http_500"] * 3 + ["vllm: circuit_open"] * 2
    assert len(vllm.requests) == 3  # an open breaker makes no call
    assert router.escalator is not None and router.escalator.breakers["vllm"].state == "open"
    time.sleep(0.35)
    vllm.always(None)
    probe = router.classify("clock")  # half-open: one probe goes through and closes the breaker
    assert probe.tier == TIER_LLM and router.escalator.breakers["vllm"].state == "closed"


def test_failed_probe_opens_the_breaker_again(make_router: RouterFactory, vllm: FakeVLLM,
                                              vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, breaker={"failures": 2, "window_s": 60, "cooldown_s": 0.2})
    vllm.always("500")
    for _ in range(2):
        router.classify("clock")
    time.sleep(0.25)
    assert router.classify("clock").degraded_reason == "vllm: http_500"  # the probe was made, and failed
    assert router.classify("clock").degraded_reason == "vllm: circuit_open"
    assert len(vllm.requests) == 3


def test_fallback_chain_is_taken_in_order(make_router: RouterFactory, vllm: FakeVLLM,
                                          vllm_backend: dict[str, Any]) -> None:
    second = FakeVLLM(model="remote-cheap").start()
    try:
        second.script["clock"] = "alarm"
        router = make_router({**vllm_backend, "name": "local"},
                             {"backend": "vllm", "name": "remote", "url": second.url, "model": second.model})
        vllm.always("500")
        d = router.classify("clock")
        assert d.tier == TIER_LLM and d.intent == "alarm"
        assert d.llm is not None and d.llm.backend == "remote" and d.llm.fallback_from == ["local: http_500"]
        second.always("drop")
        d = router.classify("clock")
        assert d.degraded and d.degraded_reason == "local: http_500; remote: connection"
    finally:
        second.stop()


def test_server_killed_mid_run_every_query_still_gets_a_decision(make_router: RouterFactory, vllm: FakeVLLM,
                                                                 vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, breaker={"failures": 3, "window_s": 60, "cooldown_s": 60})
    texts = ESCALATED * 4
    decisions = []
    for i, text in enumerate(texts):
        if i == 6:
            vllm.stop()
        decisions.append(router.classify(text))
    assert len(decisions) == len(texts)
    assert all(d.tier == TIER_LLM for d in decisions[:6])
    assert all(d.degraded and d.intent is not None for d in decisions[6:])
    reasons = [d.degraded_reason for d in decisions[6:]]
    assert reasons[:3] == ["vllm: connection"] * 3 and set(reasons[3:]) == {"vllm: circuit_open"}


def test_batch_and_async_paths_escalate(make_router: RouterFactory, vllm: FakeVLLM,
                                        vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend)
    texts = ["what is the balance of my bank accounts", "clock", "how much"]
    batch = router.classify_many(texts)
    assert batch[0].tier in (TIER_STATIC, TIER_EMBEDDING) and [d.tier for d in batch[1:]] == [TIER_LLM, TIER_LLM]
    assert len(vllm.requests) == 2

    async def both() -> tuple[Any, list[Any]]:
        return await router.aclassify("clock"), await router.aclassify_many(texts)

    one, many = asyncio.run(both())
    assert one.tier == TIER_LLM and [d.tier for d in many] == [d.tier for d in batch]


def test_bearer_token_comes_from_the_environment(make_router: RouterFactory, vllm: FakeVLLM,
                                                 vllm_backend: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VLLM_KEY", "s3cret")
    make_router({**vllm_backend, "api_key_env": "TEST_VLLM_KEY"}).classify("clock")
    assert vllm.requests[0]["headers"]["Authorization"] == "Bearer s3cret"


def test_missing_api_key_variable_is_named(make_router: RouterFactory, vllm: FakeVLLM, vllm_backend: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # As for the dispatcher: a warning at start-up, then each call refused (no_key), so a fallback still serves.
    monkeypatch.delenv("NOPE_KEY", raising=False)
    router = make_router({**vllm_backend, "api_key_env": "NOPE_KEY"})
    assert "api_key_env='NOPE_KEY' is not set" in caplog.text
    d = router.classify("clock")
    assert d.degraded and d.degraded_reason == "vllm: no_key" and vllm.requests == []


def test_off_and_unconfigured_tier2_leave_queries_escalated(mini_index: Any, vllm: FakeVLLM,
                                                            vllm_backend: dict[str, Any]) -> None:
    from router.llm import LLMConfig

    router = Router.load(mini_index, llm=LLMConfig(backends=[vllm_backend], gate="off"))
    try:
        d = router.classify("clock")
        assert d.escalate and d.tier == TIER_EMBEDDING and not d.degraded and vllm.requests == []
        assert router.escalator is not None and router.escalator.status == "off (gate: off)"
    finally:
        router.close()


def test_readiness_ping(make_router: RouterFactory, vllm: FakeVLLM, vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, {"backend": "vllm", "name": "gone", "url": "http://127.0.0.1:9/v1",
                                        "model": "x"})
    assert ping(router) == {"vllm": True, "gone": False}


def test_custom_clients_replace_the_configured_ones(mini_index: Any) -> None:
    from router import ConfigError
    from router.llm import LLMConfig

    config = LLMConfig(backends=[{"backend": "memory", "name": "custom"}], gate="on")
    with Router.load(mini_index, llm=config, providers={"custom": BrokenProvider()}) as router:
        d = router.classify("clock")
        assert d.degraded and d.degraded_reason == "custom: error:ZeroDivisionError"
    with pytest.raises(ConfigError, match=r"\['other'\] name no configured backend; known: custom"):
        Router.load(mini_index, llm=config, providers={"custom": BrokenProvider(), "other": BrokenProvider()})


def test_decision_carries_as_many_candidates_as_tier2_offers(make_router: RouterFactory, vllm: FakeVLLM,
                                                             vllm_backend: dict[str, Any]) -> None:
    router = make_router(vllm_backend, top_k=7)
    d = router.classify("clock")
    assert len(d.candidates) == 7 and len(vllm.requests[0]["body"]["structured_outputs"]["choice"]) == 8


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "openai"])
def test_a_premium_api_is_a_tier2_backend_too(make_router: RouterFactory, fakes: Fakes, kind: str) -> None:  # noqa: F811
    # Any provider of the model-call layer can settle escalations: the structured choice becomes the
    # API's own constraint (a forced tool call, responseJsonSchema, json_schema) and is read back.
    fake = {"anthropic": fakes.anthropic, "gemini": fakes.gemini, "openai": fakes.openai}[kind]
    model = {"anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash", "openai": "gpt-5.4-nano"}[kind]
    router = make_router({"backend": kind, "url": fake.url, "model": model, "api_key_env": f"{kind.upper()}_API_KEY"})
    escalated = router.classify("clock", tiers="local")
    assert escalated.escalate
    assert router.escalator is not None
    prompt = router.escalator.prompts.build("clock", [c.intent for c in escalated.candidates[:5]])
    answer = next(label for label in prompt.labels if label != "none")
    fake.script(prompt.user, json.dumps({"intent": answer}))
    settled = router.classify("clock")
    assert (settled.tier, settled.intent, settled.escalate) == (TIER_LLM, answer, False)
    assert settled.llm is not None and settled.llm.backend == kind and settled.llm.prompt_tokens > 0
    fake.script(prompt.user, json.dumps({"intent": "not-a-label"}))
    refused = router.classify("clock")  # an answer outside the labels is this backend's failure
    assert refused.degraded and refused.degraded_reason is not None and refused.degraded_reason.startswith(kind)
