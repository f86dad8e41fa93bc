"""POST /v1/dispatch and the approval/session routes over real uvicorn, with loopback providers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.dispatch.conftest import Fakes, anyio_backend, fakes, provider_section  # noqa: F401 - fixtures
from tests.service.conftest import Running

SKILLS = "router.dispatch.demo:registry"


@pytest.fixture
def dispatch_client(start_server: Callable[..., Running], fakes: Fakes,  # noqa: F811 - the fixture
                    tmp_path: Path, skills_index: Path) -> Iterator[Callable[..., httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(**routing: Any) -> httpx.Client:
        path = tmp_path / f"routing-{len(clients)}.yaml"
        path.write_text(yaml.safe_dump({"providers": provider_section(fakes), "trace": {"sink": "memory"},
                                        "retry": {"max_retries": 0}, **routing}))
        server = start_server(skills=SKILLS, model_routing=str(path), index=skills_index)
        client = httpx.Client(base_url=server.url, timeout=30)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def test_classify_extract_approve(dispatch_client: Callable[..., httpx.Client], fakes: Fakes) -> None:  # noqa: F811
    fakes.openai.script("send 20 dollars to sam", '{"amount": 20, "to_account": "sam"}')
    client = dispatch_client()
    r = client.post("/v1/dispatch", json={"session_id": "u1", "text": "send 20 dollars to sam"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"]["intent"] == "transfer" and body["skill"] == "transfer"
    assert body["status"] == "pending_approval" and body["params"]["amount"] == 20
    assert body["calls"][0]["provider"] == "openai" and body["cost_usd"] > 0

    done = client.post(f"/v1/approvals/{body['approval_id']}/approve")
    assert done.status_code == 200 and done.json()["result"]["sent"] == 20
    again = client.post(f"/v1/approvals/{body['approval_id']}/approve")
    assert again.status_code == 404 and again.json()["error"] == "ApprovalError"

    session = client.get("/v1/sessions/u1").json()
    assert session["steps"] == 1 and session["calls"] == 1 and session["tokens"] == body["tokens"]
    metrics = client.get("/metrics").text
    assert 'router_dispatch_total{status="pending_approval"} 1.0' in metrics


def test_reject_an_approval(dispatch_client: Callable[..., httpx.Client]) -> None:
    client = dispatch_client()
    body = client.post("/v1/dispatch", json={"session_id": "u", "skill": "transfer",
                                             "params": {"amount": 5, "to_account": "ann"}}).json()
    assert client.post(f"/v1/approvals/{body['approval_id']}/reject").json()["status"] == "rejected"
    assert client.post(f"/v1/approvals/{body['approval_id']}/approve").status_code == 404


def test_intent_without_a_skill_and_out_of_scope(dispatch_client: Callable[..., httpx.Client]) -> None:
    client = dispatch_client()
    body = client.post("/v1/dispatch", json={"session_id": "u", "text": "what's the forecast like for tampa"}).json()
    assert body["status"] == "no_skill" and body["decision"]["intent"] == "weather"
    assert "no registered skill" in body["note"]


@pytest.mark.parametrize("payload, status, error", [
    ({"session_id": "u", "skill": "balance", "params": {"account": "gold"}}, 422, "InvalidParameters"),
    ({"session_id": "u", "skill": "rm_rf", "params": {}}, 403, "SkillNotAllowed"),
])
def test_dispatch_errors_map_to_status_codes(dispatch_client: Callable[..., httpx.Client], payload: dict[str, Any],
                                             status: int, error: str) -> None:
    r = dispatch_client().post("/v1/dispatch", json=payload)
    assert r.status_code == status and r.json()["error"] == error


def test_invalid_requests_name_the_field(dispatch_client: Callable[..., httpx.Client]) -> None:
    client = dispatch_client()
    r = client.post("/v1/dispatch", json={"text": "hi"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "session_id"]
    r = client.post("/v1/dispatch", json={"session_id": "u", "skill": "balance"})
    assert r.status_code == 422 and "give `text`, or both `skill` and `params`" in r.text
    r = client.post("/v1/dispatch", json={"session_id": "u", "text": "x" * 4001})
    assert r.status_code == 422 and "4000" in r.text


def test_budget_exceeded_is_429_naming_the_budget(dispatch_client: Callable[..., httpx.Client]) -> None:
    client = dispatch_client(budgets={"session_steps": 1})
    ok = client.post("/v1/dispatch", json={"session_id": "u", "skill": "balance", "params": {}})
    assert ok.status_code == 200 and ok.json()["result"]["balance"] == 1200.0
    r = client.post("/v1/dispatch", json={"session_id": "u", "skill": "balance", "params": {}})
    assert r.status_code == 429
    assert r.json() | {"detail": None} == {"detail": None, "error": "BudgetExceeded", "budget": "session_steps",
                                           "limit": 1, "used": 1}


def test_every_provider_down_is_502(dispatch_client: Callable[..., httpx.Client], fakes: Fakes) -> None:  # noqa: F811
    for server in fakes.all():
        server.always("500")
    r = dispatch_client().post("/v1/dispatch", json={"session_id": "u", "skill": "timer", "text": "timer 5 min"})
    assert r.status_code == 502 and r.json()["reason"] == "fallbacks_exhausted"
    assert "openai/gpt-5.4-nano: http_500" in r.json()["detail"]


def test_dispatch_off_by_default(client: httpx.Client) -> None:
    r = client.post("/v1/dispatch", json={"session_id": "u", "text": "hi"})
    assert r.status_code == 404 and "--skills" in r.json()["detail"]
    assert "/v1/dispatch" not in client.get("/openapi.json").json()["paths"]


def test_the_decisions_skill_is_what_runs_and_dispatch_routes_have_their_own_metric_label(
        dispatch_client: Callable[..., httpx.Client], fakes: Fakes) -> None:  # noqa: F811
    client = dispatch_client()
    # skills_index sets `skill: balance` on the balance intent: the Decision's skill is the one answer.
    body = client.post("/v1/dispatch", json={"session_id": "m", "text": "what is my checking balance"}).json()
    assert body["decision"]["intent"] == "balance" and body["decision"]["skill"] == "balance"
    assert body["skill"] == "balance" and body["status"] == "ok"
    client.get("/v1/sessions/m")
    text = client.get("/metrics").text
    assert 'router_requests_total{endpoint="/v1/dispatch",status="200"} 1.0' in text
    assert 'router_requests_total{endpoint="/v1/sessions/{session_id}",status="200"} 1.0' in text
    assert 'endpoint="other"' not in text


def test_the_model_routing_file_does_no_intent_routing() -> None:
    from router.dispatch import model_routing_from_dict
    from router.errors import ConfigError

    with pytest.raises(ConfigError, match="intents"):
        model_routing_from_dict({"intents": {"balance": "balance"}})


def test_the_server_path_starts_no_private_event_loop(start_server: Callable[..., Running], fakes: Fakes,  # noqa: F811
                                                      tmp_path: Path, skills_index: Path) -> None:
    # Tier 2 and the dispatcher both serve over HTTP, and their calls run on uvicorn's own loop: the
    # sync bridge (router/_sync.py, the only other event loop the package starts) never starts.
    fakes.openai.script("send 20 dollars to sam", '{"amount": 20, "to_account": "sam"}')
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump({"providers": provider_section(fakes), "trace": {"sink": "memory"},
                                    "retry": {"max_retries": 0}}))
    server = start_server(llm={"backends": [{"backend": "memory"}]}, skills=SKILLS, model_routing=str(path),
                          index=skills_index)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        settled = client.post("/v1/classify", json={"text": "clock"}).json()["decisions"][0]
        assert settled["tier"] == "llm" and settled["llm"]["backend"] == "memory"
        dispatched = client.post("/v1/dispatch", json={"session_id": "u1", "text": "send 20 dollars to sam"})
        assert dispatched.status_code == 200 and dispatched.json()["calls"][0]["provider"] == "openai"
    dispatcher = server.server.config.app.state.dispatch.dispatcher
    assert not server.service.router._bridge.running and not dispatcher._bridge.running
