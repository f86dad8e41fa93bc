"""Every limit of `router serve`: the status code, and a message naming the field or the limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from router.testing import FakeVLLM
from tests.service.conftest import Running


@pytest.mark.parametrize(("body", "loc", "needle"), [
    ({"text": ""}, ["body", "text"], "at least 1 character"),
    ({"text": "   "}, ["body", "text"], "should match pattern"),
    ({"text": "x" * 2001}, ["body", "text"], "at most 2000 characters"),
    ({"texts": ["hi"] * 257}, ["body", "texts"], "at most 256 items"),
    ({"texts": ["hi", " "]}, ["body", "texts", 1], "should match pattern"),
    ({"texts": []}, ["body", "texts"], "at least 1 item"),
    ({"text": "hi", "texts": ["hi"]}, ["body"], "give exactly one of 'text' or 'texts'"),
    ({}, ["body"], "give exactly one of 'text' or 'texts'"),
    ({"text": None}, ["body", "text"], "valid string"),
    ({"text": 42}, ["body", "text"], "valid string"),
    ({"text": "hi", "colour": "red"}, ["body", "colour"], "Extra inputs are not permitted"),
    ({"text": "hi", "top_k": 0}, ["body", "top_k"], "greater than or equal to 1"),
])
def test_bad_bodies_get_422_naming_the_field(client: httpx.Client, body: dict[str, Any], loc: list[Any],
                                             needle: str) -> None:
    r = client.post("/v1/classify", json=body)
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [loc] and needle in errors[0]["msg"]


def test_limits_appear_in_the_openapi_schema(client: httpx.Client) -> None:
    props = client.get("/openapi.json").json()["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert props["text"]["maxLength"] == 2000 and props["texts"]["maxItems"] == 256


def test_malformed_json_gets_422(client: httpx.Client) -> None:
    r = client.post("/v1/classify", content=b'{"text": "unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json_invalid" in str(r.json()["detail"])


def test_body_over_the_limit_gets_413(start_server: Callable[..., Running]) -> None:
    server = start_server(max_body_bytes=1000)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/classify", json={"text": "a" * 1200})
        assert r.status_code == 413 and "max_body_bytes=1000" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no content-length: the size is counted as it arrives
            yield b'{"text": "'
            for _ in range(20):
                yield b"a" * 100
            yield b'"}'

        r = c.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes=1000" in r.json()["detail"]
        assert c.post("/v1/classify", json={"text": "hi"}).status_code == 200


def test_api_key_is_required_and_compared(start_server: Callable[..., Running],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_TEST_KEY", "s3cret-token")
    server = start_server(api_key_env="ROUTER_TEST_KEY")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/classify", json={"text": "hi"})
        assert r.status_code == 401 and "$ROUTER_TEST_KEY" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = c.post("/v1/classify", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret-tokeX"})
        assert wrong.status_code == 401
        ok = c.post("/v1/classify", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_an_empty_api_key_variable_is_refused_at_start(mini_index: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from router import ConfigError, Router
    from router.service import ServeConfig, build_server

    monkeypatch.setenv("ROUTER_EMPTY_KEY", "")
    with pytest.raises(ConfigError, match="api_key_env='ROUTER_EMPTY_KEY'"):
        build_server(ServeConfig(api_key_env="ROUTER_EMPTY_KEY"), Router.load(mini_index, llm="off"))


@pytest.fixture
def slow_llm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


def _tier2(fake: FakeVLLM, timeout_s: float = 5.0) -> dict[str, Any]:
    return {"backends": [{"backend": "vllm", "url": fake.url, "model": fake.model, "timeout_s": timeout_s}]}


def test_requests_beyond_max_in_flight_get_503_with_retry_after(start_server: Callable[..., Running],
                                                                 slow_llm: FakeVLLM) -> None:
    server = start_server(llm=_tier2(slow_llm), max_in_flight=1, retry_after_s=3)
    slow_llm.fault("slow", seconds=1.5)
    results: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            results["slow"] = c.post("/v1/classify", json={"text": "clock"})  # escalates to the slow LLM

    thread = threading.Thread(target=slow_request)
    thread.start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        deadline = time.monotonic() + 5
        while server.service.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/classify", json={"text": "hi"})
    thread.join()
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert "max_in_flight=1" in r.json()["detail"]
    assert results["slow"].status_code == 200 and results["slow"].json()["decisions"][0]["tier"] == "llm"


def test_a_request_over_its_timeout_gets_504(start_server: Callable[..., Running], slow_llm: FakeVLLM) -> None:
    server = start_server(llm=_tier2(slow_llm), request_timeout_s=0.3)
    slow_llm.fault("slow", seconds=2)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/classify", json={"text": "clock"})
        assert r.status_code == 504 and "request_timeout_s=0.3" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200


def test_tier2_over_http_and_readiness_follow_the_llm(start_server: Callable[..., Running],
                                                      slow_llm: FakeVLLM) -> None:
    slow_llm.script["clock"] = "alarm"
    server = start_server(llm=_tier2(slow_llm))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        d = c.post("/v1/classify", json={"text": "clock"}).json()["decisions"][0]
        assert d["tier"] == "llm" and d["intent"] == "alarm" and d["llm"]["backend"] == "vllm"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["llm"]["reachable"] == {"vllm": True}
        slow_llm.stop()
        assert c.get("/readyz").status_code == 503
        d = c.post("/v1/classify", json={"text": "clock"}).json()["decisions"][0]
        assert d["degraded"] and d["degraded_reason"] == "vllm: connection"
        assert "router_degraded_total 1.0" in c.get("/metrics").text


def test_refusals_leave_kept_alive_connections_usable(start_server: Callable[..., Running]) -> None:
    # The refused body is read and dropped, so the next request on the same connection is answered.
    server = start_server(max_body_bytes=1000)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(20):
            big = c.post("/v1/classify", json={"text": "a" * 500_000})
            assert big.status_code == 413 and "connection" not in big.headers
            assert c.post("/v1/classify", json={"text": "hi"}).status_code == 200


def test_a_body_beyond_the_drain_cap_closes_the_connection(start_server: Callable[..., Running]) -> None:
    import socket

    from router.service._guard import DRAIN_CAP

    server = start_server(max_body_bytes=1000)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     f"content-length: {DRAIN_CAP + 1}\r\n\r\n{{}}".encode())
        head = sock.recv(4096).decode().lower()
    assert head.startswith("http/1.1 413") and "connection: close" in head
