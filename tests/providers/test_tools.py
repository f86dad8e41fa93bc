"""Tools both ways for each hosted adapter, against its loopback server: the tools and tool choice in the
provider's shape, the model's calls back as ``ToolCall``s (whole and streamed), and a conversation's
tool turns sent back as the provider wants them (OpenAI tool messages, Anthropic tool_result blocks,
Gemini functionResponse parts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

import router.providers._gemini as _gemini_module
from router.errors import RequestRejected
from router.providers import (
    ChatRequest,
    Completion,
    HttpClients,
    Message,
    ProviderConfig,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    build_provider,
)
from router.testing import FakeGemini, FakeOpenAI
from router.testing._loopback import Event, sse
from tests.providers.test_stream import KEYS, MODELS, NAMES, Servers

WEATHER = Tool("get_weather", "The weather in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Tool("get_time", "The time in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
QUESTION = "weather and time in Paris?"
ASK = ChatRequest(system="Use the tools.", messages=(Message("user", QUESTION),), tools=(WEATHER, TIME),
                  tool_choice=ToolChoice("auto"), max_tokens=64)
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]


@pytest.fixture
def tool_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    made = Servers()
    for name in NAMES:
        made[name].start()
        made[name].script_tools(QUESTION, CALLS)
        made[name].script(QUESTION, "Sunny, and it is noon.")
    yield made
    for name in NAMES:
        made[name].stop()


async def _complete(servers: Servers, name: str, request: ChatRequest) -> Completion:
    clients = HttpClients()
    try:
        result: Completion = await servers.provider(name, clients).complete(MODELS[name], request, 2.0)
        return result
    finally:
        await clients.aclose()


async def _stream(servers: Servers, name: str, request: ChatRequest) -> list[StreamEvent]:
    clients = HttpClients()
    try:
        return [e async for e in servers.provider(name, clients).stream(MODELS[name], request, 2.0)]
    finally:
        await clients.aclose()


def _args(calls: tuple[ToolCall, ...]) -> list[tuple[str, Any]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("name", NAMES)
def test_the_models_calls_come_back_as_tool_calls(tool_servers: Servers, name: str) -> None:
    completion = asyncio.run(_complete(tool_servers, name, ASK))
    assert _args(completion.tool_calls) == CALLS and completion.finish == "tool_calls"
    assert all(c.id for c in completion.tool_calls) and len({c.id for c in completion.tool_calls}) == 2
    assert completion.text == ""


@pytest.mark.parametrize("name", NAMES)
def test_streamed_calls_come_as_deltas_and_whole_in_the_end(tool_servers: Servers, name: str) -> None:
    events = asyncio.run(_stream(tool_servers, name, ASK))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    firsts = [d for d in deltas if d.name is not None]
    assert [d.name for d in firsts] == ["get_weather", "get_time"] and all(d.id for d in firsts)
    for index, (_, args) in enumerate(CALLS):  # the pieces of each call make its arguments
        assert json.loads("".join(d.arguments for d in deltas if d.index == index)) == args
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.completion.finish == "tool_calls"
    assert _args(end.completion.tool_calls) == CALLS
    assert [c.id for c in end.completion.tool_calls] == [d.id for d in firsts]


def test_tools_and_tool_choice_go_in_each_providers_shape(tool_servers: Servers) -> None:
    for name in NAMES:
        asyncio.run(_complete(tool_servers, name, ASK))
    openai = tool_servers.openai.requests[0]["body"]
    assert openai["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER.parameters}}
    assert openai["tool_choice"] == "auto"
    anthropic = tool_servers.anthropic.requests[0]["body"]
    assert anthropic["tools"][0] == {"name": "get_weather", "description": "The weather in a city.",
                                     "input_schema": WEATHER.parameters}
    assert anthropic["tools"][-1]["cache_control"] == {"type": "ephemeral"} and anthropic["tool_choice"] == {
        "type": "auto"}
    gemini = tool_servers.gemini.requests[0]["body"]
    assert gemini["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "The weather in a city.", "parametersJsonSchema": WEATHER.parameters},
        {"name": "get_time", "description": "The time in a city.", "parametersJsonSchema": TIME.parameters}]}]
    assert gemini["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


@pytest.mark.parametrize("choice, openai, anthropic, gemini", [
    (ToolChoice("none"), "none", {"type": "none"}, {"mode": "NONE"}),
    (ToolChoice("required"), "required", {"type": "any"}, {"mode": "ANY"}),
    (ToolChoice("tool", "get_time"), {"type": "function", "function": {"name": "get_time"}},
     {"type": "tool", "name": "get_time"}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
def test_each_tool_choice_maps(tool_servers: Servers, choice: ToolChoice, openai: Any, anthropic: Any,
                               gemini: Any) -> None:
    request = ChatRequest(system="s", messages=ASK.messages, tools=ASK.tools, tool_choice=choice)
    for name in NAMES:
        asyncio.run(_complete(tool_servers, name, request))
    assert tool_servers.openai.requests[0]["body"]["tool_choice"] == openai
    assert tool_servers.anthropic.requests[0]["body"]["tool_choice"] == anthropic
    assert tool_servers.gemini.requests[0]["body"]["toolConfig"] == {"functionCallingConfig": gemini}


def _after_calls(calls: tuple[ToolCall, ...], named: bool) -> ChatRequest:
    """The conversation once the calls were run: the assistant's calls, then one result per call."""
    results = tuple(Message("tool", f"result of {c.name}", tool_call_id=c.id, name=c.name if named else None)
                    for c in calls)
    return ChatRequest(system="Use the tools.", tools=ASK.tools, max_tokens=64, messages=(
        Message("user", QUESTION), Message("assistant", "", tool_calls=calls), *results))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_results_go_back_and_the_model_answers(tool_servers: Servers, name: str, streamed: bool) -> None:
    first = asyncio.run(_complete(tool_servers, name, ASK))
    request = _after_calls(first.tool_calls, named=False)  # Gemini looks the names up by call id
    if streamed:
        events = asyncio.run(_stream(tool_servers, name, request))
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        end = events[-1]
        assert isinstance(end, StreamEnd) and end.completion.tool_calls == () and end.completion.text == text
    else:
        text = asyncio.run(_complete(tool_servers, name, request)).text
    assert text == "Sunny, and it is noon."
    sent = tool_servers[name].requests[-1]["body"]
    ids = [c.id for c in first.tool_calls]
    if name == "openai":
        assert sent["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [
            {"id": ids[0], "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": ids[1], "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Paris"}'}}]}
        assert sent["messages"][3:] == [
            {"role": "tool", "tool_call_id": ids[0], "content": "result of get_weather"},
            {"role": "tool", "tool_call_id": ids[1], "content": "result of get_time"}]
    elif name == "anthropic":
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # the results merged
        assert sent["messages"][1]["content"] == [
            {"type": "tool_use", "id": ids[0], "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": ids[1], "name": "get_time", "input": {"city": "Paris"}}]
        assert sent["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": ids[0], "content": "result of get_weather"},
            {"type": "tool_result", "tool_use_id": ids[1], "content": "result of get_time"}]
    else:
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        assert sent["contents"][1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                                                {"functionCall": {"name": "get_time", "args": {"city": "Paris"}}}]
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"result": "result of get_weather"}}},
            {"functionResponse": {"name": "get_time", "response": {"result": "result of get_time"}}}]


def test_an_assistant_turn_with_text_and_calls_keeps_both(tool_servers: Servers) -> None:
    calls = (ToolCall("call_9", "get_weather", '{"city": "Paris"}'),)
    request = ChatRequest(system="s", tools=ASK.tools, messages=(
        Message("user", QUESTION), Message("assistant", "Let me look.", tool_calls=calls),
        Message("tool", "sunny", tool_call_id="call_9", name="get_weather")))
    for name in NAMES:
        asyncio.run(_complete(tool_servers, name, request))
    assert tool_servers.openai.requests[0]["body"]["messages"][2]["content"] == "Let me look."
    assert tool_servers.anthropic.requests[0]["body"]["messages"][1]["content"][0] == {"type": "text",
                                                                                    "text": "Let me look."}
    assert tool_servers.gemini.requests[0]["body"]["contents"][1]["parts"][0] == {"text": "Let me look."}


@pytest.mark.parametrize("name", ["anthropic", "gemini"])
def test_arguments_that_are_not_a_json_object_are_refused_before_sending(tool_servers: Servers, name: str) -> None:
    request = ChatRequest(system="s", tools=ASK.tools, messages=(
        Message("user", QUESTION), Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", "[1]"),)),
        Message("tool", "x", tool_call_id="c1")))
    with pytest.raises(RequestRejected, match=r"messages\[1\].tool_calls\[0\].arguments is not a JSON object"):
        asyncio.run(_complete(tool_servers, name, request))
    assert tool_servers[name].requests == []


def test_gemini_needs_the_name_of_a_result_it_cannot_look_up(tool_servers: Servers) -> None:
    request = ChatRequest(system="s", tools=ASK.tools, messages=(
        Message("user", QUESTION), Message("tool", "sunny", tool_call_id="unknown")))
    with pytest.raises(RequestRejected, match=r"messages\[1\]: a tool result needs its function's name"):
        asyncio.run(_complete(tool_servers, "gemini", request))


def test_anthropic_structured_output_still_forces_its_own_tool(tool_servers: Servers) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = ChatRequest(system="s", messages=(Message("user", "just the city"),), json_schema=schema,
                          schema_name="answer")
    tool_servers.anthropic.script("just the city", '{"city": "Paris"}')
    completion = asyncio.run(_complete(tool_servers, "anthropic", request))
    assert json.loads(completion.text) == {"city": "Paris"}
    body = tool_servers.anthropic.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "answer"} and len(body["tools"]) == 1


class _GoogleCompatible(FakeOpenAI):
    """Google's OpenAI-compatible endpoint, as it streams calls: no ``index`` on a tool-call piece, and a turn
    of calls that finishes ``stop``. ``repeat``: every piece names its call's id and name again."""

    def __init__(self, *args: Any, repeat: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeat = repeat

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        payload, model = super().handle(method, path, headers, body)
        payload["choices"][0]["finish_reason"] = "stop"
        return payload, model

    def stream_events(self, path: str, body: dict[str, Any], payload: dict[str, Any]) -> list[Event]:
        out, named = [], {}
        for event in super().stream_events(path, body, payload):
            text = event.data.decode()
            if not text.startswith("data: {"):
                out.append(event)
                continue
            data = json.loads(text.removeprefix("data: "))
            for choice in data.get("choices") or ():
                for call in choice["delta"].get("tool_calls") or ():
                    index = call.pop("index")
                    if "id" in call:
                        named[index] = (call["id"], call["function"]["name"])
                    elif self.repeat:
                        call["id"], call["function"]["name"] = named[index]
            out.append(sse(data, content=event.content))
        return out


@pytest.fixture
def google_compatible(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[_GoogleCompatible]:
    monkeypatch.setenv("OPENAI_API_KEY", KEYS["OPENAI_API_KEY"])
    server = _GoogleCompatible(api_key=KEYS["OPENAI_API_KEY"], repeat=request.param)
    server.start()
    server.script_tools(QUESTION, CALLS)
    yield server
    server.stop()


def _openai(server: FakeOpenAI, clients: HttpClients) -> Any:
    config = ProviderConfig(kind="openai", base_url=server.url, api_key_env="OPENAI_API_KEY")
    return build_provider("openai", config, clients)


@pytest.mark.parametrize("google_compatible", [False, True], indirect=True, ids=["ids-once", "ids-repeated"])
def test_streamed_calls_without_an_index_are_told_apart_by_their_ids(google_compatible: _GoogleCompatible) -> None:
    async def run() -> list[StreamEvent]:
        clients = HttpClients()
        try:
            return [e async for e in _openai(google_compatible, clients).stream("gemini-3-flash", ASK, 2.0)]
        finally:
            await clients.aclose()

    events = asyncio.run(run())
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    firsts = [d for d in deltas if d.id is not None]
    assert [(d.index, d.name) for d in firsts] == [(0, "get_weather"), (1, "get_time")]  # id and name once each
    assert all(d.name is None for d in deltas if d.id is None)
    for index, (_, args) in enumerate(CALLS):
        assert json.loads("".join(d.arguments for d in deltas if d.index == index)) == args
    end = events[-1]
    assert isinstance(end, StreamEnd) and _args(end.completion.tool_calls) == CALLS
    assert [c.id for c in end.completion.tool_calls] == [d.id for d in firsts]
    assert end.completion.finish == "tool_calls" and end.completion.finish_reason == "stop"


@pytest.mark.parametrize("google_compatible", [False], indirect=True)
def test_a_turn_of_calls_that_finishes_stop_is_a_tool_calls_finish(google_compatible: _GoogleCompatible) -> None:
    async def run() -> Completion:
        clients = HttpClients()
        try:
            result: Completion = await _openai(google_compatible, clients).complete("gemini-3-flash", ASK, 2.0)
            return result
        finally:
            await clients.aclose()

    completion = asyncio.run(run())
    assert _args(completion.tool_calls) == CALLS and completion.finish == "tool_calls"


def test_gemini_call_ids_are_unique_across_turns(tool_servers: Servers) -> None:
    first = asyncio.run(_complete(tool_servers, "gemini", ASK))
    again = asyncio.run(_complete(tool_servers, "gemini", ASK))
    ids = [c.id for c in (*first.tool_calls, *again.tool_calls)]
    assert len(set(ids)) == 4 and all(i.startswith("call_") for i in ids)
    tool_servers.gemini.send_call_ids = True  # Gemini's own ids, where it sends them, are kept
    own = asyncio.run(_complete(tool_servers, "gemini", ASK))
    assert [c.id for c in own.tool_calls] == ["call_1", "call_2"]  # the fake numbers its own: call_<n>


class _SigningGemini(FakeGemini):
    """A thinking Gemini: its functionCall parts carry a ``thoughtSignature`` (``sig-<n>`` for the n-th call
    it made), on the first call of a turn only unless ``every`` (as Gemini 3 signs parallel calls)."""

    every = False

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        payload, model = super().handle(method, path, headers, body)
        calls = [p for p in payload["candidates"][0]["content"]["parts"] if "functionCall" in p]
        for part in calls if self.every else calls[:1]:
            self.signed = getattr(self, "signed", 0) + 1
            part["thoughtSignature"] = f"sig-{self.signed}"
        return payload, model


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SigningGemini]:
    monkeypatch.setenv("GEMINI_API_KEY", KEYS["GEMINI_API_KEY"])
    server = _SigningGemini(api_key=KEYS["GEMINI_API_KEY"])
    server.start()
    server.script_tools(QUESTION, CALLS)
    server.script(QUESTION, "Sunny, and it is noon.")
    yield server
    server.stop()


def _gemini(server: FakeGemini, clients: HttpClients) -> Any:
    config = ProviderConfig(kind="gemini", base_url=server.url, api_key_env="GEMINI_API_KEY")
    return build_provider("gemini", config, clients)


async def _gemini_turn(server: FakeGemini, request: ChatRequest, streamed: bool) -> tuple[ToolCall, ...]:
    clients = HttpClients()
    try:
        provider = _gemini(server, clients)
        if streamed:
            end = [e async for e in provider.stream(MODELS["gemini"], request, 2.0)][-1]
            assert isinstance(end, StreamEnd)
            return end.completion.tool_calls
        completion: Completion = await provider.complete(MODELS["gemini"], request, 2.0)
        return completion.tool_calls
    finally:
        await clients.aclose()


@pytest.mark.parametrize("streamed", [False, True])
def test_gemini_thought_signatures_go_back_on_their_calls(signing: _SigningGemini, streamed: bool) -> None:
    calls = asyncio.run(_gemini_turn(signing, ASK, streamed))
    assert _args(calls) == CALLS
    # A ToolCall carries no signature: the conversation comes back as the client has it (ids only).
    asyncio.run(_gemini_turn(signing, _after_calls(calls, named=False), streamed))
    parts = signing.requests[-1]["body"]["contents"][1]["parts"]
    assert parts == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-1"},
        {"functionCall": {"name": "get_time", "args": {"city": "Paris"}}}]  # the unsigned call goes as it came


def test_gemini_keeps_the_most_recent_signatures_only(signing: _SigningGemini,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gemini_module, "SIGNATURES", _gemini_module._Signatures(1))
    signing.every = True
    calls = asyncio.run(_gemini_turn(signing, ASK, False))
    asyncio.run(_gemini_turn(signing, _after_calls(calls, named=False), False))
    parts = signing.requests[-1]["body"]["contents"][1]["parts"]
    # one kept: the later call's signature goes back; the earlier one was let go (sent without, as before)
    assert [p.get("thoughtSignature") for p in parts] == [None, "sig-2"]
