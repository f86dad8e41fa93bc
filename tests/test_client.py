"""router._client against real `router serve` instances (uvicorn on a free port, the service tests' fixtures).

Only the 503-retry and a malformed-body test use an httpx MockTransport: the real service's 503
needs max_in_flight saturated, and its Retry-After is at least a whole second.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router import Router, errors
from router._client import AsyncRouterClient, DispatchReply, RouterClient
from router._decision import Candidate, Decision, LLMCall
from router.dispatch import DispatchResult
from router.service import ServeConfig, build_server
from router.testing import free_port
from tests.dispatch.conftest import Fakes, fakes, provider_section  # noqa: F401 - fixtures
from tests.service.conftest import Running, server, skills_index, start_server  # noqa: F401 - fixtures

TEXTS = ["what is my checking account balance at chase", "how do you say hello in japanese",
         "send 50 dollars between bank of america and chase accounts", "zebra stripes quantum lasagna",
         "set a timer for 5 minutes"]
KEY_ENV = "ROUTER_TEST_CLIENT_KEY"
KEY = "s3cret-client-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _without_latency(decisions: list[Decision]) -> list[Decision]:
    """Latencies differ run to run; everything else must match the in-process Router exactly."""
    return [replace(d, latency_us={}, id="") for d in decisions]


@pytest.fixture
def dispatch_server(start_server: Callable[..., Running], fakes: Fakes,  # noqa: F811 - the fixtures
                    tmp_path: Path, skills_index: Path) -> Callable[..., Running]:  # noqa: F811
    def make(**routing: Any) -> Running:
        path = tmp_path / f"routing-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"providers": provider_section(fakes), "trace": {"sink": "memory"},
                                        "retry": {"max_retries": 0}, **routing}))
        return start_server(skills="router.dispatch.demo:registry", model_routing=str(path), index=skills_index)

    return make


def _start(mini_index: Path, **options: Any) -> Running:
    """A server as start_server makes them, for module-scoped fixtures: each start costs about a second."""
    port = free_port()
    config = ServeConfig(port=port, index=str(mini_index), encoder_threads=1, **options)
    return Running(build_server(config, Router.load(mini_index, llm="off")), port)


@pytest.fixture(scope="module")
def shared(mini_index: Path) -> Iterator[Running]:
    """One server for the tests that only read."""
    running = _start(mini_index)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def auth_server(mini_index: Path) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as mp:  # the server reads its key once, at start
        mp.setenv(KEY_ENV, KEY)
        running = _start(mini_index, api_key_env=KEY_ENV)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_default_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the developer's own environment must not leak into the tests."""
    monkeypatch.delenv("ROUTER_API_KEY", raising=False)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


class Scripted:
    """A MockTransport handler answering from a list of (status, headers, body); records each request."""

    def __init__(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, headers={"content-type": "application/json", **headers}, content=content)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        return self(request)


def _decision(intent: str = "balance") -> Decision:
    return Decision(intent=intent, out_of_scope=False, confidence=0.93, tier="embedding", escalate=False,
                    candidates=[Candidate(intent, 0.93, 0.81), Candidate("transfer", 0.05, None)],
                    slots={"bank": "chase"}, flags=["pii"], latency_us={"embedding": 812.5}, skill="banking.balance")


BUSY = (503, {"retry-after": "0.01"}, {"detail": "max_in_flight=1 requests are already in flight; retry after 0.01 s"})


# -- Decision.from_dict ---------------------------------------------------------------------------
def test_decision_from_dict_inverts_to_dict() -> None:
    with_llm = replace(_decision(), tier="llm", degraded=True, degraded_reason="timeout",
                       llm=LLMCall("vllm", "smol", 12.5, 30, 2, 10, ["llama: timeout"]))
    for d in (_decision(), with_llm, replace(_decision(), intent=None, out_of_scope=True, candidates=[])):
        data = d.to_dict()
        back = Decision.from_dict(data)
        assert back == d and back.to_dict() == data
        assert Decision.from_dict(json.loads(json.dumps(data))) == d  # through JSON, as the client reads it
    back = Decision.from_dict(data)
    back.candidates.append(Candidate("x", 0.0))
    back.slots["k"] = "v"
    assert data["candidates"] == [] and data["slots"] == {"bank": "chase"}  # nothing shared with the input


def test_decision_from_dict_ignores_unknown_keys_and_needs_required_ones() -> None:
    data = _decision().to_dict() | {"new_server_field": 1}
    data["candidates"][0]["rank"] = 1
    assert Decision.from_dict(data) == _decision()
    del data["tier"]
    with pytest.raises(TypeError, match="tier"):
        Decision.from_dict(data)


def test_real_decisions_round_trip(mini_router: Router) -> None:
    for d in mini_router.classify_many(TEXTS):
        assert Decision.from_dict(d.to_dict()) == d


# -- classify against the real service ------------------------------------------------------------
def test_classify_returns_the_routers_own_decisions(shared: Running, mini_router: Router) -> None:
    expected = mini_router.classify_many(TEXTS)
    # The texts cover two tiers, an out-of-scope query and an escalation, so each field is compared for real.
    assert {d.tier for d in expected} == {"static", "embedding"}
    assert any(d.out_of_scope for d in expected) and any(d.escalate for d in expected)
    with RouterClient(shared.url) as client:
        one = client.classify(TEXTS[1])
        batch = client.classify_many(TEXTS)
        assert isinstance(one, Decision) and all(isinstance(d, Decision) for d in batch)
        assert all(isinstance(c, Candidate) for d in batch for c in d.candidates)
        assert _without_latency([one]) == _without_latency([mini_router.classify(TEXTS[1])])
        assert _without_latency(batch) == _without_latency(expected)
        assert [len(d.candidates) for d in client.classify_many(TEXTS, top_k=1)] == [1] * len(TEXTS)


def test_health_and_readiness(server: Running) -> None:  # noqa: F811
    with RouterClient(server.url) as client:
        assert client.healthz() == {"status": "ok"}
        ready = client.readyz()
        assert ready["ready"] is True and ready["encoder_warm"] is True
        server.service.draining = True  # readiness goes false, with a 503: an answer, not an error
        ready = client.readyz()
        assert ready["ready"] is False and ready["draining"] is True


@pytest.mark.parametrize(("call", "needle"), [
    (lambda c: c.classify("x" * 2001), "body.text: String should have at most 2000 characters"),
    (lambda c: c.classify_many(["hi"] * 257), "body.texts: List should have at most 256 items"),
    (lambda c: c.classify("hi", top_k=101), "body.top_k: Input should be less than or equal to 100"),
])
def test_the_services_422_is_an_input_error_with_its_detail(shared: Running, call: Callable[[RouterClient], Any],
                                                             needle: str) -> None:
    with RouterClient(shared.url) as client, pytest.raises(errors.ServiceInputError) as caught:
        call(client)
    assert isinstance(caught.value, errors.InputError) and caught.value.status == 422
    assert str(caught.value).startswith("POST /v1/classify: HTTP 422: ") and needle in str(caught.value)


def test_413_is_an_input_error_naming_the_limit(start_server: Callable[..., Running]) -> None:  # noqa: F811
    with RouterClient(start_server(max_body_bytes=1000).url) as client, pytest.raises(errors.InputError) as caught:
        client.classify("a" * 1200)
    assert isinstance(caught.value, errors.ServiceInputError) and caught.value.status == 413
    assert "max_body_bytes=1000" in str(caught.value)


# -- the bearer key -------------------------------------------------------------------------------
def test_a_missing_or_wrong_key_is_an_auth_error(auth_server: Running) -> None:
    with RouterClient(auth_server.url) as client, pytest.raises(errors.ServiceAuthError) as caught:
        client.classify("hi")
    assert caught.value.status == 401 and f"${KEY_ENV}" in str(caught.value)
    assert "this client sent no API key" in str(caught.value)
    with RouterClient(auth_server.url, api_key="s3cret-client-tokeX") as client:
        with pytest.raises(errors.ServiceAuthError, match="HTTP 401") as caught:
            client.classify("hi")
        assert "sent no API key" not in str(caught.value) and "tokeX" not in str(caught.value)
        assert client.healthz() == {"status": "ok"}  # probes stay open


def test_the_right_key_works_given_or_from_the_environment(auth_server: Running, mini_router: Router,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _without_latency([mini_router.classify("hi")])
    with RouterClient(auth_server.url, api_key=KEY) as client:
        assert _without_latency([client.classify("hi")]) == expected
    monkeypatch.setenv(KEY_ENV, KEY)
    with RouterClient(auth_server.url, api_key_env=KEY_ENV) as client:
        assert _without_latency([client.classify("hi")]) == expected
    monkeypatch.setenv("ROUTER_API_KEY", KEY)  # the default variable
    with RouterClient(auth_server.url) as client:
        assert _without_latency([client.classify("hi")]) == expected
        assert "s3cret" not in repr(client)


# -- dispatch -------------------------------------------------------------------------------------
def test_dispatch_returns_the_dispatchers_result_with_the_decision(dispatch_server: Callable[..., Running],
                                                                   fakes: Fakes) -> None:  # noqa: F811
    fakes.openai.script("send 20 dollars to sam", '{"amount": 20, "to_account": "sam"}')
    with RouterClient(dispatch_server().url) as client:
        reply = client.dispatch("u1", "send 20 dollars to sam")
        assert isinstance(reply, DispatchReply) and isinstance(reply, DispatchResult)
        assert isinstance(reply.decision, Decision) and reply.decision.intent == "transfer"
        assert reply.status == "pending_approval" and reply.skill == "transfer" and reply.approval_id
        assert reply.params is not None and (reply.params["amount"], reply.params["to_account"]) == (20, "sam")
        assert reply.calls[0].provider == "openai" and reply.cost_usd > 0

        direct = client.dispatch("u2", skill="balance", params={"account": "checking"})
        assert direct.status == "ok" and direct.decision is None and direct.result["balance"] == 1200.0

        assert reply.approval_id is not None
        done = client.approve(reply.approval_id)
        assert done.status == "ok" and done.result["sent"] == 20 and done.decision is None
        with pytest.raises(errors.ServiceDispatchError) as caught:  # single use
            client.approve(reply.approval_id)
        assert caught.value.status == 404 and caught.value.error == "ApprovalError"
        totals = client.session("u1")
        assert totals["steps"] == 1 and totals["calls"] == 1 and totals["tokens"] == reply.tokens

        fakes.openai.script("send 5 dollars to ann", '{"amount": 5, "to_account": "ann"}')
        pending = client.dispatch("u3", "send 5 dollars to ann")
        assert pending.approval_id is not None
        assert client.reject(pending.approval_id) == {"status": "rejected", "approval_id": pending.approval_id,
                                                       "skill": "transfer"}
        with pytest.raises(errors.ServiceDispatchError, match="ApprovalError"):
            client.approve(pending.approval_id)
        with pytest.raises(errors.InputError, match="approval_id must be a non-empty string"):
            client.approve(" ")


def test_dispatch_refusals_are_dispatch_errors(dispatch_server: Callable[..., Running]) -> None:
    with RouterClient(dispatch_server(budgets={"session_steps": 1}).url) as client:
        with pytest.raises(errors.ServiceDispatchError) as caught:
            client.dispatch("u", skill="rm_rf", params={})
        # 403 here is the allowlist, not the bearer key.
        assert caught.value.error == "SkillNotAllowed" and caught.value.status == 403
        assert isinstance(caught.value, errors.DispatchError) and not isinstance(caught.value, errors.ServiceAuthError)
        assert "HTTP 403 SkillNotAllowed" in str(caught.value) and "rm_rf" in str(caught.value)

        with pytest.raises(errors.ServiceDispatchError) as caught:
            client.dispatch("u1", skill="balance", params={"account": "gold"})
        assert caught.value.error == "InvalidParameters" and caught.value.status == 422

        client.dispatch("u2", skill="balance", params={})
        with pytest.raises(errors.ServiceDispatchError) as caught:
            client.dispatch("u2", skill="balance", params={})
        assert caught.value.status == 429 and caught.value.error == "BudgetExceeded"
        assert caught.value.body["budget"] == "session_steps" and "session_steps" in str(caught.value)

        with pytest.raises(errors.ServiceInputError, match="body.text: String should have at most 4000 characters"):
            client.dispatch("u", "x" * 4001)


def test_dispatch_without_skills_names_the_missing_option(shared: Running) -> None:
    with RouterClient(shared.url) as client, pytest.raises(errors.ServiceError) as caught:
        client.dispatch("u", "hi")
    assert type(caught.value) is errors.ServiceError and caught.value.status == 404 and "--skills" in str(caught.value)


# -- arguments, connection failures, timeouts -----------------------------------------------------
def _refusing_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing should be sent, got {request.method} {request.url}")

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("call", "needle"), [
    (lambda c: c.classify_many([]), "texts is an empty list"),
    (lambda c: c.classify_many("hi"), "texts must be a list of strings, got str"),
    (lambda c: c.classify_many(["hi", " "]), "texts[1] is empty or only whitespace"),
    (lambda c: c.classify(42), "text must be a string, got int"),
    (lambda c: c.classify("hi", top_k=0), "top_k must be an integer >= 1 or None, got 0"),
    (lambda c: c.dispatch("", "hi"), "session_id must be a non-empty string, got ''"),
    (lambda c: c.dispatch("u", skill="balance"), "give text, or both skill and params"),
    (lambda c: c.dispatch("u", skill="balance", params=[1]), "params must be a mapping or None, got list"),
])
def test_arguments_are_checked_before_anything_is_sent(call: Callable[[RouterClient], Any], needle: str) -> None:
    with RouterClient(transport=_refusing_transport()) as client, pytest.raises(errors.InputError) as caught:
        call(client)
    assert needle in str(caught.value)


@pytest.mark.parametrize(("options", "needle"), [
    ({"timeout": -1}, "timeout must be a finite number of seconds > 0, got -1"),
    ({"timeout": 0}, "timeout must be a finite number of seconds > 0, got 0"),
    ({"retries": -1}, "retries must be an integer >= 0, got -1"),
    ({"max_retry_wait": float("inf")}, "max_retry_wait must be a finite number of seconds >= 0, got inf"),
    ({"base_url": "127.0.0.1:8000"}, "base_url='127.0.0.1:8000' must be an http:// or https:// URL"),
    ({"api_key": " padded "}, "api_key must be a non-empty string without surrounding whitespace"),
    ({"api_key_env": ""}, "api_key_env must be a non-empty environment variable name or None, got ''"),
    ({"http_client": "client"}, "http_client must be an httpx.Client, got str"),
])
def test_options_are_checked(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        RouterClient(**options)
    assert needle in str(caught.value) and "padded" not in str(caught.value)


def test_connection_refused_is_service_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with RouterClient(url, retries=2) as client, pytest.raises(errors.ServiceUnavailable) as caught:
        client.classify("hi")
    assert caught.value.status is None and not isinstance(caught.value, errors.ServiceTimeout)
    assert f"POST {url}/v1/classify: connection failed (ConnectError" in str(caught.value)


def test_no_answer_within_the_timeout_is_service_timeout(silent_port: int) -> None:
    with RouterClient(f"http://127.0.0.1:{silent_port}", timeout=0.2) as client:
        with pytest.raises(errors.ServiceTimeout, match=r"no answer within timeout=0\.2 s \(ReadTimeout\)"):
            client.classify("hi")


def test_a_malformed_success_body_is_a_service_error() -> None:
    handler = Scripted((200, {}, {"decisions": [{"intent": "x"}]}), (200, {}, b"<html>"))
    with RouterClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(errors.ServiceError, match="unexpected body: no Decision list"):
            client.classify("hi")
        with pytest.raises(errors.ServiceError, match="the body is not JSON"):
            client.classify("hi")


def test_a_500_is_a_service_error_with_the_servers_message() -> None:
    handler = Scripted((500, {}, {"message": "the encoder thread died"}))
    with RouterClient(transport=httpx.MockTransport(handler)) as client, pytest.raises(errors.ServiceError) as caught:
        client.classify("hi")
    assert type(caught.value) is errors.ServiceError and caught.value.status == 500
    assert str(caught.value) == "POST /v1/classify: HTTP 500: the encoder thread died"
    assert len(handler.requests) == 1  # only 503 is retried


# -- 503 and Retry-After ----------------------------------------------------------------------------
def test_a_503_is_retried_after_its_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    handler = Scripted(BUSY, BUSY, (200, {}, {"decisions": [_decision().to_dict()], "session_id": None}))
    with caplog.at_level(logging.WARNING, logger="router._client"):
        with RouterClient(transport=httpx.MockTransport(handler), retries=2) as client:
            assert client.classify("balance at chase") == _decision()
    assert len(handler.requests) == 3
    assert [r.getMessage().split("; retry ")[-1] for r in caplog.records] == ["1 of 2 in 0.01 s", "2 of 2 in 0.01 s"]
    assert all(json.loads(r.content) == {"text": "balance at chase"} for r in handler.requests)


def test_503s_beyond_the_retries_raise_service_unavailable() -> None:
    handler = Scripted(BUSY)
    with RouterClient(transport=httpx.MockTransport(handler), retries=1) as client:
        with pytest.raises(errors.ServiceUnavailable) as caught:
            client.classify("hi")
    assert len(handler.requests) == 2 and caught.value.status == 503 and caught.value.retry_after == 0.01
    assert "HTTP 503: max_in_flight=1" in str(caught.value)


def test_a_retry_after_over_max_retry_wait_is_not_waited_for() -> None:
    handler = Scripted((503, {"retry-after": "120"}, {"detail": "busy"}))
    with RouterClient(transport=httpx.MockTransport(handler), max_retry_wait=5) as client:
        with pytest.raises(errors.ServiceUnavailable) as caught:
            client.classify("hi")
    assert len(handler.requests) == 1 and caught.value.retry_after == 120


# -- lifecycle and an injected client -------------------------------------------------------------
def test_an_injected_http_client_is_used_and_left_open(shared: Running, mini_router: Router) -> None:
    seen: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: seen.append(f"{r.method} {r.url.path}")]})
    with http:
        with RouterClient(shared.url, http_client=http) as client:
            assert _without_latency([client.classify(TEXTS[0])]) == _without_latency([mini_router.classify(TEXTS[0])])
        assert seen == ["POST /v1/classify"] and not http.is_closed
    with pytest.raises(errors.RouterError, match="RouterClient is closed"):
        client.classify("hi")


# -- the async client mirrors the sync one ---------------------------------------------------------
@pytest.mark.anyio
async def test_async_classify_matches_the_router(shared: Running, mini_router: Router) -> None:
    async with AsyncRouterClient(shared.url) as client:
        one = await client.classify(TEXTS[0])
        batch = await client.classify_many(TEXTS)
        assert _without_latency([one]) == _without_latency([mini_router.classify(TEXTS[0])])
        assert _without_latency(batch) == _without_latency(mini_router.classify_many(TEXTS))
        assert await client.healthz() == {"status": "ok"} and (await client.readyz())["ready"] is True
        with pytest.raises(errors.ServiceInputError, match="at most 2000 characters"):
            await client.classify("x" * 2001)
        with pytest.raises(errors.InputError, match="texts is an empty list"):
            await client.classify_many([])
    with pytest.raises(errors.RouterError, match="AsyncRouterClient is closed"):
        await client.classify("hi")


@pytest.mark.anyio
async def test_async_auth(auth_server: Running) -> None:
    async with AsyncRouterClient(auth_server.url) as client:
        with pytest.raises(errors.ServiceAuthError, match="HTTP 401"):
            await client.classify("hi")
    async with AsyncRouterClient(auth_server.url, api_key=KEY) as client:
        assert isinstance(await client.classify("hi"), Decision)


@pytest.mark.anyio
async def test_async_dispatch(dispatch_server: Callable[..., Running], fakes: Fakes) -> None:  # noqa: F811
    fakes.openai.script("send 20 dollars to sam", '{"amount": 20, "to_account": "sam"}')
    async with AsyncRouterClient(dispatch_server().url) as client:
        reply = await client.dispatch("u1", "send 20 dollars to sam")
        assert reply.status == "pending_approval" and reply.decision is not None
        assert reply.decision.intent == "transfer" and reply.params is not None and reply.params["amount"] == 20
        with pytest.raises(errors.ServiceDispatchError) as caught:
            await client.dispatch("u", skill="rm_rf", params={})
        assert caught.value.error == "SkillNotAllowed"
        assert reply.approval_id is not None
        assert (await client.approve(reply.approval_id)).result["sent"] == 20
        assert (await client.session("u1"))["steps"] == 1
        with pytest.raises(errors.ServiceDispatchError, match="ApprovalError"):
            await client.reject(reply.approval_id)


@pytest.mark.anyio
async def test_async_retries_503_and_translates_connection_errors() -> None:
    handler = Scripted(BUSY, (200, {}, {"decisions": [_decision().to_dict()] * 2, "session_id": None}))
    transport = httpx.MockTransport(handler.handle_async)
    async with AsyncRouterClient(transport=transport) as client:
        assert await client.classify_many(["a", "b"]) == [_decision(), _decision()]
    assert len(handler.requests) == 2
    async with AsyncRouterClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(errors.ServiceUnavailable, match="connection failed"):
            await client.classify("hi")


@pytest.mark.anyio
async def test_async_timeout(silent_port: int) -> None:
    async with AsyncRouterClient(f"http://127.0.0.1:{silent_port}", timeout=0.2) as client:
        with pytest.raises(errors.ServiceTimeout):
            await client.readyz()


def test_async_options_are_checked() -> None:
    with httpx.Client() as sync_client, \
            pytest.raises(errors.ConfigError, match="must be an httpx.AsyncClient, got Client"):
        AsyncRouterClient(http_client=sync_client)  # type: ignore[arg-type]
