"""Dispatch hardening over a real server: a key echoed by a provider reaches no trace line, log line or
response body (a real `router serve` process, and an in-process uvicorn for log records); parameters
are strict (422 naming the field); a full session table is 503 with Retry-After."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router._client import RouterClient
from router._redact import MASK
from router.errors import ServiceDispatchError
from router.testing import ServeProcess
from tests.dispatch.conftest import Fakes, anyio_backend, fakes, provider_section  # noqa: F401 - fixtures
from tests.dispatch.test_redaction import Echoes, assert_no_key, echoes  # noqa: F401 - fixtures
from tests.service.conftest import Running

SKILLS = "router.dispatch.demo:registry"
SEND = {"session_id": "u", "skill": "transfer", "text": "send 20 dollars to sam"}


def _routing(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _trace(path: Path) -> str:
    text = path.read_text()
    errors = [json.loads(line).get("error", "") for line in text.splitlines()]
    assert any("Incorrect API key provided: " + MASK in e for e in errors), errors  # the provider's text is kept
    return text


def test_router_serve_leaks_no_echoed_key(echoes: Echoes, mini_index: Path,  # noqa: F811 - the fixture
                                          tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    routing = _routing(tmp_path, echoes.routing(trace={"sink": "jsonl", "path": str(trace)}))
    with ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--skills", SKILLS,
                      "--allow-self-approval", "on", "--model-routing", routing) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/dispatch", json=SEND)
        assert r.status_code == 502 and r.json()["reason"] == "fallbacks_exhausted"
        assert "http_401" in r.text and "http_500" in r.text
        bodies = [r.text, client.get("/v1/sessions/u").text, client.get("/metrics").text]
        logs = server.output()  # everything the process printed: uvicorn's and the router's log lines
    assert echoes.openai.requests and echoes.anthropic.requests and echoes.gemini.requests
    assert "router: serving index" in logs
    assert_no_key(_trace(trace))
    assert_no_key("".join(bodies))
    assert_no_key(logs)


def test_no_log_record_holds_an_echoed_key(echoes: Echoes,  # noqa: F811 - the fixture
                                           start_server: Callable[..., Running], tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    trace = tmp_path / "trace.jsonl"
    routing = _routing(tmp_path, echoes.routing(trace={"sink": "jsonl", "path": str(trace)}))
    with caplog.at_level(logging.DEBUG):  # every logger, httpx's and httpcore's request logs included
        server = start_server(skills=SKILLS, model_routing=routing)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/v1/dispatch", json=SEND)
            assert r.status_code == 502
            body = r.text
    assert any("HTTP Request: POST" in rec.getMessage() for rec in caplog.records)  # provider calls were logged
    assert_no_key("\n".join(rec.getMessage() for rec in caplog.records) + caplog.text)
    assert_no_key(body + _trace(trace))


@pytest.mark.parametrize("params, field, message", [
    ({"amount": 20, "to_account": "sam", "memo": "rent"}, "memo", "Extra inputs are not permitted"),
    ({"amount": True, "to_account": "sam"}, "amount", "Input should be a valid number (got True)"),
    ({"amount": "20", "to_account": "sam"}, "amount", "Input should be a valid number (got '20')"),
])
def test_params_are_strict_over_http(start_server: Callable[..., Running], fakes: Fakes,  # noqa: F811
                                     tmp_path: Path, params: dict[str, Any], field: str, message: str) -> None:
    routing = _routing(tmp_path, {"providers": provider_section(fakes), "trace": {"sink": "memory"}})
    server = start_server(skills=SKILLS, model_routing=routing)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/dispatch", json={"session_id": "u", "skill": "transfer", "params": params})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "InvalidParameters"
        assert body["errors"] == [f"{field}: {message}" + ("" if "(got" in message else f" (got {params[field]!r})")]
        assert field in body["detail"]
        ok = client.post("/v1/dispatch", json={"session_id": "u", "skill": "transfer",
                                               "params": {"amount": 20, "to_account": "sam"}})
        assert ok.status_code == 200 and ok.json()["status"] == "pending_approval"


def test_a_full_session_table_is_503_and_forgets_nobody(start_server: Callable[..., Running], fakes: Fakes,  # noqa: F811
                                                        tmp_path: Path) -> None:
    routing = _routing(tmp_path, {"providers": provider_section(fakes), "trace": {"sink": "memory"},
                                  "budgets": {"max_sessions": 2, "session_steps": 3}})
    server = start_server(skills=SKILLS, model_routing=routing)
    balance = {"skill": "balance", "params": {}}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for session in ("a", "a", "b"):
            assert client.post("/v1/dispatch", json={"session_id": session, **balance}).status_code == 200
        r = client.post("/v1/dispatch", json={"session_id": "c", **balance})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "86400"  # when the longest-idle session ends (session_ttl_s)
        assert r.json()["error"] == "SessionsFull" and "budgets.max_sessions=2" in r.json()["detail"]
        # The live sessions keep their usage: a's third step is its last.
        assert client.post("/v1/dispatch", json={"session_id": "a", **balance}).status_code == 200
        over = client.post("/v1/dispatch", json={"session_id": "a", **balance})
        assert over.status_code == 429 and over.json()["budget"] == "session_steps"
    with RouterClient(server.url, retries=3) as router_client:
        with pytest.raises(ServiceDispatchError) as info:  # named, with when to come back; not waited for
            router_client.dispatch("d", skill="balance", params={})
    assert (info.value.status, info.value.error, info.value.retry_after) == (503, "SessionsFull", 86_400)
