"""The proxy's refusals, each in its API's error format: bad requests, budgets (429, nothing sent upstream),
upstream failures (502 after the fallbacks; a fallback named in the headers), a client that disconnects
mid-stream (the upstream request ends), the Guard's own refusals, and the routes without --proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.service.conftest import ProxyFakes, ProxyServer, Running, chat_ref, proxy_routing

GREETING = "hello there"  # greeting -> the default chat model (openai)
OUT_OF_SCOPE = "tell me a joke about cats"


@pytest.fixture(scope="module")
def proxy(start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy()


@pytest.fixture
def fakes(proxy: ProxyServer) -> Any:
    proxy.fakes.clear()
    return proxy.fakes


def _openai(proxy: ProxyServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _anthropic(proxy: ProxyServer, body: Any) -> httpx.Response:
    return httpx.post(f"{proxy.url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=30)


def _openai_error(response: httpx.Response, status: int, code: str | None, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param
    assert isinstance(error["type"], str) and error["message"]
    return str(error["message"])


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    return str(body["error"]["message"])


# -- bad requests ------------------------------------------------------------------------------------
def test_missing_messages(proxy: ProxyServer, fakes: Any) -> None:
    message = _openai_error(_openai(proxy, {"model": "auto"}), 400, "missing", "messages")
    assert "messages" in message
    _anthropic_error(_anthropic(proxy, {"model": "auto", "max_tokens": 10}), 400, "invalid_request_error")
    assert not any(f.requests for f in fakes.all())


def test_an_empty_user_message(proxy: ProxyServer, fakes: Any) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "   "}]}
    message = _openai_error(_openai(proxy, body), 400, "empty", "messages.0.content")
    assert "'   '" in message  # the value given
    message = _anthropic_error(_anthropic(proxy, {**body, "max_tokens": 10}), 400, "invalid_request_error")
    assert "messages.0.content" in message
    assert not any(f.requests for f in fakes.all())


def test_an_unknown_model(proxy: ProxyServer, fakes: Any,
        request: pytest.FixtureRequest) -> None:
    body = {"model": "gpt-nope", "messages": [{"role": "user", "content": GREETING}]}
    message = _openai_error(_openai(proxy, body), 404, "model_not_found", "model")
    assert "'gpt-nope'" in message and "auto" in message
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": GREETING}])
    message = _anthropic_error(_anthropic(proxy, {**body, "max_tokens": 10}), 404, "not_found_error")
    assert "'gpt-nope'" in message
    assert not any(f.requests for f in fakes.all())


def test_a_text_over_the_limit(proxy: ProxyServer, fakes: Any) -> None:
    limit = proxy.running.service.limits.max_text_chars
    body = {"model": "auto", "messages": [{"role": "user", "content": "a" * (limit + 1)}]}
    message = _openai_error(_openai(proxy, body), 400, "too_long", "messages.0.content")
    assert f"{limit + 1:,}" in message and f"{limit:,}" in message
    message = _anthropic_error(_anthropic(proxy, {**body, "max_tokens": 10}), 400, "invalid_request_error")
    assert f"{limit:,}" in message
    assert not any(f.requests for f in fakes.all())


def test_a_body_that_is_not_json(proxy: ProxyServer) -> None:
    response = httpx.post(f"{proxy.url}/v1/chat/completions", content=b"{nope", timeout=30,
                          headers={"content-type": "application/json"})
    _openai_error(response, 400, "invalid_json")


# -- budgets, fallbacks, upstream failures ----------------------------------------------------------------
def test_a_session_over_its_budget_gets_429_and_nothing_is_sent(start_proxy: Callable[..., ProxyServer],
                                                                proxy_fakes: ProxyFakes,
        request: pytest.FixtureRequest) -> None:
    proxy = start_proxy(proxy_routing(proxy_fakes, budgets={"session_steps": 2}))
    proxy.fakes.clear()
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=2)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    for _ in range(2):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}], user="u1")
    sent = len(proxy.fakes.openai.requests)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}], user="u1")
    assert refused.value.status_code == 429
    assert refused.value.response.headers["x-should-retry"] == "false"  # so the SDK's max_retries=2 sent one
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "insufficient_quota" and error["code"] == "budget_exceeded"
    assert error["param"] == "session_steps" and "session_steps" in error["message"]
    response = _anthropic(proxy, {"model": "auto", "max_tokens": 10, "metadata": {"user_id": "u1"},
                                  "messages": [{"role": "user", "content": GREETING}]})
    _anthropic_error(response, 429, "rate_limit_error")
    assert len(proxy.fakes.openai.requests) == sent  # no upstream request once over budget
    metrics = httpx.get(f"{proxy.url}/metrics", timeout=30).text
    assert 'router_proxy_requests_total{api="openai",route="auto",status="429"} 1.0' in metrics
    assert not proxy.fakes.anthropic.requests and not proxy.fakes.gemini.requests
    # Another session is not refused.
    assert client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}], user="u2")


def test_a_failing_primary_falls_back_and_the_headers_say_so(start_proxy: Callable[..., ProxyServer],
                                                             proxy_fakes: ProxyFakes,
        request: pytest.FixtureRequest) -> None:
    proxy = start_proxy(proxy_routing(proxy_fakes, fallbacks={"chat": [chat_ref("anthropic", "claude-haiku-4-5")]}))
    proxy.fakes.clear()
    proxy.fakes.openai.always("500")
    proxy.fakes.anthropic.script(GREETING, "Hello from the fallback.")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    raw = client.chat.completions.with_raw_response.create(model="auto",
                                                           messages=[{"role": "user", "content": GREETING}])
    assert raw.parse().choices[0].message.content == "Hello from the fallback."
    assert raw.headers["x-router-fallback-from"] == "openai/gpt-5.4-nano"
    assert raw.headers["x-router-model"] == "anthropic/claude-haiku-4-5"
    assert len(proxy.fakes.openai.requests) == 1 and len(proxy.fakes.anthropic.requests) == 1

    # Streamed: the primary failed before its first byte, so the stream's headers name the fallback.
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": GREETING}]}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["x-router-fallback-from"] == "openai/gpt-5.4-nano"
        assert response.headers["x-router-model"] == "anthropic/claude-haiku-4-5"
        assert '"content":"fallback."' in response.read().decode()  # the answer, word by word

    # Every model failing: 502, in each API's format, and not to be retried by the SDK (the chain did).
    proxy.fakes.anthropic.always("500")
    response = _openai(proxy, {"model": "auto", "messages": [{"role": "user", "content": GREETING}]})
    _openai_error(response, 502, "fallbacks_exhausted")
    assert response.headers["x-should-retry"] == "false"
    messages = [{"role": "user", "content": GREETING}]
    _anthropic_error(_anthropic(proxy, {"model": "auto", "max_tokens": 10, "messages": messages}), 502, "api_error")
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as streamed:
        assert streamed.status_code == 502  # failed before the first byte: a proper error response
        assert streamed.read() and streamed.json()["error"]["code"] == "fallbacks_exhausted"
    proxy.fakes.clear()


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize(("api", "path"), [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")])
def test_a_client_that_disconnects_mid_stream_ends_the_upstream_request(proxy: ProxyServer, fakes: Any, api: str,
                                                                        path: str) -> None:
    fakes.openai.script(GREETING, " ".join(f"word{i}" for i in range(200)))
    fakes.openai.stream_chunk_delay_s = 0.05
    body: dict[str, Any] = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": GREETING}],
                            "user": "leaver"}
    if api == "anthropic":
        body = {**body, "max_tokens": 100, "metadata": {"user_id": "leaver"}}
        del body["user"]
    with httpx.stream("POST", f"{proxy.url}{path}", json=body, timeout=30,
                      headers={"anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():  # the first words in; then the client goes away
            if "word2" in line:
                break
        else:
            raise AssertionError("the stream ended before its third word")
    assert _wait_for(lambda: fakes.openai.streams_cut == 1)
    assert fakes.openai.streams_done == 0
    # The session was metered for what the cut call may have cost (its reservation), not nothing.
    spent = httpx.get(f"{proxy.url}/v1/sessions/leaver", timeout=30).json()
    assert spent["cost_usd"] > 0


def test_an_upstream_failure_mid_stream_is_the_apis_error_event(proxy: ProxyServer, fakes: Any,
        request: pytest.FixtureRequest) -> None:
    fakes.openai.fault("cut")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    stream = client.chat.completions.create(model="auto", stream=True,
                                            messages=[{"role": "user", "content": GREETING}])
    with pytest.raises(openai.APIError) as failed:
        for _ in stream:
            pass
    assert "upstream" in str(failed.value.body) or failed.value.message

    fakes.openai.fault("cut")
    a_client = anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0)
    request.addfinalizer(a_client.close)  # its pooled connections, not left to the GC
    with pytest.raises(anthropic.APIStatusError) as failed_a:  # the SDK raises the stream's error event
        with a_client.messages.stream(model="auto", max_tokens=50,
                                      messages=[{"role": "user", "content": GREETING}]) as s:
            s.get_final_message()
    assert failed_a.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_out_of_scope_can_go_to_a_configured_model(start_proxy: Callable[..., ProxyServer],
                                                   proxy_fakes: ProxyFakes,
        request: pytest.FixtureRequest) -> None:
    proxy = start_proxy(proxy_routing(proxy_fakes, proxy={
        "out_of_scope": {"model": chat_ref("gemini", "gemini-2.5-flash")}}))
    proxy.fakes.clear()
    proxy.fakes.gemini.script(OUT_OF_SCOPE, "Why did the cat sit on the computer?")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    raw = client.chat.completions.with_raw_response.create(model="auto",
                                                           messages=[{"role": "user", "content": OUT_OF_SCOPE}])
    assert raw.parse().choices[0].message.content == "Why did the cat sit on the computer?"
    assert raw.headers["x-router-intent"] == "out_of_scope"
    assert raw.headers["x-router-model"] == "gemini/gemini-2.5-flash"
    assert len(proxy.fakes.gemini.requests) == 1 and not proxy.fakes.openai.requests
    # Its own one-model chain: not a fallback from the chat stage's primary, in the headers or the trace.
    assert "x-router-fallback-from" not in raw.headers
    records = [r for r in proxy.dispatcher.sink.inner.records if r["kind"] == "call"]  # type: ignore[attr-defined]
    assert [(r["provider"], r["fallback_from"]) for r in records] == [("gemini", None)]


# -- the Guard and the switch -------------------------------------------------------------------------------
def test_the_guards_refusals_come_in_the_apis_format(start_proxy: Callable[..., ProxyServer],
                                                     monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("PROXY_SERVICE_KEY", "svc-secret")
    proxy = start_proxy(api_key_env="PROXY_SERVICE_KEY", max_body_bytes=4096)
    body = {"model": "auto", "messages": [{"role": "user", "content": GREETING}]}
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="wrong", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(**body)  # type: ignore[call-overload]
    assert refused.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    good = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="svc-secret", max_retries=0)
    request.addfinalizer(good.close)  # its pooled connections, not left to the GC
    assert good.chat.completions.create(**body).choices[0].message.content  # type: ignore[call-overload]
    big = {"model": "auto", "messages": [{"role": "user", "content": "x " * 4000}]}
    response = _openai(proxy, big, headers={"authorization": "Bearer svc-secret"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    response = httpx.post(f"{proxy.url}/v1/messages", json={**big, "max_tokens": 5}, timeout=30,
                          headers={"x-api-key": "svc-secret", "anthropic-version": "2023-06-01"})
    _anthropic_error(response, 413, "request_too_large")


def test_without_proxy_the_routes_say_how_to_turn_it_on(start_server: Callable[..., Running]) -> None:
    server = start_server()
    for method, path in (("POST", "/v1/chat/completions"), ("POST", "/v1/messages"), ("GET", "/v1/models")):
        response = httpx.request(method, f"{server.url}{path}", json={}, timeout=30)
        assert response.status_code == 404 and "--proxy" in response.json()["detail"]


def test_a_started_stream_outlives_the_routes_deadline(start_proxy: Callable[..., ProxyServer],
                                                       proxy_fakes: ProxyFakes,
        request: pytest.FixtureRequest) -> None:
    """The deadline (request_timeout_s + dispatch_timeout_s, here 1.5 s) bounds the wait for the first event;
    a stream that has started runs on (each gap within its model's timeout_s)."""
    proxy = start_proxy(proxy_routing(proxy_fakes, dispatch_timeout_s=1, handler_timeout_s=1),
                        request_timeout_s=0.5)
    proxy.fakes.clear()
    words = " ".join(f"w{i}" for i in range(25))
    proxy.fakes.openai.script(GREETING, words)
    proxy.fakes.openai.stream_chunk_delay_s = 0.1  # the fake sleeps 2.5 s in all: past the deadline
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    chunks = list(client.chat.completions.create(model="auto", stream=True,
                                                 messages=[{"role": "user", "content": GREETING}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == words
    proxy.fakes.clear()


def test_the_schema_lists_the_proxy_routes(proxy: ProxyServer) -> None:
    paths = httpx.get(f"{proxy.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/chat/completions", "/v1/messages", "/v1/models"} <= set(paths)


def test_a_lone_surrogate_in_a_models_answer_is_replaced_not_a_500(proxy: ProxyServer, fakes: Any) -> None:
    fakes.openai.script(GREETING, "bad \ud800 char")  # the fake sends it as JSON's \ud800 escape
    response = _openai(proxy, {"model": "auto", "messages": [{"role": "user", "content": GREETING}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "bad \ufffd char"
    response = _anthropic(proxy, {"model": "auto", "max_tokens": 50, "messages": [{"role": "user",
                                                                                  "content": GREETING}]})
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "bad \ufffd char"
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": GREETING}]}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as streamed:
        assert streamed.status_code == 200
        assert "[DONE]" in streamed.read().decode()  # the escape went out; the stream finished


def test_a_stream_opened_but_never_handed_to_the_response_is_closed(proxy: ProxyServer, fakes: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from router.service.proxy._serving import ProxyServing

    def broken(*args: Any) -> Any:
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(ProxyServing, "_stream", broken)
    fakes.openai.script(GREETING, " ".join(f"word{i}" for i in range(50)))
    fakes.openai.stream_chunk_delay_s = 0.05
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": GREETING}], "user": "orphan"}
    _openai_error(_openai(proxy, body), 500, None)
    # Closed at once, as a client that went away: the upstream request ended and the reservation was spent.
    assert _wait_for(lambda: fakes.openai.streams_cut == 1)
    assert fakes.openai.streams_done == 0
    assert httpx.get(f"{proxy.url}/v1/sessions/orphan", timeout=30).json()["cost_usd"] > 0
