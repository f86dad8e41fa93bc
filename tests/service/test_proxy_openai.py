"""`router serve --proxy` driven by the official `openai` SDK (sync, async, streaming), forwarding to the
loopback OpenAI, Anthropic and Gemini servers over real HTTP.

The chat stage (tests/service/conftest.py ``proxy_routing``): OpenAI by default, the weather skill on
Anthropic, the balance skill on Gemini. Which provider got the request is asserted on the fakes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.service.conftest import ProxyServer

WEATHER = "what's the weather in paris"  # info.weather -> anthropic
BALANCE = "how much money is in my checking account"  # banking.balance -> gemini
GREETING = "hello there"  # greeting (no override) -> the default, openai
OUT_OF_SCOPE = "tell me a joke about cats"


@pytest.fixture(scope="module")
def proxy(start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy()


@pytest.fixture
def fakes(proxy: ProxyServer) -> Any:
    proxy.fakes.clear()
    return proxy.fakes


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0) as made:
        yield made  # closed after the test: its pooled connections are not left to the GC


def _ask(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], **extra)


def test_two_intents_reach_two_providers(client: openai.OpenAI, fakes: Any) -> None:
    fakes.anthropic.script(WEATHER, "Sunny, 21 C in Paris.")
    fakes.gemini.script(BALANCE, "You have 120 dollars.")
    raw = _ask(client, WEATHER)
    weather = raw.parse()
    assert weather.choices[0].message.content == "Sunny, 21 C in Paris."
    assert weather.choices[0].finish_reason == "stop"
    assert weather.usage is not None and weather.usage.completion_tokens == 5 and weather.usage.prompt_tokens > 0
    assert weather.usage.total_tokens == weather.usage.prompt_tokens + weather.usage.completion_tokens
    assert raw.headers["x-router-intent"] == "weather"
    assert raw.headers["x-router-model"] == "anthropic/claude-haiku-4-5"
    assert raw.headers["x-router-tier"] in {"rules", "static", "embedding", "keywords"}
    assert float(raw.headers["x-router-cost-usd"]) > 0
    assert raw.headers["x-router-session"] == "proxy"  # no header, no user: the default session
    assert "x-router-fallback-from" not in raw.headers

    balance = _ask(client, BALANCE).parse()
    assert balance.choices[0].message.content == "You have 120 dollars."
    assert [r["body"]["messages"][-1]["content"] for r in fakes.anthropic.requests] == [WEATHER]
    assert len(fakes.gemini.requests) == 1 and not fakes.openai.requests
    assert fakes.gemini.requests[0]["body"]["contents"][-1]["parts"][0]["text"] == BALANCE


def test_the_agents_system_prompt_and_turns_are_forwarded(client: openai.OpenAI, fakes: Any) -> None:
    client.chat.completions.create(model="auto", max_tokens=50, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": GREETING}])
    body = fakes.openai.requests[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert [m["content"] for m in body["messages"][1:]] == ["hi", "Hello!", GREETING]
    assert body["max_completion_tokens"] == 50  # min(the agent's 50, the route's 256)


def test_async_client(proxy: ProxyServer, fakes: Any) -> None:
    fakes.anthropic.script(WEATHER, "Rain later.")

    async def ask() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0) as client:
            return list(await asyncio.gather(*(client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": text}]) for text in (WEATHER, GREETING))))

    weather, greeting = asyncio.run(ask())
    assert weather.choices[0].message.content == "Rain later."
    assert greeting.choices[0].message.content  # the fake's default answer
    assert len(fakes.anthropic.requests) == 1 and len(fakes.openai.requests) == 1


def _stream(client: openai.OpenAI, text: str, **extra: Any) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}],
                                                 stream=True, stream_options={"include_usage": True}, **extra))
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text_out, chunks


@pytest.mark.parametrize(("query", "provider", "model"), [
    (GREETING, "openai", "openai/gpt-5.4-nano"),
    (WEATHER, "anthropic", "anthropic/claude-haiku-4-5"),
    (BALANCE, "gemini", "gemini/gemini-2.5-flash"),
])
def test_streamed_chunks_from_each_provider(client: openai.OpenAI, fakes: Any, query: str, provider: str,
                                            model: str) -> None:
    answer = "one two three four five six"
    getattr(fakes, provider).script(query, answer)
    text, chunks = _stream(client, query)
    assert text == answer
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # translated piece by piece
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 6 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extra = chunks[-1].model_extra or {}
    assert extra["x_router"]["model"] == model and extra["x_router"]["cost_usd"] > 0
    assert getattr(fakes, provider).requests[-1].get("stream") is True
    assert getattr(fakes, provider).streams_done == 1


def test_streamed_headers_name_the_route(proxy: ProxyServer, fakes: Any) -> None:
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": WEATHER}]}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-router-model"] == "anthropic/claude-haiku-4-5"
        assert response.headers["x-router-intent"] == "weather"
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: "):])
    assert last["choices"][0]["finish_reason"] == "stop" and "usage" not in last  # include_usage not asked


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize(("query", "provider"), [(GREETING, "openai"), (WEATHER, "anthropic"), (BALANCE, "gemini")])
def test_tool_calls_round_trip(client: openai.OpenAI, fakes: Any, query: str, provider: str) -> None:
    fake = getattr(fakes, provider)
    fake.script_tools(query, [("get_weather", {"city": "Paris"})])
    fake.script(query, "It is sunny in Paris.")
    first = client.chat.completions.create(model="auto", tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                           messages=[{"role": "user", "content": query}])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id

    second = client.chat.completions.create(model="auto", tools=[WEATHER_TOOL], messages=[  # type: ignore[list-item]
        {"role": "user", "content": query},
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},  # type: ignore[misc]
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 21}'}])
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    sent = fake.requests[-1]["body"]
    if provider == "openai":  # passed through
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 21}'}
    elif provider == "anthropic":  # translated: tool_use, then tool_result blocks
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["messages"][-2]["content"][-1]["type"] == "tool_use"
        result = sent["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == calls[0].id
    else:  # gemini: functionCall, then functionResponse
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        parts = [p for c in sent["contents"] for p in c["parts"]]
        assert any("functionCall" in p for p in parts)
        assert any(p.get("functionResponse", {}).get("name") == "get_weather" for p in parts)


def test_streamed_tool_calls(client: openai.OpenAI, fakes: Any) -> None:
    fakes.anthropic.script_tools(WEATHER, [("get_weather", {"city": "Paris"})])
    chunks = list(client.chat.completions.create(model="auto", tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                                 messages=[{"role": "user", "content": WEATHER}], stream=True))
    pieces = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_a_named_model_passes_through(client: openai.OpenAI, fakes: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": BALANCE}])  # balance: gemini if "auto"
    assert raw.parse().model == "claude-haiku-4-5"
    assert raw.headers["x-router-tier"] == "model" and "x-router-intent" not in raw.headers
    assert len(fakes.anthropic.requests) == 1 and not fakes.gemini.requests
    client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": GREETING}])
    assert len(fakes.gemini.requests) == 1 and not fakes.openai.requests


def _call_records(proxy: ProxyServer) -> list[dict[str, Any]]:
    return [r for r in proxy.dispatcher.sink.inner.records if r["kind"] == "call"]  # type: ignore[attr-defined]


def test_a_named_model_is_its_own_primary_not_a_fallback(proxy: ProxyServer, client: openai.OpenAI,
                                                          fakes: Any) -> None:
    before = len(_call_records(proxy))
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": GREETING}])  # the chat primary is openai
    assert "x-router-fallback-from" not in raw.headers
    body = {"model": "gemini/gemini-2.5-flash", "stream": True, "messages": [{"role": "user", "content": GREETING}]}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200 and "x-router-fallback-from" not in response.headers
        chunks = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                  if line.startswith("data: {")]
    assert chunks[-1]["x_router"]["fallback_from"] is None
    records = _call_records(proxy)[before:]
    assert [(r["provider"], r["fallback_from"]) for r in records] == [("anthropic", None), ("gemini", None)]


def test_out_of_scope_gets_the_refusal_and_no_model_is_called(client: openai.OpenAI, fakes: Any) -> None:
    raw = _ask(client, OUT_OF_SCOPE)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Sorry, I can't help with that here."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 0
    assert raw.headers["x-router-intent"] == "out_of_scope" and raw.headers["x-router-model"] == "router/refusal"
    assert raw.headers["x-router-cost-usd"] == "0"
    text, _ = _stream(client, OUT_OF_SCOPE)
    assert text == "Sorry, I can't help with that here."
    assert not any(f.requests for f in fakes.all())


def test_the_session_comes_from_the_header_else_user(client: openai.OpenAI, fakes: Any) -> None:
    raw = _ask(client, GREETING, user="agent-7")
    assert raw.headers["x-router-session"] == "agent-7"
    raw = _ask(client, GREETING, user="agent-7", extra_headers={"x-router-session": "s-1"})
    assert raw.headers["x-router-session"] == "s-1"
    raw = _ask(client, GREETING, user="evil\r\nset-cookie: x=1 é")  # never a header of its own
    assert raw.headers["x-router-session"] == "evil\\r\\nset-cookie: x=1 \\xe9" and "set-cookie" not in raw.headers


def test_models_lists_auto_and_the_configured_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto"
    assert {"gpt-5.4-nano", "claude-haiku-4-5", "gemini-2.5-flash"} <= set(ids)


# -- sticky sessions ------------------------------------------------------------------------------------
# On the proxy index "and in euros?" is unsure (escalated) between the money intents, and its best guess is
# exchange_rate already: both servers answer unsure turns as out of scope (proxy.escalated: out_of_scope), so
# only the session's remembered intent can take it to exchange_rate.
RATE = "what is the exchange rate between dollars and pesos"
FOLLOW_UP = "and in euros?"


def _sticky_proxy(start_proxy: Callable[..., ProxyServer], fakes: Any, enabled: bool) -> ProxyServer:
    from tests.service.conftest import proxy_routing

    return start_proxy(proxy_routing(fakes, proxy={"escalated": "out_of_scope",
                                                   "sticky": {"enabled": enabled, "max_words": 6}}))


def _turns(client: openai.OpenAI, session: str | None) -> tuple[Any, Any]:
    headers = {"x-router-session": session} if session else {}
    first = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": RATE}], extra_headers=headers)
    follow = client.chat.completions.with_raw_response.create(model="auto", extra_headers=headers, messages=[
        {"role": "user", "content": RATE}, {"role": "assistant", "content": "About 17 pesos a dollar."},
        {"role": "user", "content": FOLLOW_UP}])
    return first, follow


def test_sticky_on_keeps_the_sessions_intent(start_proxy: Callable[..., ProxyServer], proxy_fakes: Any,
        request: pytest.FixtureRequest) -> None:
    proxy = _sticky_proxy(start_proxy, proxy_fakes, enabled=True)
    proxy.fakes.clear()
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    first, follow = _turns(client, "s-euro")
    assert first.headers["x-router-intent"] == "exchange_rate" and first.headers["x-router-tier"] != "sticky"
    assert follow.headers["x-router-intent"] == "exchange_rate" and follow.headers["x-router-tier"] == "sticky"
    assert follow.headers["x-router-model"] == "anthropic/claude-haiku-4-5"  # exchange_rate's chat model
    assert [r["body"]["messages"][-1]["content"] for r in proxy.fakes.anthropic.requests] == [RATE, FOLLOW_UP]
    # Without a session of its own (the default session) a turn keeps nothing; nor does another session.
    _, anonymous = _turns(client, None)
    assert anonymous.headers["x-router-intent"] == "out_of_scope"
    other = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": FOLLOW_UP}], extra_headers={"x-router-session": "s-new"})
    assert other.headers["x-router-intent"] == "out_of_scope"
    # A long turn is classified on its own, sticky or not.
    long_turn = client.chat.completions.with_raw_response.create(
        model="auto", extra_headers={"x-router-session": "s-euro"},
        messages=[{"role": "user", "content": "tell me a joke about cats and dogs and birds please"}])
    assert long_turn.headers["x-router-intent"] == "out_of_scope"


def test_sticky_off_classifies_the_follow_up_alone(start_proxy: Callable[..., ProxyServer], proxy_fakes: Any,
        request: pytest.FixtureRequest) -> None:
    proxy = _sticky_proxy(start_proxy, proxy_fakes, enabled=False)
    proxy.fakes.clear()
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)  # its pooled connections, not left to the GC
    first, follow = _turns(client, "s-euro")
    assert first.headers["x-router-intent"] == "exchange_rate"
    assert follow.headers["x-router-intent"] == "out_of_scope" and follow.headers["x-router-tier"] != "sticky"
    assert follow.headers["x-router-model"] == "router/refusal"
    assert len(proxy.fakes.anthropic.requests) == 1  # only the first turn reached a model


def test_metrics_count_the_proxied_requests(proxy: ProxyServer, client: openai.OpenAI, fakes: Any) -> None:
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": GREETING}])
    text = httpx.get(f"{proxy.url}/metrics", timeout=30).text
    assert 'router_proxy_requests_total{api="openai",route="auto",status="200"}' in text
    assert 'router_proxy_requests_total{api="openai",route="none",status="404"}' in text
    assert 'router_provider_attempts_total{model="gpt-5.4-nano",provider="openai",stage="chat",status="ok"}' in text
