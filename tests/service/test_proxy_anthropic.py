"""`router serve --proxy`'s ``/v1/messages`` driven by the official `anthropic` SDK, streamed and not, routed by
intent like the OpenAI path, over the loopback providers (an OpenAI-backed route translated both ways)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.service.conftest import ProxyServer

WEATHER = "what's the weather in paris"  # info.weather -> anthropic
BALANCE = "how much money is in my checking account"  # banking.balance -> gemini
GREETING = "hello there"  # greeting -> the default, openai


@pytest.fixture(scope="module")
def proxy(start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy()


@pytest.fixture
def fakes(proxy: ProxyServer) -> Any:
    proxy.fakes.clear()
    return proxy.fakes


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0) as made:
        yield made  # closed after the test: its pooled connections are not left to the GC


def test_messages_routed_by_intent(client: anthropic.Anthropic, fakes: Any) -> None:
    fakes.anthropic.script(WEATHER, "Sunny in Paris.")
    fakes.openai.script(GREETING, "Hi! How can I help?")
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": WEATHER}])
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Sunny in Paris."
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    assert raw.headers["x-router-model"] == "anthropic/claude-haiku-4-5" and raw.headers["x-router-intent"] == "weather"
    assert fakes.anthropic.requests[-1]["body"]["system"][0]["text"] == "Be brief."

    # An OpenAI-backed route, translated both ways.
    greeting = client.messages.create(model="auto", max_tokens=100, system="Be brief.",
                                      messages=[{"role": "user", "content": GREETING}])
    assert greeting.content[0].type == "text" and greeting.content[0].text == "Hi! How can I help?"
    assert greeting.stop_reason == "end_turn"
    sent = fakes.openai.requests[-1]["body"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": GREETING}]
    assert sent["max_completion_tokens"] == 100
    assert len(fakes.anthropic.requests) == 1 and len(fakes.openai.requests) == 1


@pytest.mark.parametrize(("query", "provider"), [(WEATHER, "anthropic"), (GREETING, "openai"), (BALANCE, "gemini")])
def test_streamed_messages(client: anthropic.Anthropic, fakes: Any, query: str, provider: str) -> None:
    answer = "one two three four five"
    getattr(fakes, provider).script(query, answer)
    with client.messages.stream(model="auto", max_tokens=100, messages=[{"role": "user", "content": query}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == answer and len(pieces) > 1
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    assert getattr(fakes, provider).requests[-1].get("stream") is True


def test_the_api_key_header_is_the_service_key(start_proxy: Callable[..., ProxyServer],
                                               monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("PROXY_SERVICE_KEY", "svc-secret")
    proxy = start_proxy(api_key_env="PROXY_SERVICE_KEY")
    good = anthropic.Anthropic(base_url=proxy.url, api_key="svc-secret", max_retries=0)
    request.addfinalizer(good.close)  # its pooled connections, not left to the GC
    assert good.messages.create(model="auto", max_tokens=20, messages=[{"role": "user", "content": GREETING}]).content
    assert [m.id for m in good.models.list()][0] == "auto"  # Anthropic's list format, with x-api-key
    bad = anthropic.Anthropic(base_url=proxy.url, api_key="wrong", max_retries=0)
    request.addfinalizer(bad.close)  # its pooled connections, not left to the GC
    with pytest.raises(anthropic.AuthenticationError) as refused:
        bad.messages.create(model="auto", max_tokens=20, messages=[{"role": "user", "content": GREETING}])
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


WEATHER_TOOL = {"name": "get_weather", "description": "The weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize(("query", "provider"), [(WEATHER, "anthropic"), (GREETING, "openai")])
def test_tool_use_round_trip(client: anthropic.Anthropic, fakes: Any, query: str, provider: str) -> None:
    fake = getattr(fakes, provider)
    fake.script_tools(query, [("get_weather", {"city": "Paris"})])
    fake.script(query, "It is sunny in Paris.")
    first = client.messages.create(model="auto", max_tokens=100, tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                   messages=[{"role": "user", "content": query}])
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"})]

    second = client.messages.create(model="auto", max_tokens=100, tools=[WEATHER_TOOL], messages=[  # type: ignore[list-item]
        {"role": "user", "content": query},
        {"role": "assistant", "content": [u.model_dump() for u in uses]},  # type: ignore[misc]
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 C"}]}])
    assert second.content[0].type == "text" and second.content[0].text == "It is sunny in Paris."
    sent = fake.requests[-1]["body"]
    if provider == "openai":  # translated: assistant tool_calls, then a tool message
        assert sent["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": uses[0].id, "content": "21 C"}
        assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    else:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == uses[0].id

    # The same first turn, streamed: the tool_use block's input arrives as input_json_delta pieces.
    with client.messages.stream(model="auto", max_tokens=100, tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": query}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in streamed] == [("get_weather", {"city": "Paris"})]
