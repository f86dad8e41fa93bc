"""Learning over HTTP: POST /v1/feedback, the review queue, GET /v1/learning, the client and the CLI.

Real uvicorn servers over the mini index, each with a learned-examples log of its own under tmp_path (so
no test teaches the session's index anything). The learner's worker learns off the request path: a test
waits for it by polling GET /v1/learning, never by sleeping a fixed time. Servers without an API key take
feedback only with --feedback on (the ``serve`` fixture's default); the trust rules (who may teach as a
person, the approver key, feedback off without an API key) have their own section.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import Router
from router._cli import build_parser, main
from router._client import AsyncRouterClient, RouterClient
from router.errors import ServiceAuthError, ServiceError, ServiceInputError, ServiceUnavailable
from router.learn import LearningConfig
from router.learn._learner import in_reservoir
from router.llm import LLMConfig
from router.service import ServeConfig, build_server
from router.service._service import load_router, protected_intents, serving_learning
from router.service._state import learn_state
from router.testing import free_port
from tests.service.conftest import Running

KEY_ENV, KEY = "ROUTER_TEST_LEARN_KEY", "learn-s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
APPROVER_ENV, APPROVER_KEY = "ROUTER_TEST_LEARN_APPROVER", "approver-s3cret"
APPROVER = {"Authorization": f"Bearer {APPROVER_KEY}"}
SHARE = LearningConfig().reservoir_share
# Texts the mini index does not know (out of scope before any feedback). A test teaches the first ones that
# the held-out reservoir leaves to training: a held-out item is logged but never learned, by design.
NOVEL = ["please frobnicate my gizmo", "zorp the blickets quickly", "calibrate the flux capacitor now",
         "defragment the llama stable", "reticulate my splines today", "polish the quantum teapot",
         "untangle the yak fur rope", "recharge the moon crystals", "feed the office cactus twice",
         "launch the paper rocket at noon", "tune my theremin for tonight", "wax the bobsled runners"]
# Texts the mini index is unsure of: tier 2 settles them (with the in-memory backend, by its first label).
UNSURE = ["clock", "ticket", "account", "trip", "flight", "cash", "plane"]
EXAMPLE = "what is my checking account balance at chase"  # a built example of `balance`


def trainable(n: int, texts: list[str] = NOVEL) -> list[str]:
    chosen = [t for t in texts if not in_reservoir(t, SHARE)][:n]
    assert len(chosen) == n, "not enough texts outside the held-out reservoir"
    return chosen


@pytest.fixture
def serve(mini_index: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a server: ``router`` (a Router loaded here) or, without one, the Router `router serve` loads
    (``load_router``: the index's learning config with the serve flags over it). The log is under tmp_path.
    Without an API key, ``--feedback on`` unless the test says otherwise (``feedback=None``: the default)."""
    running: list[Running] = []

    def start(router: Router | None = None, **options: Any) -> Running:
        options.setdefault("index", str(mini_index))
        options.setdefault("learn_log", str(tmp_path / "learned.jsonl"))
        if not options.get("api_key_env"):
            options.setdefault("feedback", True)
        config = ServeConfig(port=free_port(), encoder_threads=1, **options)
        r = Running(build_server(config, router), config.port)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()


def wait_learned(url: str, n: int, headers: dict[str, str] | None = None, timeout: float = 60) -> dict[str, Any]:
    """GET /v1/learning until ``n`` examples are learned and all of them served. (``n_unserved`` alone does not
    say it: an item counts there once the worker has read it from the log, a moment after it was taken.)"""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(f"{url}/v1/learning", headers=headers, timeout=10).json()
        if stats["n_learned"] >= n and stats["n_unserved"] == 0 and stats["applies"] > 0:
            return dict(stats)
        assert time.monotonic() < deadline, f"not learned within {timeout}s: {stats}"
        time.sleep(0.05)


def intent_of(url: str, text: str, headers: dict[str, str] | None = None) -> tuple[str | None, bool]:
    """(intent, out_of_scope) of one text."""
    d = httpx.post(f"{url}/v1/classify", json={"text": text}, headers=headers, timeout=30).json()["decisions"][0]
    return d["intent"], d["out_of_scope"]


def feedback(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json=body, headers=headers, timeout=30)


# -- feedback in, learned, served --------------------------------------------------------------------
def test_feedback_is_taken_then_served_and_counted(serve: Callable[..., Running], tmp_path: Path) -> None:
    text, other = trainable(2)
    server = serve()
    assert intent_of(server.url, text) == (None, True)  # out of scope before
    r = feedback(server.url, {"text": text, "intent": "weather", "decision_id": "d-1"})
    assert r.status_code == 202, r.text
    item = r.json()
    assert item["status"] == "queued" and item["intent"] == "weather" and item["source"] == "human"
    assert item["decision_id"] == "d-1" and item["id"]
    r = feedback(server.url, {"text": other, "out_of_scope": True, "source": "llm"})
    assert r.status_code == 202 and r.json()["out_of_scope"] is True and r.json()["intent"] is None
    stats = wait_learned(server.url, 2)
    assert stats["n_learned"] == 2 and stats["n_out_of_scope"] == 1 and stats["last_apply"]["swapped"]
    assert stats["log"] == {**stats["log"], "backend": "file", "path": str(tmp_path / "learned.jsonl")}
    assert intent_of(server.url, text) == ("weather", False)
    # The log beside holds what was taken, with the Decision it corrects.
    entries = [json.loads(line) for line in (tmp_path / "learned.jsonl").read_text().splitlines()]
    assert [(e["text"], e.get("intent")) for e in entries] == [(text, "weather"), (other, None)]
    assert entries[0]["decision_id"] == "d-1"
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["learning"]["n_learned"] == 2 and ready["learning"]["mode"] == "off"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'router_feedback_total{outcome="queued",source="human"} 1.0' in metrics
    assert 'router_feedback_total{outcome="queued",source="llm"} 1.0' in metrics
    assert re.search(r'^router_learn_applies_total\{outcome="swapped"\} [1-9]', metrics, re.MULTILINE)
    assert "router_learned_examples 2.0" in metrics
    assert re.search(r"^router_learn_apply_seconds_count [1-9]", metrics, re.MULTILINE)


def test_the_same_example_twice_is_a_duplicate_and_not_logged_again(serve: Callable[..., Running],
                                                                     tmp_path: Path) -> None:
    server = serve()
    r = feedback(server.url, {"text": EXAMPLE.upper(), "intent": "balance"})  # normalised: an example already
    assert r.status_code == 202 and r.json()["status"] == "duplicate" and r.json()["id"] == ""
    assert not (tmp_path / "learned.jsonl").exists() or not (tmp_path / "learned.jsonl").read_text()


# -- bad feedback: each status and its message ---------------------------------------------------------
def test_a_contradiction_is_409_naming_both_and_a_human_override_is_taken(serve: Callable[..., Running]) -> None:
    server = serve()
    r = feedback(server.url, {"text": EXAMPLE, "intent": "weather"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "FeedbackConflict" and body["existing"] == "balance" and body["requested"] == "weather"
    assert "'balance'" in body["detail"] and "'weather'" in body["detail"] and "override" in body["detail"]
    r = feedback(server.url, {"text": EXAMPLE, "intent": "weather", "source": "llm", "override": True})
    assert r.status_code == 403 and "source='human' only" in r.json()["detail"]
    r = feedback(server.url, {"text": EXAMPLE, "intent": "weather", "override": True})
    assert r.status_code == 202 and r.json()["status"] in ("queued", "held_out"), r.text
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'router_feedback_total{outcome="conflict",source="human"} 1.0' in metrics
    assert 'router_feedback_total{outcome="not_allowed",source="llm"} 1.0' in metrics


def test_an_unknown_intent_is_422_naming_it(serve: Callable[..., Running]) -> None:
    server = serve()
    r = feedback(server.url, {"text": "beam me up", "intent": "teleport"})
    assert r.status_code == 422
    assert r.json()["error"] == "UnknownIntent" and "'teleport'" in r.json()["detail"]
    assert 'router_feedback_total{outcome="unknown_intent",source="human"} 1.0' in httpx.get(
        f"{server.url}/metrics").text


@pytest.mark.parametrize(("body", "field", "needle"), [
    ({"text": "x" * 2001, "intent": "weather"}, "text", "at most 2000 characters"),
    ({"text": "   ", "intent": "weather"}, "text", "pattern"),
    ({"text": "hello there"}, "", "exactly one of 'intent' or 'out_of_scope'"),
    ({"text": "hello there", "intent": "weather", "out_of_scope": True}, "", "got both"),
    ({"text": "hello there", "intent": "weather", "source": "robot"}, "source", "'human' or 'llm'"),
    ({"text": "hello there", "intent": None, "out_of_scope": True}, "intent", "valid string"),
    ({"text": "hello there", "intent": "weather", "extra": 1}, "extra", "Extra inputs"),
    ({"text": "hello there", "intent": "weather", "override": 0}, "override", "valid boolean"),
])
def test_a_bad_body_is_422_naming_the_field(serve: Callable[..., Running], body: dict[str, Any], field: str,
                                            needle: str) -> None:
    server = serve()
    r = feedback(server.url, body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == (field or "body") and needle in e["msg"] for e in errors), errors
    assert 'outcome="invalid"' in httpx.get(f"{server.url}/metrics").text


def test_the_rate_limit_is_429_with_retry_after(serve: Callable[..., Running], mini_index: Path,
                                                 tmp_path: Path) -> None:
    learning = LearningConfig(max_per_minute=2, log=str(tmp_path / "rate.jsonl"))
    server = serve(Router.load(mini_index, learning=learning))
    texts = trainable(3)
    for text in texts[:2]:
        assert feedback(server.url, {"text": text, "out_of_scope": True}).status_code == 202
    r = feedback(server.url, {"text": texts[2], "out_of_scope": True})
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 60
    body = r.json()
    assert body["error"] == "FeedbackRateLimited" and body["source"] == "human" and body["limit"] == 2
    assert "learning.max_per_minute=2" in body["detail"]
    # Per source: an LLM's item still fits.
    assert feedback(server.url, {"text": texts[2], "out_of_scope": True, "source": "llm"}).status_code == 202


def test_unauthenticated_feedback_is_401_when_the_api_key_is_on(serve: Callable[..., Running],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = serve(api_key_env=KEY_ENV)
    text = trainable(1)[0]
    for path in ("/v1/learning", "/v1/review"):
        assert httpx.get(f"{server.url}{path}").status_code == 401
    r = feedback(server.url, {"text": text, "intent": "alarm"})
    assert r.status_code == 401 and "missing or wrong bearer token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = feedback(server.url, {"text": text, "intent": "alarm"}, {"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and KEY_ENV in r.json()["detail"]
    assert not (tmp_path / "learned.jsonl").exists()
    assert feedback(server.url, {"text": text, "intent": "alarm"}, AUTH).status_code == 202
    entry = json.loads((tmp_path / "learned.jsonl").read_text().splitlines()[0])
    assert entry["by"] == f"service_key:{KEY_ENV}"  # the credential, never its value


def test_a_writes_intent_learns_only_from_a_human(serve: Callable[..., Running], skills_index: Path,
                                                  tmp_path: Path) -> None:
    # The demo registry's `transfer` writes; the skills index maps its `transfer` intent to that skill.
    routing = tmp_path / "routing.yaml"
    routing.write_text(json.dumps({"trace": {"sink": "memory"}}))  # no trace file in the working directory
    server = serve(index=str(skills_index), skills="router.dispatch.demo:registry", allow_self_approval=True,
                   model_routing=str(routing))
    text = "shift fifty bucks over to my brother"
    r = feedback(server.url, {"text": text, "intent": "transfer", "source": "llm"})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "FeedbackNotAllowed" and "'transfer'" in r.json()["detail"]
    assert "source='human'" in r.json()["detail"]
    assert feedback(server.url, {"text": text, "intent": "balance", "source": "llm"}).status_code == 202
    r = feedback(server.url, {"text": "wire ten bucks to my sister", "intent": "transfer"})
    assert r.status_code == 202, r.text


def test_a_router_without_a_learner_answers_403_naming_the_flag(serve: Callable[..., Running],
                                                                mini_index: Path) -> None:
    server = serve(Router.load(mini_index, learning="off"))
    for r in (feedback(server.url, {"text": "hello there", "intent": "greeting"}),
              httpx.get(f"{server.url}/v1/learning"), httpx.get(f"{server.url}/v1/review")):
        assert r.status_code == 403 and "--feedback on" in r.json()["detail"], r.text
    assert "learning" not in httpx.get(f"{server.url}/readyz").json()


def test_feedback_off_is_403_naming_the_flag(serve: Callable[..., Running]) -> None:
    server = serve(feedback=False)
    r = feedback(server.url, {"text": "hello there", "intent": "greeting"})
    assert r.status_code == 403 and "--feedback on" in r.json()["detail"]


# -- review mode: tier 2's answers wait for a person ---------------------------------------------------
@pytest.fixture
def reviewing(serve: Callable[..., Running], mini_index: Path, tmp_path: Path) -> Running:
    """Tier 2 on (the in-memory backend: it answers the first label offered), learning.mode review."""
    llm = LLMConfig.model_validate({"gate": "on", "backends": [{"backend": "memory"}]})
    learning = LearningConfig(mode="review", min_llm_confidence=0.0, log=str(tmp_path / "review.jsonl"))
    return serve(Router.load(mini_index, llm=llm, learning=learning))


def escalate(url: str, text: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = httpx.post(f"{url}/v1/classify", json={"text": text}, headers=headers,
                                   timeout=30).json()["decisions"][0]
    assert d["tier"] == "llm" and d["intent"] is not None and not d["out_of_scope"], d
    return d


def wait_review(url: str, n: int, timeout: float = 60, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = httpx.get(f"{url}/v1/review", headers=headers, timeout=10).json()["items"]
        if len(items) >= n:
            return items
        assert time.monotonic() < deadline, f"{len(items)} review items within {timeout}s, wanted {n}"
        time.sleep(0.05)


def test_review_queues_tier_2_answers_then_approve_learns_and_reject_drops(reviewing: Running) -> None:
    url = reviewing.url
    first, second = trainable(2, UNSURE)
    decided = {text: escalate(url, text) for text in (first, second)}
    items = {item["text"]: item for item in wait_review(url, 2)}
    assert set(items) == {first, second}
    for text, item in items.items():
        assert item["intent"] == decided[text]["intent"] and item["decision_id"] == decided[text]["id"]
        assert item["decision_id"] and item["out_of_scope"] is False and item["confidence"] is not None
    assert httpx.get(f"{url}/v1/learning").json()["n_learned"] == 0  # queued for a person, not learned

    r = httpx.post(f"{url}/v1/review/{items[first]['id']}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["source"] == "human"
    assert r.json()["intent"] == decided[first]["intent"]
    wait_learned(url, 1)
    d = httpx.post(f"{url}/v1/classify", json={"text": first}).json()["decisions"][0]
    assert d["tier"] != "llm" and d["intent"] == decided[first]["intent"]  # learned: no escalation now

    r = httpx.post(f"{url}/v1/review/{items[second]['id']}/reject")
    assert r.status_code == 200 and r.json()["text"] == second and r.json()["id"] == items[second]["id"]
    assert httpx.get(f"{url}/v1/review").json() == {"items": [], "total": 0}
    assert httpx.get(f"{url}/v1/learning").json()["n_learned"] == 1
    for action in ("approve", "reject"):  # decided: gone
        r = httpx.post(f"{url}/v1/review/{items[second]['id']}/{action}")
        assert r.status_code == 404 and r.json()["error"] == "ReviewError" and "GET /v1/review" in r.json()["detail"]


# -- trust: from the credential, never from the body ------------------------------------------------------
@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(APPROVER_ENV, APPROVER_KEY)


def logged(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.usefixtures("keys")
def test_with_an_approver_key_only_it_teaches_as_a_person(serve: Callable[..., Running], tmp_path: Path) -> None:
    server = serve(api_key_env=KEY_ENV, approver_key_env=APPROVER_ENV)
    human, agent, person = trainable(3)
    # The service key with source human, given or by default: 403 naming the flag and what to send instead.
    for body in ({"text": human, "intent": "alarm"}, {"text": human, "intent": "alarm", "source": "human"}):
        r = feedback(server.url, body, AUTH)
        assert r.status_code == 403, r.text
        detail = r.json()["detail"]
        assert r.json()["error"] == "FeedbackNotAllowed" and "--approver-key-env" in detail
        assert f"${APPROVER_ENV}" in detail and '"source": "llm"' in detail and f"${KEY_ENV}" in detail
        assert ("(the default)" in detail) == ("source" not in body)
    # ... and override, whatever the source says.
    r = feedback(server.url, {"text": EXAMPLE, "intent": "weather", "override": True}, AUTH)
    assert r.status_code == 403 and "override=true needs the approver key" in r.json()["detail"]
    assert not logged(tmp_path / "learned.jsonl")
    # The service key as an agent; the approver key (no service key needed) as a person, override included.
    assert feedback(server.url, {"text": agent, "intent": "alarm", "source": "llm"}, AUTH).status_code == 202
    assert feedback(server.url, {"text": person, "intent": "alarm"}, APPROVER).status_code == 202
    r = feedback(server.url, {"text": EXAMPLE, "intent": "weather", "override": True}, APPROVER)
    assert r.status_code == 202, r.text
    by = {(e["text"], e.get("source", "human")): e.get("by") for e in logged(tmp_path / "learned.jsonl")}
    assert by == {(agent, "llm"): f"service_key:{KEY_ENV}", (person, "human"): f"approver_key:{APPROVER_ENV}",
                  (EXAMPLE, "human"): f"approver_key:{APPROVER_ENV}"}
    # The approver key opens the learning routes a person uses, and nothing else.
    assert httpx.get(f"{server.url}/v1/learning", headers=APPROVER).status_code == 200
    assert httpx.get(f"{server.url}/v1/review", headers=APPROVER).status_code == 200
    assert httpx.post(f"{server.url}/v1/classify", json={"text": "hi"}, headers=APPROVER).status_code == 401
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'router_feedback_total{outcome="not_allowed",source="human"} 3.0' in metrics


@pytest.mark.usefixtures("keys")
def test_with_an_approver_key_only_it_decides_reviews(serve: Callable[..., Running], mini_index: Path,
                                                      tmp_path: Path) -> None:
    llm = LLMConfig.model_validate({"gate": "on", "backends": [{"backend": "memory"}]})
    learning = LearningConfig(mode="review", min_llm_confidence=0.0, log=str(tmp_path / "review.jsonl"))
    server = serve(Router.load(mini_index, llm=llm, learning=learning), api_key_env=KEY_ENV,
                   approver_key_env=APPROVER_ENV)
    first, second = trainable(2, UNSURE)
    for text in (first, second):
        escalate(server.url, text, AUTH)
    items = {item["text"]: item["id"] for item in wait_review(server.url, 2, headers=AUTH)}
    for action in ("approve", "reject"):
        r = httpx.post(f"{server.url}/v1/review/{items[first]}/{action}", headers=AUTH)
        assert r.status_code == 403, r.text
        assert "--approver-key-env" in r.json()["detail"] and f"${APPROVER_ENV}" in r.json()["detail"]
        assert '"source": "llm"' in r.json()["detail"]
        assert httpx.post(f"{server.url}/v1/review/{items[first]}/{action}").status_code == 401
    assert len(wait_review(server.url, 2, headers=AUTH)) == 2  # nothing decided
    r = httpx.post(f"{server.url}/v1/review/{items[first]}/approve", headers=APPROVER)
    assert r.status_code == 200 and r.json()["source"] == "human", r.text
    assert httpx.post(f"{server.url}/v1/review/{items[second]}/reject", headers=APPROVER).status_code == 200
    decided = {e["op"]: e.get("by") for e in logged(tmp_path / "review.jsonl") if e["op"] != "review"}
    assert decided == {"learn": f"approver_key:{APPROVER_ENV}", "reject": f"approver_key:{APPROVER_ENV}"}
    assert 'router_rejected_total{limit="approver_key"} 2.0' in httpx.get(f"{server.url}/metrics").text


def test_without_an_approver_key_the_service_key_is_trusted_as_a_person(serve: Callable[..., Running],
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = serve(api_key_env=KEY_ENV)
    assert feedback(server.url, {"text": EXAMPLE, "intent": "weather", "override": True}, AUTH).status_code == 202
    assert [e.get("by") for e in logged(tmp_path / "learned.jsonl")] == [f"service_key:{KEY_ENV}"]


@pytest.mark.parametrize("flag", [None, False])  # --feedback auto (the default), --feedback off
def test_without_an_api_key_learning_is_off_by_default(serve: Callable[..., Running], tmp_path: Path,
                                                       flag: bool | None) -> None:
    server = serve(feedback=flag)
    text = trainable(1)[0]
    for r in (feedback(server.url, {"text": text, "intent": "alarm"}),
              feedback(server.url, {"text": text, "intent": "alarm", "source": "llm"}),
              httpx.get(f"{server.url}/v1/review"), httpx.get(f"{server.url}/v1/learning"),
              httpx.post(f"{server.url}/v1/review/some-id/approve"),
              httpx.post(f"{server.url}/v1/review/some-id/reject")):
        assert r.status_code == 403, r.text
        assert "--feedback on" in r.json()["detail"] and "--api-key-env" in r.json()["detail"]
    assert not logged(tmp_path / "learned.jsonl")
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] and ready["learning"]["feedback"] is False  # the learner says so too


def test_without_an_api_key_feedback_on_takes_anyone_and_warns(serve: Callable[..., Running], tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="router.service"):
        server = serve(feedback=True)
    assert "--feedback on without --api-key-env: anyone who reaches the port can teach the router" in caplog.text
    r = feedback(server.url, {"text": trainable(1)[0], "intent": "alarm"})
    assert r.status_code == 202, r.text
    assert [e.get("by") for e in logged(tmp_path / "learned.jsonl")] == [None]  # no credential


@pytest.mark.usefixtures("keys")
def test_the_client_sends_a_persons_word_with_the_approver_key(serve: Callable[..., Running]) -> None:
    server = serve(api_key_env=KEY_ENV, approver_key_env=APPROVER_ENV)
    human, agent = trainable(2)
    with RouterClient(server.url, api_key_env=KEY_ENV, approver_key_env=None) as client:
        assert client.feedback(agent, "alarm", source="llm")["status"] == "queued"
        with pytest.raises(ServiceAuthError) as refused:
            client.feedback(human, "alarm")
        assert refused.value.status == 403 and "pass approver_key=" in str(refused.value)
    with RouterClient(server.url, api_key_env=None, approver_key_env=APPROVER_ENV) as person:
        assert person.feedback(human, "alarm")["status"] == "queued"
        assert person.review()["total"] == 0 and person.learning()["mode"] == "off"


# -- the review list's limit, and the learner's figures off the event loop --------------------------------
def test_the_review_list_has_a_limit_and_a_total(serve: Callable[..., Running], mini_index: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    llm = LLMConfig.model_validate({"gate": "on", "backends": [{"backend": "memory"}]})
    learning = LearningConfig(mode="review", min_llm_confidence=0.0, log=str(tmp_path / "review.jsonl"))
    server = serve(Router.load(mini_index, llm=llm, learning=learning))
    for text in trainable(2, UNSURE):
        escalate(server.url, text)
    oldest = wait_review(server.url, 2)[0]
    r = httpx.get(f"{server.url}/v1/review", params={"limit": 1})
    assert r.status_code == 200 and r.json() == {"items": [oldest], "total": 2}
    for bad in (0, 10_001, "many"):
        r = httpx.get(f"{server.url}/v1/review", params={"limit": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"], r.text
    with RouterClient(server.url, api_key_env=None) as client:
        assert client.review(limit=1) == {"items": [oldest], "total": 2}
        with pytest.raises(ServiceInputError, match="limit"):
            client.review(limit=20_000)
    assert main(["review", "list", "--limit", "1", "--url", server.url]) == 0
    assert json.loads(capsys.readouterr().out) == {"items": [oldest], "total": 2}


def test_the_learners_figures_are_read_off_the_event_loop(serve: Callable[..., Running]) -> None:
    server = serve()
    learner = server.service.router.learning
    threads: list[threading.Thread] = []
    for name in ("stats", "pending_review"):
        method = getattr(learner, name)

        def recorded(method: Callable[[], Any] = method) -> Any:
            threads.append(threading.current_thread())
            return method()

        setattr(learner, name, recorded)
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/v1/learning").status_code == 200
    assert httpx.get(f"{server.url}/v1/review").status_code == 200
    assert len(threads) == 3 and server.thread not in threads  # the loop runs on the server's thread


def test_the_metrics_watch_applies_through_the_learners_hook(serve: Callable[..., Running]) -> None:
    server = serve()
    learner = server.service.router.learning
    assert "apply" not in vars(learner) and len(learner.on_apply) == 1  # a hook, not a replaced method
    server.service.metrics.watch_learner(learner)
    assert len(learner.on_apply) == 1  # watched once


# -- restart and reload: the log is replayed -------------------------------------------------------------
def test_a_restarted_server_still_serves_what_was_learned(serve: Callable[..., Running]) -> None:
    text = trainable(1)[0]
    first = serve()
    assert feedback(first.url, {"text": text, "intent": "translate"}).status_code == 202
    wait_learned(first.url, 1)
    first.stop()
    second = serve()  # the same log (learn_log under tmp_path)
    assert intent_of(second.url, text) == ("translate", False)
    stats = httpx.get(f"{second.url}/v1/learning").json()
    assert stats["n_learned"] == 1 and stats["n_unserved"] == 0


def test_after_a_reload_the_new_router_learns(serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = serve(api_key_env=KEY_ENV)
    before, after = trainable(2)
    assert feedback(server.url, {"text": before, "intent": "book_flight"}, AUTH).status_code == 202
    wait_learned(server.url, 1, AUTH)
    old = server.service.router.learning
    r = httpx.post(f"{server.url}/v1/admin/reload", headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    new = server.service.router.learning
    assert new is not None and new is not old
    assert intent_of(server.url, before, AUTH) == ("book_flight", False)  # replayed by the new learner
    assert feedback(server.url, {"text": after, "intent": "book_flight"}, AUTH).status_code == 202
    stats = wait_learned(server.url, 2, AUTH)
    assert stats["n_learned"] == 2 and new.stats()["n_learned"] == 2
    assert intent_of(server.url, after, AUTH) == ("book_flight", False)


# -- the serve flags ------------------------------------------------------------------------------------
def test_the_serve_flags_override_the_index_learning_config(mini_index: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--learning", "review", "--feedback", "off", "--learn-log",
                                      str(tmp_path / "x.jsonl")])
    from router._cli import _serve_options

    options = _serve_options(args)
    assert options == {"learning": "review", "feedback": False, "learn_log": str(tmp_path / "x.jsonl")}
    built = LearningConfig(max_per_minute=7)
    merged = serving_learning(ServeConfig(**options), built)
    assert (merged.mode, merged.feedback, merged.log, merged.max_per_minute) == ("review", False,
                                                                                 str(tmp_path / "x.jsonl"), 7)
    # --feedback auto (the default): the index's config with an API key, off without one.
    assert serving_learning(ServeConfig(api_key_env=KEY_ENV), built) is built
    assert serving_learning(ServeConfig(), built).feedback is False
    assert serving_learning(ServeConfig(feedback=True), built).feedback is True
    assert build_parser().parse_args(["serve", "--feedback", "auto"]).feedback == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--learning", "sometimes"])
    router = load_router(ServeConfig(index=str(mini_index), encoder_threads=1, **options))
    try:
        assert router.learning is not None
        assert router.learning.config.mode == "review" and router.learning.config.feedback is False
        assert router.learning.log.describe()["path"] == str(tmp_path / "x.jsonl")
    finally:
        router.close()


def test_the_log_is_shared_through_a_redis_state_only(tmp_path: Path) -> None:
    assert learn_state(ServeConfig()) is None
    assert learn_state(ServeConfig(state="memory")) is None
    state = learn_state(ServeConfig(state="redis://127.0.0.1:6390/2"))
    assert state is not None and state.url == "redis://127.0.0.1:6390/2"
    # The model-routing file's state, with its prefix and password variable (--state over its url only).
    routing = tmp_path / "routing.yaml"
    routing.write_text(json.dumps({"state": {"url": "redis://10.0.0.9:6379/1", "prefix": "app1:",
                                             "password_env": "ROUTER_TEST_REDIS_PASSWORD"}}))
    state = learn_state(ServeConfig(model_routing=str(routing)))
    assert state is not None and (state.url, state.prefix, state.password_env) == (
        "redis://10.0.0.9:6379/1", "app1:", "ROUTER_TEST_REDIS_PASSWORD")
    state = learn_state(ServeConfig(model_routing=str(routing), state="redis://127.0.0.1:6390/2"))
    assert state is not None and (state.url, state.prefix) == ("redis://127.0.0.1:6390/2", "app1:")
    assert learn_state(ServeConfig(model_routing=str(routing), state="memory")) is None


def test_compaction_finds_the_log_as_serve_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import router.learn._compact as compaction

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(compaction, "compact", lambda name, **kwargs: calls.append({"name": name, **kwargs}) or {})
    routing = tmp_path / "routing.yaml"
    routing.write_text(json.dumps({"state": {"url": "redis://10.0.0.9:6379/1", "prefix": "app1:",
                                             "password_env": "ROUTER_TEST_REDIS_PASSWORD"}}))
    assert main(["build", "--compact", "--name", "mini", "--model-routing", str(routing), "-q"]) == 0
    assert main(["build", "--compact", "--state", "redis://127.0.0.1:6390/2", "--model-routing", str(routing),
                 "--learn-log", str(tmp_path / "x.jsonl"), "-q"]) == 0
    monkeypatch.setenv("ROUTER_SERVE_STATE", "redis://127.0.0.1:6391/0")  # as serve reads it
    assert main(["build", "--compact", "-q"]) == 0
    assert main(["build", "--compact", "--state", "memory", "-q"]) == 0
    first, second, from_env, memory = calls
    assert first["name"] == "mini" and first["learn_log"] is None
    assert (first["state"].url, first["state"].prefix, first["state"].password_env) == (
        "redis://10.0.0.9:6379/1", "app1:", "ROUTER_TEST_REDIS_PASSWORD")
    assert (second["state"].url, second["state"].prefix, second["learn_log"]) == (
        "redis://127.0.0.1:6390/2", "app1:", str(tmp_path / "x.jsonl"))
    assert from_env["state"].url == "redis://127.0.0.1:6391/0" and memory["state"] is None
    capsys.readouterr()


def test_the_intents_of_writes_skills_are_protected(skills_index: Path) -> None:
    from router._router import OpenedIndex

    opened = OpenedIndex.open(skills_index)
    assert protected_intents(opened, {"transfer"}) == {"transfer"}
    assert protected_intents(opened, {"payments.transfer"}) == set()  # the intent's skill is `transfer` here
    assert protected_intents(opened, ()) == set()


# -- the client and the CLI ------------------------------------------------------------------------------
def test_the_client_teaches_reviews_and_maps_each_error(serve: Callable[..., Running], mini_index: Path,
                                                        tmp_path: Path) -> None:
    learning = LearningConfig(max_per_minute=2, log=str(tmp_path / "client.jsonl"))
    server = serve(Router.load(mini_index, learning=learning))
    text = trainable(1)[0]
    with RouterClient(server.url, api_key_env=None) as client:
        taken = client.feedback(text, "greeting", decision_id="abc")
        assert taken["status"] == "queued" and taken["decision_id"] == "abc"
        assert client.review() == {"items": [], "total": 0}
        with pytest.raises(ServiceInputError) as conflict:
            client.feedback(EXAMPLE, "weather")
        assert conflict.value.status == 409 and conflict.value.body["existing"] == "balance"
        assert "HTTP 409 FeedbackConflict" in str(conflict.value)
        with pytest.raises(ServiceInputError, match="'teleport'") as unknown:
            client.feedback("beam me up", "teleport")
        assert unknown.value.status == 422
        with pytest.raises(ServiceError) as missing:
            client.approve_review("no-such-review")
        assert missing.value.status == 404
        with pytest.raises(ServiceError):
            client.reject_review("no-such-review")
        client.feedback(trainable(2)[1], out_of_scope=True)
        with pytest.raises(ServiceUnavailable) as limited:  # 429: raised with its Retry-After, not retried
            client.feedback("one more for the limit", out_of_scope=True)
        assert limited.value.status == 429 and limited.value.retry_after is not None
        with pytest.raises(ValueError, match="exactly one of intent"):
            client.feedback("no label")
    assert wait_learned(server.url, 2)["n_out_of_scope"] == 1


def test_the_client_without_the_key_gets_an_auth_error(serve: Callable[..., Running],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = serve(api_key_env=KEY_ENV)
    with RouterClient(server.url, api_key_env=None) as client, pytest.raises(ServiceAuthError) as denied:
        client.feedback("hello there", "greeting")
    assert denied.value.status == 401
    with RouterClient(server.url, api_key_env=KEY_ENV) as client:
        assert client.learning()["feedback"] is True


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_client_has_the_same_methods(reviewing: Running) -> None:
    text = trainable(1, UNSURE)[0]
    escalate(reviewing.url, text)
    wait_review(reviewing.url, 1)
    async with AsyncRouterClient(reviewing.url, api_key_env=None) as client:
        [item] = (await client.review())["items"]
        assert item["text"] == text
        assert (await client.reject_review(item["id"]))["id"] == item["id"]
        assert await client.review() == {"items": [], "total": 0}
        taken = await client.feedback(trainable(2)[1], out_of_scope=True)
        assert taken["status"] == "queued" and (await client.learning())["mode"] == "review"


def test_the_feedback_and_review_commands(reviewing: Running, capsys: pytest.CaptureFixture[str]) -> None:
    url = reviewing.url
    first, second = trainable(1)[0], trainable(1, UNSURE)[0]
    assert main(["feedback", first, "--intent", "order_status", "--decision-id", "d7", "--url", url]) == 0
    taken = json.loads(capsys.readouterr().out)
    assert taken["status"] == "queued" and taken["intent"] == "order_status" and taken["decision_id"] == "d7"
    assert main(["feedback", EXAMPLE, "--intent", "weather", "--url", url]) == 1
    assert "HTTP 409" in capsys.readouterr().err
    escalate(url, second)
    wait_review(url, 1)
    assert main(["review", "--url", url]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert main(["review", "approve", item["id"], "--url", url]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "human"
    assert main(["review", "list", "--url", url]) == 0
    assert json.loads(capsys.readouterr().out) == {"items": [], "total": 0}
    assert main(["review", "reject", item["id"], "--url", url]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["review", "approve", "--url", url]) == 1
    assert "needs the review id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["feedback", "no label", "--url", url])  # --intent or --out-of-scope is required
