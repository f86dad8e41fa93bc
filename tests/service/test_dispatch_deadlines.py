"""The request timeout never cuts a dispatch in half, and approvals cannot be flooded: a real
`router serve` process (or a real uvicorn server) under a real HTTP client, with loopback providers.

- A model-routing file whose dispatch budget cannot hold its handler is refused at start, naming both values.
- An extraction model that takes 15 s with a 10 s request timeout: the chain is cut to fit, and the
  fallback answers; the answering calls are metered and traced.
- An approved `writes` skill slower than request_timeout_s answers; a second approve while it runs
  gets 409 and a later one 404; a client that gives up, or a server that stops, does not cut it:
  the trace holds its outcome and it ran once.
- A session past its pending-approval cap gets 429 with Retry-After; another session still gets its own.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.dispatch import read_jsonl
from router.testing import ServeProcess, free_port
from tests.dispatch.conftest import Fakes, fakes, provider_section  # noqa: F401 - the fixture
from tests.service.conftest import Running

SKILLS = "tests.service.deadline_skills:registry"


def _model(provider: str, model: str, timeout_s: float) -> dict[str, Any]:
    return {"provider": provider, "model": model, "timeout_s": timeout_s, "max_tokens": 128}


def _routing(tmp_path: Path, fakes: Fakes, **extra: Any) -> Path:  # noqa: F811 - the fixture's value
    """Extraction on openai (20 s) then gemini (20 s); the trace in tmp_path/trace.jsonl."""
    nano, flash = _model("openai", "gpt-5.4-nano", 20), _model("gemini", "gemini-2.5-flash", 20)
    haiku = _model("anthropic", "claude-haiku-4-5", 20)
    data = {"providers": provider_section(fakes), "trace": {"sink": "jsonl", "path": str(tmp_path / "trace.jsonl")},
            "defaults": {"routing": haiku, "extraction": nano, "formatting": haiku, "diagnostic": haiku},
            "fallbacks": {"extraction": [flash], "formatting": [], "routing": [], "diagnostic": []}, **extra}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _trace(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    path = tmp_path / "trace.jsonl"
    return [r for r in read_jsonl(path) if r["kind"] == kind] if path.exists() else []


def _until(check: Callable[[], bool], within_s: float = 30.0) -> None:
    """Wait for the server to get somewhere (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture
def serve(mini_index: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(routing: Path, *args: str) -> ServeProcess:
        server = ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--skills", SKILLS,
                              "--allow-self-approval", "on", "--model-routing", str(routing), *args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _pending(client: httpx.Client, marker: Path, seconds: float, session: str = "u") -> str:
    r = client.post("/v1/dispatch", json={"session_id": session, "skill": "slow_pay",
                                          "params": {"seconds": seconds, "marker": str(marker)}})
    assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
    return str(r.json()["approval_id"])


def _marks(marker: Path) -> list[str]:
    return marker.read_text().split("\n")[:-1] if marker.exists() else []


# -- item 1: one consistent budget -------------------------------------------------------------------------
def test_a_budget_that_cannot_hold_the_handler_is_refused_at_start(
        mini_index: Path, fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    routing = _routing(tmp_path, fakes, dispatch_timeout_s=10)  # handler_timeout_s keeps its 30 s
    done = subprocess.run([sys.executable, "-m", "router._cli", "serve", "--port", str(free_port()), "--index",
                           str(mini_index), "--skills", SKILLS, "--model-routing", str(routing),
                           "--request-timeout-s", "10"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # a RouterError: refused before serving
    assert "router: error: dispatch_timeout_s=10 is too short" in done.stderr and "handler_timeout_s=30" in done.stderr


def test_a_15s_model_with_a_10s_request_timeout_falls_back(
        serve: Callable[..., ServeProcess], fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    """The issue's reproduction: four dispatches of `balance` whose extraction model takes 15 s."""
    fakes.openai.always("slow", seconds=15)
    # 10 s: the handler keeps 2 s, openai and gemini (20 s each) share 8 s: 4 s each.
    routing = _routing(tmp_path, fakes, dispatch_timeout_s=10, handler_timeout_s=2)
    server = serve(routing, "--request-timeout-s", "10")
    with httpx.Client(base_url=server.url, timeout=60) as client, concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/dispatch", json={
            "session_id": "s1", "skill": "balance", "text": "what is my balance"}), range(4)))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert all(b["fallback_taken"] and [c["provider"] for c in b["calls"]] == ["gemini"] for b in bodies)
        session = client.get("/v1/sessions/s1").json()
    # all eight requests the providers received are metered: the four cut ones at their reserved worst case
    assert session["calls"] == 8 and session["tokens"] == sum(b["tokens"] for b in bodies) > 0
    assert len(fakes.openai.requests) == 4 and len(fakes.gemini.requests) == 4
    calls = _trace(tmp_path, "call")
    cut = [c for c in calls if c["provider"] == "openai"]
    assert [c["status"] for c in cut] == ["timeout"] * 4 and all(3 < c["timeout_s"] <= 4 for c in cut)
    assert [c["status"] for c in calls if c["provider"] == "gemini"] == ["ok"] * 4
    assert [s["status"] for s in _trace(tmp_path, "skill")] == ["ok"] * 4


def test_an_approval_slower_than_the_request_timeout_runs_once_and_answers(
        serve: Callable[..., ServeProcess], fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    server = serve(_routing(tmp_path, fakes), "--request-timeout-s", "1")
    marker = tmp_path / "marker"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        approval_id = _pending(client, marker, seconds=3)
        first: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: first.update(r=client.post(f"/v1/approvals/{approval_id}/approve")))
        thread.start()
        _until(lambda: bool(_marks(marker)))  # its handler is running
        again = client.post(f"/v1/approvals/{approval_id}/approve")
        assert again.status_code == 409 and again.json()["error"] == "ApprovalRunning"
        reject = client.post(f"/v1/approvals/{approval_id}/reject")
        assert reject.status_code == 409
        thread.join(60)
        assert first["r"].status_code == 200, first["r"].text  # 3 s, past request_timeout_s=1: not cut
        assert first["r"].json()["result"] == {"paid": True, "slept": 3}
        used = client.post(f"/v1/approvals/{approval_id}/approve")
        assert used.status_code == 404 and "already used" in used.json()["detail"]
    assert _marks(marker) == [f"start {approval_id}", f"done {approval_id}"]
    outcome = _trace(tmp_path, "skill")[-1]
    assert (outcome["status"], outcome["handler"], outcome["approval_id"]) == ("ok", "ok", approval_id)


def test_a_client_that_gives_up_does_not_cut_the_approval(
        serve: Callable[..., ServeProcess], fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    server = serve(_routing(tmp_path, fakes), "--request-timeout-s", "1")
    marker = tmp_path / "marker"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        approval_id = _pending(client, marker, seconds=2)
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"/v1/approvals/{approval_id}/approve", timeout=0.5)
        _until(lambda: any(r.get("approval_id") == approval_id and r["status"] != "pending_approval"
                           for r in _trace(tmp_path, "skill")))
        used = client.post(f"/v1/approvals/{approval_id}/approve")
        assert used.status_code == 404
    outcome = _trace(tmp_path, "skill")[-1]
    assert (outcome["status"], outcome["handler"]) == ("ok", "ok")
    assert _marks(marker) == [f"start {approval_id}", f"done {approval_id}"]


def test_a_server_stopping_mid_handler_lets_it_finish_with_its_record(
        start_server: Callable[..., Running], fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    # shutdown_grace_s=0: uvicorn cancels the request at once; the dispatcher still lets the step end.
    server = start_server(skills=SKILLS, model_routing=str(_routing(tmp_path, fakes)), shutdown_grace_s=0,
                          drain_delay_s=0)
    marker = tmp_path / "marker"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        approval_id = _pending(client, marker, seconds=1.5)

        def approve() -> None:
            try:
                client.post(f"/v1/approvals/{approval_id}/approve")
            except httpx.HTTPError:
                pass  # the server went away without answering: what the client sees of a stop

        thread = threading.Thread(target=approve)
        thread.start()
        _until(lambda: bool(_marks(marker)))
        server.stop()
        thread.join(30)
    assert _marks(marker) == [f"start {approval_id}", f"done {approval_id}"]
    outcome = _trace(tmp_path, "skill")[-1]
    assert (outcome["status"], outcome["handler"], outcome["approval_id"]) == ("ok", "ok", approval_id)


# -- item 3: approvals cannot be flooded -------------------------------------------------------------------
def test_a_session_past_its_pending_cap_gets_429_and_others_still_get_theirs(
        serve: Callable[..., ServeProcess], fakes: Fakes, tmp_path: Path) -> None:  # noqa: F811
    server = serve(_routing(tmp_path, fakes, max_pending_approvals_per_session=2))
    marker = tmp_path / "marker"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):
            _pending(client, marker, seconds=0, session="flood")
        refused = client.post("/v1/dispatch", json={"session_id": "flood", "skill": "slow_pay",
                                                    "params": {"seconds": 0, "marker": str(marker)}})
        assert refused.status_code == 429
        body = refused.json()
        assert (body["error"], body["limit_name"], body["limit"]) == (
            "TooManyApprovals", "max_pending_approvals_per_session", 2)
        assert "session 'flood'" in body["detail"] and 1 <= int(refused.headers["retry-after"]) <= 900
        _pending(client, marker, seconds=0, session="other")  # another session still gets its own
        assert client.get("/v1/sessions/flood").json()["steps"] == 2  # the refusal counted no step
    assert _marks(marker) == []  # nothing pending ever ran
