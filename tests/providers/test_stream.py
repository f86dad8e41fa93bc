"""Each hosted adapter's ``stream`` against its loopback server: text pieces, usage and finish in the one
``StreamEnd``, errors before and during the stream, timeouts, the client going away, and the request on
the wire (stream flags, no system part when the system prompt is empty, stop and top_p)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from router.errors import BadResponse, ProviderTimeout, ProviderUnavailable, RateLimited, RequestRejected
from router.providers import (
    ChatRequest,
    HttpClients,
    Message,
    ProviderConfig,
    StreamEnd,
    StreamEvent,
    TextDelta,
    build_provider,
)
from router.testing import FakeAnthropic, FakeGemini, FakeOpenAI

KEYS = {"OPENAI_API_KEY": "sk-test-OPENAI-secret", "ANTHROPIC_API_KEY": "sk-ant-test-secret",
        "GEMINI_API_KEY": "AIza-test-secret"}
MODELS = {"openai": "gpt-5.4-nano", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
NAMES = list(MODELS)
ANSWER = "Paris is lovely in the spring and in the autumn too"
REQUEST = ChatRequest(system="You are terse.", messages=(Message("user", "tell me about Paris"),), max_tokens=64)


class Servers:
    def __init__(self) -> None:
        self.openai = FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"])
        self.anthropic = FakeAnthropic(api_key=KEYS["ANTHROPIC_API_KEY"])
        self.gemini = FakeGemini(api_key=KEYS["GEMINI_API_KEY"])

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def provider(self, name: str, clients: HttpClients) -> Any:
        config = ProviderConfig(kind=name, base_url=self[name].url, api_key_env=f"{name.upper()}_API_KEY")
        return build_provider(name, config, clients)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    made = Servers()
    for name in NAMES:
        made[name].start()
        made[name].script("tell me about Paris", ANSWER)
    yield made
    for name in NAMES:
        made[name].stop()


async def _stream(servers: Servers, name: str, request: ChatRequest = REQUEST, timeout_s: float = 2.0,
                  into: list[StreamEvent] | None = None) -> list[StreamEvent]:
    clients = HttpClients()
    events: list[StreamEvent] = [] if into is None else into
    try:
        async for event in servers.provider(name, clients).stream(MODELS[name], request, timeout_s):
            events.append(event)
        return events
    finally:
        await clients.aclose()


def _text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("name", NAMES)
def test_text_comes_in_pieces_and_the_end_carries_the_whole_answer(servers: Servers, name: str) -> None:
    events = asyncio.run(_stream(servers, name))
    end = events[-1]
    assert isinstance(end, StreamEnd) and sum(isinstance(e, StreamEnd) for e in events) == 1
    assert _text(events) == ANSWER and sum(isinstance(e, TextDelta) for e in events) > 1
    completion = end.completion
    assert completion.text == ANSWER and completion.finish == "stop" and completion.tool_calls == ()
    assert completion.usage.output_tokens > 0 and completion.usage.input_tokens > 0
    assert not completion.usage.estimated
    assert servers[name].streams_done == 1


def test_the_stream_flags_on_the_wire(servers: Servers) -> None:
    for name in NAMES:
        asyncio.run(_stream(servers, name))
    openai = servers.openai.requests[0]["body"]
    assert openai["stream"] is True and openai["stream_options"] == {"include_usage": True}
    assert servers.anthropic.requests[0]["body"]["stream"] is True
    assert servers.gemini.requests[0]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert "stream" not in servers.gemini.requests[0]["body"]


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_without_usage_is_charged_the_estimate(servers: Servers, name: str) -> None:
    servers[name].fault("no_usage")
    end = asyncio.run(_stream(servers, name))[-1]
    assert isinstance(end, StreamEnd) and end.completion.usage.estimated
    assert end.completion.usage.output_tokens == REQUEST.max_tokens


@pytest.mark.parametrize("name", NAMES)
def test_an_http_error_before_the_stream_maps_like_a_plain_call(servers: Servers, name: str) -> None:
    servers[name].fault("429")
    with pytest.raises(RateLimited) as info:
        asyncio.run(_stream(servers, name))
    assert info.value.retry_after == 1.0 and info.value.retryable
    servers[name].fault("400")
    with pytest.raises(RequestRejected) as rejected:
        asyncio.run(_stream(servers, name))
    assert rejected.value.reason == "http_400"


@pytest.mark.parametrize("name", NAMES)
def test_a_cut_stream_raises_provider_unavailable_out_of_the_iteration(servers: Servers, name: str) -> None:
    servers[name].fault("cut")
    events: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable) as info:
        asyncio.run(_stream(servers, name, into=events))
    assert info.value.reason == "connection" and info.value.retryable
    assert not any(isinstance(e, StreamEnd) for e in events)


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_an_error_event_mid_stream_raises_its_provider_error(servers: Servers, name: str) -> None:
    servers[name].fault("stream_error")
    events: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable) as info:
        asyncio.run(_stream(servers, name, into=events))
    assert "error in the stream" in str(info.value) and info.value.retryable
    assert _text(events)  # it came after some text


@pytest.mark.parametrize("name", NAMES)
def test_a_half_sent_event_is_a_bad_response(servers: Servers, name: str) -> None:
    servers[name].fault("malformed")
    with pytest.raises(BadResponse) as info:
        asyncio.run(_stream(servers, name))
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("name", NAMES)
def test_a_slow_first_event_times_out_within_timeout_s(servers: Servers, name: str) -> None:
    servers[name].fault("slow", seconds=3.0)
    with pytest.raises(ProviderTimeout):
        asyncio.run(_stream(servers, name, timeout_s=0.2))


@pytest.mark.parametrize("name", NAMES)
def test_a_stalled_gap_times_out_within_timeout_s(servers: Servers, name: str) -> None:
    servers[name].stream_chunk_delay_s = 1.0
    with pytest.raises(ProviderTimeout):
        asyncio.run(_stream(servers, name, timeout_s=0.2))


def _wait_for(check: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


@pytest.mark.parametrize("name", NAMES)
def test_closing_the_stream_early_closes_the_upstream_connection(servers: Servers, name: str) -> None:
    server = servers[name]
    server.stream_chunk_delay_s = 0.05

    async def first_piece_then_close() -> tuple[StreamEvent, bool]:
        clients = HttpClients()
        try:
            events = servers.provider(name, clients).stream(MODELS[name], REQUEST, 2.0)
            first: StreamEvent = await anext(events)
            await events.aclose()
            # Polled without yielding to the loop, before the pool closes: the connection must be gone by the
            # time aclose returns, not later when the loop finalizes a forgotten generator or closes the pool.
            return first, _wait_for(lambda: server.streams_cut == 1)
        finally:
            await clients.aclose()

    first, cut = asyncio.run(first_piece_then_close())
    assert isinstance(first, TextDelta) and cut
    assert server.streams_done == 0


@pytest.mark.parametrize("name", NAMES)
def test_a_structured_choice_is_not_streamed(servers: Servers, name: str) -> None:
    choice = ChatRequest(system="s", messages=REQUEST.messages, choices=("a", "b"))
    with pytest.raises(RequestRejected, match="not streamed") as info:
        asyncio.run(_stream(servers, name, choice))
    assert info.value.reason == "unsupported" and servers[name].requests == []


@pytest.mark.parametrize("name", NAMES)
def test_a_json_schema_answer_streams_as_its_json_text(servers: Servers, name: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    servers[name].script("the city please", '{"city": "Paris"}')
    request = ChatRequest(system="s", messages=(Message("user", "the city please"),), json_schema=schema,
                          schema_name="answer", max_tokens=64)
    events = asyncio.run(_stream(servers, name, request))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.completion.tool_calls == ()
    assert json.loads(_text(events)) == {"city": "Paris"} and end.completion.text == _text(events)


NO_SYSTEM = ChatRequest(system="", messages=REQUEST.messages, max_tokens=64, stop=("END",), top_p=0.5)


@pytest.mark.parametrize("streamed", [False, True])
def test_an_empty_system_sends_no_system_part_and_stop_and_top_p_go_in_each_shape(servers: Servers,
                                                                                  streamed: bool) -> None:
    async def run(name: str) -> None:
        if streamed:
            await _stream(servers, name, NO_SYSTEM)
            return
        clients = HttpClients()
        try:
            completion = await servers.provider(name, clients).complete(MODELS[name], NO_SYSTEM, 2.0)
        finally:
            await clients.aclose()
        assert completion.text == ANSWER and completion.finish == "stop"

    for name in NAMES:
        asyncio.run(run(name))
    openai = servers.openai.requests[0]["body"]
    assert [m["role"] for m in openai["messages"]] == ["user"]
    assert openai["stop"] == ["END"] and openai["top_p"] == 0.5
    anthropic = servers.anthropic.requests[0]["body"]
    assert "system" not in anthropic and anthropic["stop_sequences"] == ["END"] and anthropic["top_p"] == 0.5
    assert "temperature" not in anthropic  # newer models refuse both
    gemini = servers.gemini.requests[0]["body"]
    assert "systemInstruction" not in gemini
    assert gemini["generationConfig"]["stopSequences"] == ["END"] and gemini["generationConfig"]["topP"] == 0.5
