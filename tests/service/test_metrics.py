"""/metrics: the classification total as its own metric, the build info, and the dispatcher's trace
records (provider attempts, fallbacks, steps, handler runs, session cost, breakers) over a real server
with loopback providers and a loopback tier-2 LLM."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import router
from router.dispatch._trace import MemorySink
from router.service._metrics import Metrics
from router.service.dispatch._observe import ObservedSink, outcome, stage_timeouts
from router.testing import FakeVLLM
from tests.dispatch.conftest import Fakes, anyio_backend, fakes, routing  # noqa: F401 - fixtures
from tests.service.conftest import Running

SKILLS = "router.dispatch.demo:registry"


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][1]


# -- classification --------------------------------------------------------------------------------
def test_the_total_is_its_own_metric_and_the_build_is_named(client: httpx.Client) -> None:
    decision = client.post("/v1/classify", json={"text": "what about my money"}).json()["decisions"][0]
    assert set(decision["latency_us"]) == {"rules", "static", "encode", "embedding", "total"}
    text = client.get("/metrics").text
    tiers = {labels["tier"] for labels, _ in samples(text, "router_tier_seconds_count")}
    assert tiers == {"rules", "static", "encode", "embedding"}  # no "total": sum() over tiers means something
    assert value(text, "router_classify_seconds_count") == 1.0
    assert value(text, "router_build_info", version=router.__version__, python=platform.python_version()) == 1.0


# -- the trace records, counted (no server) --------------------------------------------------------------
def call(**fields: Any) -> dict[str, Any]:
    return {"kind": "call", "session": "s", "skill": "pay", "stage": "extraction", "provider": "openai",
            "model": "m", "attempt": 1, "status": "ok", "latency_ms": 250.0, "tokens": 30, "cost_usd": 0.002,
            "fallback_from": None, "breaker": "closed", **fields}


def skill(status: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "skill", "session": "s", "skill": "pay", "status": status, "calls": 1,
            "session_cost_usd": 0.25, **fields}


def test_the_observed_sink_writes_through_then_counts() -> None:
    inner, metrics = MemorySink(), Metrics()
    sink = ObservedSink(inner)
    sink.write(call())  # before the metrics are attached: written, not counted
    sink.attach(metrics)
    records = [
        call(),
        call(status="http_500", attempt=1, tokens=0, cost_usd=0.0, breaker="open"),
        call(provider="gemini", model="f", fallback_from="openai/m"),
        call(status="circuit_open", attempt=0, latency_ms=0.0, tokens=0, cost_usd=0.0, breaker="open"),
        skill("pending_approval"),
        skill("ok", handler="ok", approved_by="approver_key:K"),
        skill("SkillFailed", handler="error"),
        skill("BudgetExceeded", session_cost_usd=1.0),
        skill("ok", session_cost_usd=None),  # the state could not be read: no cost known
    ]
    for record in records:
        sink.write(record)
    assert list(inner.records) == [call(), *records]
    text = metrics.render().decode()
    where = {"stage": "extraction", "provider": "openai", "model": "m"}
    assert value(text, "router_provider_attempts_total", **where, status="ok") == 1
    assert value(text, "router_provider_attempts_total", **where, status="http_500") == 1
    assert value(text, "router_provider_attempts_total", **where, status="circuit_open") == 1
    # The attempt not sent (attempt 0) has no latency.
    assert value(text, "router_provider_attempt_seconds_count", **where) == 2
    assert value(text, "router_provider_attempt_seconds_sum", **where) == 0.5
    assert value(text, "router_provider_fallbacks_total", stage="extraction", provider="gemini", model="f") == 1
    assert samples(text, "router_provider_fallbacks_total", provider="openai") == []
    assert value(text, "router_provider_tokens_total", **where) == 30
    assert value(text, "router_breaker_open", provider="openai", model="m") == 1  # its latest attempt's state
    assert value(text, "router_breaker_open", provider="gemini", model="f") == 0
    assert value(text, "router_skill_steps_total", skill="pay", status="ok", outcome="ok") == 2
    assert value(text, "router_skill_steps_total", skill="pay", status="SkillFailed", outcome="failed") == 1
    assert value(text, "router_skill_steps_total", skill="pay", status="BudgetExceeded", outcome="refused") == 1
    assert value(text, "router_skill_handler_runs_total", skill="pay", handler="error") == 1
    # The session's cost so far, as each skill record says (0.25, 0.25, 0.25, 1.00).
    assert value(text, "router_session_cost_usd_count") == 4
    assert value(text, "router_session_cost_usd_sum") == pytest.approx(1.75)


def test_a_step_outcome_separates_refusals_from_failures() -> None:
    assert outcome(skill("rejected")) == "ok"
    assert outcome(skill("SessionsFull")) == "refused"
    assert outcome(skill("InvalidParameters", calls=0)) == "refused"  # the caller's own parameters
    assert outcome(skill("InvalidParameters", calls=2)) == "failed"  # the models could not extract them
    assert outcome(skill("timeout")) == "failed"
    assert outcome(skill("StateUnavailable")) == "failed"
    assert outcome(skill("SomethingNew")) == "failed"  # an unknown status is seen, not hidden


def test_a_record_that_cannot_be_counted_still_reaches_the_trace(caplog: pytest.LogCaptureFixture) -> None:
    inner = MemorySink()
    sink = ObservedSink(inner)
    sink.attach(Metrics())
    sink.write({"kind": "call", "status": "ok"})  # no stage: not countable
    assert list(inner.records) == [{"kind": "call", "status": "ok"}]
    assert "could not be counted" in caplog.text


def test_stage_timeouts_take_the_longest_model_of_each_stage(fakes: Fakes) -> None:  # noqa: F811
    from router.dispatch import model_routing_from_dict

    data = routing(fakes, overrides={"pay": {"extraction": {"provider": "openai", "model": "gpt-5.4-nano",
                                                            "timeout_s": 7}}}, dispatch_timeout_s=40)
    bounds = stage_timeouts(model_routing_from_dict(data), handler_timeout_s=12.0)
    # routing and diagnostic keep the shipped fallbacks (10 s, 60 s): the longest model of the stage counts.
    assert bounds == {"routing": 10, "extraction": 7, "formatting": 2, "diagnostic": 60, "chat": 60, "dispatch": 40,
                      "handler": 12.0}


# -- over a real server -----------------------------------------------------------------------------
@pytest.fixture
def llm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


@pytest.fixture
def observed(start_server: Callable[..., Running], fakes: Fakes, llm: FakeVLLM,  # noqa: F811
             tmp_path: Path, skills_index: Path) -> Iterator[httpx.Client]:
    """Dispatch on (loopback providers, no retries) and tier 2 on (a loopback vLLM whose breaker opens at
    its first failure)."""
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing(fakes, retry={"max_retries": 0})))
    llm.script["clock"] = "alarm"
    tier2 = {"backends": [{"backend": "vllm", "url": llm.url, "model": llm.model, "timeout_s": 5}],
             "breaker": {"failures": 1, "cooldown_s": 600}}
    server = start_server(llm=tier2, skills=SKILLS, model_routing=str(path), index=skills_index)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_dispatch_records_count_in_metrics(observed: httpx.Client, fakes: Fakes, llm: FakeVLLM) -> None:  # noqa: F811
    client = observed
    fakes.openai.script("send 20 dollars to sam", '{"amount": 20, "to_account": "sam"}')
    fakes.gemini.script("send 30 dollars to ann", '{"amount": 30, "to_account": "ann"}')
    first = client.post("/v1/dispatch", json={"session_id": "u", "text": "send 20 dollars to sam"}).json()
    fakes.openai.fault("500")  # the next extraction falls back to gemini
    second = client.post("/v1/dispatch", json={"session_id": "u", "text": "send 30 dollars to ann"}).json()
    assert first["status"] == second["status"] == "pending_approval" and second["fallback_taken"]
    assert client.post(f"/v1/approvals/{first['approval_id']}/approve").status_code == 200
    assert client.post("/v1/dispatch", json={"session_id": "u", "skill": "balance",
                                             "params": {"account": "gold"}}).status_code == 422
    text = client.get("/metrics").text

    extraction = {"stage": "extraction"}
    assert value(text, "router_provider_attempts_total", **extraction, provider="openai", model="gpt-5.4-nano",
                 status="ok") == 1
    assert value(text, "router_provider_attempts_total", **extraction, provider="openai", model="gpt-5.4-nano",
                 status="http_500") == 1
    assert value(text, "router_provider_fallbacks_total", **extraction, provider="gemini",
                 model="gemini-2.5-flash") == 1
    assert value(text, "router_provider_attempt_seconds_count", **extraction, provider="openai",
                 model="gpt-5.4-nano") == 2
    assert value(text, "router_provider_cost_usd_total", **extraction, provider="gemini",
                 model="gemini-2.5-flash") > 0
    assert value(text, "router_breaker_open", provider="openai", model="gpt-5.4-nano") == 0
    assert value(text, "router_skill_steps_total", skill="transfer", status="pending_approval", outcome="ok") == 2
    assert value(text, "router_skill_steps_total", skill="transfer", status="ok", outcome="ok") == 1
    assert value(text, "router_skill_steps_total", skill="balance", status="InvalidParameters",
                 outcome="refused") == 1
    assert value(text, "router_skill_handler_runs_total", skill="transfer", handler="ok") == 1
    # Every step observed the session's cost so far; the last ones saw both extractions paid.
    assert value(text, "router_session_cost_usd_count") == 4
    cost = float(first["cost_usd"]) + float(second["cost_usd"])
    assert value(text, "router_session_cost_usd_sum") == pytest.approx(float(first["cost_usd"]) + 3 * cost)
    assert value(text, "router_stage_timeout_seconds", stage="extraction") == 2
    assert value(text, "router_stage_timeout_seconds", stage="dispatch") == 60

    # Tier 2's breaker, read at the scrape: closed, then open once the LLM is down.
    assert client.post("/v1/classify", json={"text": "clock"}).json()["decisions"][0]["tier"] == "llm"
    assert value(client.get("/metrics").text, "router_llm_breaker_open", backend="vllm") == 0
    llm.stop()
    assert client.post("/v1/classify", json={"text": "clock"}).json()["decisions"][0]["degraded"]
    assert value(client.get("/metrics").text, "router_llm_breaker_open", backend="vllm") == 1
