"""Every endpoint of `router serve`, over a real uvicorn server and a real HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from router import Router
from tests.service.conftest import Running


def test_classify_one_text(client: httpx.Client, mini_router: Router) -> None:
    r = client.post("/v1/classify", json={"text": "will it snow tomorrow", "session_id": "s-1", "top_k": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["session_id"] == "s-1" and len(body["decisions"]) == 1
    d = body["decisions"][0]
    expected = mini_router.classify("will it snow tomorrow")
    assert d["intent"] == expected.intent == "weather" and d["tier"] == expected.tier
    assert len(d["candidates"]) == 2 and d["latency_us"]["total"] > 0


def test_classify_a_batch_keeps_order(client: httpx.Client) -> None:
    texts = ["will it snow tomorrow", "hi there", "translate hello into french", "what's my balance"]
    r = client.post("/v1/classify", json={"texts": texts})
    assert r.status_code == 200
    assert [d["candidates"][0]["intent"] for d in r.json()["decisions"]] == ["weather", "greeting", "translate",
                                                                              "balance"]


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["encoder_warm"]
    assert ready.json()["llm"] == {"configured": False}
    schema = client.get("/openapi.json").json()
    assert "/v1/classify" in schema["paths"] and "ClassifyRequest" in schema["components"]["schemas"]


def test_metrics_count_requests_tiers_and_refusals(client: httpx.Client) -> None:
    settled = client.post("/v1/classify", json={"text": "will it snow tomorrow"}).json()["decisions"][0]
    escalated = client.post("/v1/classify", json={"text": "what about my money"}).json()["decisions"][0]
    client.post("/v1/classify", json={"text": ""})
    assert settled["tier"] == "static" and escalated["tier"] == "embedding" and escalated["escalate"]
    assert "encode" not in settled["latency_us"] and "static" in escalated["latency_us"]
    text = client.get("/metrics").text
    assert 'router_requests_total{endpoint="/v1/classify",status="200"} 2.0' in text
    assert 'router_requests_total{endpoint="/v1/classify",status="422"} 1.0' in text
    assert 'router_decisions_total{tier="static"} 1.0' in text
    assert 'router_decisions_total{tier="embedding"} 1.0' in text
    # Only the query the static tier left pending went to the encoder thread, in one micro-batch.
    assert "router_batch_size_count 1.0" in text
    for name in ("router_request_seconds_bucket", "router_tier_seconds_bucket", "router_in_flight_requests",
                 "router_escalated_total", "router_out_of_scope_total", "router_degraded_total",
                 "router_batch_size_bucket"):
        assert name in text, name


def test_concurrent_single_requests_are_micro_batched(server: Running, mini_router: Router) -> None:
    texts = [f"will it rain on day {i}" for i in range(48)] + [f"send {i} dollars to sam" for i in range(48)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return list(await asyncio.gather(*(c.post("/v1/classify", json={"text": t}) for t in texts)))

    responses = asyncio.run(fire())
    got = [r.json()["decisions"][0]["candidates"][0]["intent"] for r in responses]
    assert got == [mini_router.classify(t).candidates[0].intent for t in texts]
    batcher = server.service.batcher
    assert batcher.batches < len(texts)  # several requests shared an encoder call


def test_a_lone_request_does_not_wait_for_company(start_server: Callable[..., Running]) -> None:
    server = start_server(batch_window_ms=1000)  # a window long enough that waiting would show
    with httpx.Client(base_url=server.url, timeout=30) as c:
        response = c.post("/v1/classify", json={"text": "hi"})
    assert response.status_code == 200 and server.service.batcher.last_batch_size == 1
    assert response.elapsed.total_seconds() < 0.9  # it did not sit out the 1 s window
