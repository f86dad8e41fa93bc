"""Approvals need their own credential: the approver key, distinct from the service key.

Over a real server, a ``writes`` skill whose handler runs are counted: the service key gets 403 and
the handler does not run; the approver key runs it once; a missing or wrong key gets 401. A service
with a ``writes`` skill and no approver key refuses to start unless self-approval is allowed (then
logged). The trace keeps who approved and when.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from router import Router
from router._cli import main
from router._client import AsyncRouterClient, RouterClient
from router.dispatch import SkillContext, SkillRegistry, read_jsonl
from router.errors import ConfigError, ServiceAuthError
from router.service import ServeConfig, build_server
from tests.dispatch.conftest import Fakes, anyio_backend, fakes, provider_section  # noqa: F401 - fixtures
from tests.service.conftest import Running

SKILLS = "tests.service.test_approver:registry"
SERVICE_ENV, APPROVER_ENV = "ROUTER_TEST_SERVICE_KEY", "ROUTER_TEST_APPROVER_KEY"
SERVICE_KEY, APPROVER_KEY = "service-s3cret", "approver-s3cret"
RUNS: list[str | None] = []  # the approval id of each run of the `pay` handler


class PayParams(BaseModel):
    amount: int


def registry() -> SkillRegistry:
    reg = SkillRegistry()

    @reg.skill("pay", params=PayParams, writes=True, description="Pay someone.")
    async def pay(p: PayParams, ctx: SkillContext) -> dict[str, object]:
        RUNS.append(ctx.approval_id)
        return {"paid": p.amount}

    return reg


def reads_only() -> SkillRegistry:
    reg = SkillRegistry()

    @reg.skill("look", params=PayParams, description="Look at an amount.")
    async def look(p: PayParams, ctx: SkillContext) -> dict[str, object]:
        return {"seen": p.amount}

    return reg


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SERVICE_ENV, SERVICE_KEY)
    monkeypatch.setenv(APPROVER_ENV, APPROVER_KEY)
    RUNS.clear()
    yield


@pytest.fixture
def routing_file(fakes: Fakes, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump({"providers": provider_section(fakes), "retry": {"max_retries": 0},
                                    "trace": {"sink": "jsonl", "path": str(tmp_path / "trace.jsonl")}}))
    return path


@pytest.fixture
def serve(start_server: Callable[..., Running], routing_file: Path) -> Callable[..., Running]:
    def start(**options: Any) -> Running:
        options = {"skills": SKILLS, "model_routing": str(routing_file), **options}
        return start_server(**options)

    return start


def pending(client: httpx.Client, headers: dict[str, str]) -> str:
    r = client.post("/v1/dispatch", json={"session_id": "u", "skill": "pay", "params": {"amount": 5}},
                    headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
    return str(r.json()["approval_id"])


def skill_records(routing_file: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(routing_file.parent / "trace.jsonl") if r["kind"] == "skill"]


def test_the_service_key_cannot_approve_and_the_approver_key_can(serve: Callable[..., Running],
                                                                 routing_file: Path) -> None:
    server = serve(api_key_env=SERVICE_ENV, approver_key_env=APPROVER_ENV)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        approval = pending(client, bearer(SERVICE_KEY))
        r = client.post(f"/v1/approvals/{approval}/approve", headers=bearer(SERVICE_KEY))
        assert r.status_code == 403
        assert r.json() == {"detail": f"approving needs the approver key (${APPROVER_ENV}), not the service key "
                                      f"(${SERVICE_ENV})"}
        for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {APPROVER_KEY}"}):
            r = client.post(f"/v1/approvals/{approval}/approve", headers=headers)
            assert r.status_code == 401 and APPROVER_ENV in r.json()["detail"]
        assert RUNS == []  # the skill did not run
        # The approver key is not the service key either: it approves, and does nothing else.
        assert client.post("/v1/dispatch", json={"session_id": "u", "skill": "pay", "params": {"amount": 1}},
                           headers=bearer(APPROVER_KEY)).status_code == 401
        done = client.post(f"/v1/approvals/{approval}/approve", headers=bearer(APPROVER_KEY))
        assert done.status_code == 200 and done.json()["result"] == {"paid": 5}
        assert RUNS == [approval]
        assert client.post(f"/v1/approvals/{approval}/approve", headers=bearer(APPROVER_KEY)).status_code == 404
        assert RUNS == [approval]

        dropped = pending(client, bearer(SERVICE_KEY))
        assert client.post(f"/v1/approvals/{dropped}/reject", headers=bearer(SERVICE_KEY)).status_code == 403
        r = client.post(f"/v1/approvals/{dropped}/reject", headers=bearer(APPROVER_KEY))
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        metrics = client.get("/metrics").text
    assert 'router_rejected_total{limit="approver_key"} 2.0' in metrics
    server.stop()  # the trace file is complete

    records = {(r["status"], r.get("approval_id")): r for r in skill_records(routing_file)}
    for key in (("ok", approval), ("rejected", dropped)):
        record = records[key]
        assert record["approved_by"] == f"approver_key:{APPROVER_ENV}"
        when = datetime.fromisoformat(record["approved_at"])
        assert when.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - when) < timedelta(minutes=5)
    assert "approved_by" not in records[("pending_approval", approval)]


def test_an_approver_needs_no_service_key(serve: Callable[..., Running]) -> None:
    server = serve(approver_key_env=APPROVER_ENV)  # the service itself is open
    with httpx.Client(base_url=server.url, timeout=30) as client:
        approval = pending(client, {})
        assert client.post(f"/v1/approvals/{approval}/approve").status_code == 401
        assert client.post(f"/v1/approvals/{approval}/approve", headers=bearer(APPROVER_KEY)).status_code == 200
    assert RUNS == [approval]


def test_a_writes_skill_without_an_approver_key_is_refused_at_start(routing_file: Path, mini_index: Path) -> None:
    config = ServeConfig(index=str(mini_index), skills=SKILLS, model_routing=str(routing_file),
                         api_key_env=SERVICE_ENV)
    with pytest.raises(ConfigError) as caught:
        build_server(config, Router.load(mini_index))
    message = str(caught.value)
    assert "pay" in message and "--approver-key-env" in message and "--allow-self-approval on" in message
    assert "the service key" in message
    # A registry without writes skills has nothing to approve: it starts without one.
    build_server(config.model_copy(update={"skills": "tests.service.test_approver:reads_only"}),
                 Router.load(mini_index))


def test_router_serve_refuses_without_the_approver_key(routing_file: Path, mini_index: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--index", str(mini_index), "--encoder-threads", "1", "--skills", SKILLS,
                 "--model-routing", str(routing_file)])
    assert code == 1
    err = capsys.readouterr().err
    assert "router: error:" in err and "no approver key is set" in err and "anyone (no --api-key-env" in err


@pytest.mark.parametrize("value, needle", [(SERVICE_KEY, "equals the service key"),
                                           ("", "that environment variable is empty")])
def test_an_approver_key_equal_to_the_service_key_or_empty_is_refused(
        routing_file: Path, mini_index: Path, monkeypatch: pytest.MonkeyPatch, value: str, needle: str) -> None:
    monkeypatch.setenv(APPROVER_ENV, value)
    config = ServeConfig(index=str(mini_index), skills=SKILLS, model_routing=str(routing_file),
                         api_key_env=SERVICE_ENV, approver_key_env=APPROVER_ENV)
    with pytest.raises(ConfigError, match=needle):
        build_server(config, Router.load(mini_index))


def test_self_approval_when_allowed_is_logged_and_traced(serve: Callable[..., Running], routing_file: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="router.service"):
        server = serve(api_key_env=SERVICE_ENV, allow_self_approval=True)
    assert "--allow-self-approval on: the service key approve(s) the writes of pay" in caplog.text
    with httpx.Client(base_url=server.url, timeout=30, headers=bearer(SERVICE_KEY)) as client:
        approval = pending(client, {})
        assert client.post(f"/v1/approvals/{approval}/approve").status_code == 200
    assert RUNS == [approval]
    server.stop()
    (record,) = [r for r in skill_records(routing_file) if r["status"] == "ok"]
    assert record["approved_by"] == f"service_key:{SERVICE_ENV}"


def test_the_client_sends_the_approver_key_to_approve(serve: Callable[..., Running]) -> None:
    server = serve(api_key_env=SERVICE_ENV, approver_key_env=APPROVER_ENV)
    with RouterClient(server.url, api_key_env=SERVICE_ENV, approver_key_env=None) as agent:
        approval = agent.dispatch("u", skill="pay", params={"amount": 7}).approval_id
        assert approval is not None
        with pytest.raises(ServiceAuthError) as caught:
            agent.approve(approval)
        assert caught.value.status == 403 and "pass approver_key=" in str(caught.value)
    assert RUNS == []
    with RouterClient(server.url, api_key=None, api_key_env=None, approver_key=APPROVER_KEY) as approver:
        assert approver.approve(approval).result == {"paid": 7}
    assert RUNS == [approval]


@pytest.mark.anyio
async def test_the_async_client_reads_the_approver_key_from_its_variable(serve: Callable[..., Running]) -> None:
    server = serve(api_key_env=SERVICE_ENV, approver_key_env=APPROVER_ENV)
    async with AsyncRouterClient(server.url, api_key_env=SERVICE_ENV, approver_key_env=APPROVER_ENV) as client:
        reply = await client.dispatch("u", skill="pay", params={"amount": 3})
        assert reply.approval_id is not None
        assert (await client.reject(reply.approval_id))["status"] == "rejected"
    assert RUNS == []
