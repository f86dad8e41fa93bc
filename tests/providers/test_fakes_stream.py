"""The loopback provider fakes, spoken to with raw httpx: tools and tool turns checked and answered in
each provider's format, streams in each provider's wire format (event order, pieces, usage), stream
faults, and the counters of streams finished and of streams whose client went away."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from router.testing import FakeAnthropic, FakeGemini, FakeOpenAI

ANSWER = "Paris is sunny and mild today"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="k") as fake:
        yield fake


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="k") as fake:
        yield fake


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_key="k") as fake:
        yield fake


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per event; events end at a blank line (``\\n\\n`` or ``\\r\\n\\r\\n``)."""
    out = []
    for block in re.split(r"\r?\n\r?\n", text):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((name, "\n".join(data)))
    return out


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


# -- OpenAI ------------------------------------------------------------------------------------------------
def oa_post(client: httpx.Client, fake: FakeOpenAI, **body: Any) -> httpx.Response:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "weather in Paris"}], **body}
    return client.post(f"{fake.url}/chat/completions", json=body, headers={"Authorization": "Bearer k"})


def oa_chunks(resp: httpx.Response) -> list[Any]:
    events = parse_sse(resp.text)
    assert events[-1] == (None, "[DONE]")
    return [json.loads(data) for _, data in events[:-1]]


def test_openai_stream_text_with_usage(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script("weather in Paris", ANSWER)
    resp = oa_post(client, openai, stream=True, stream_options={"include_usage": True})
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["transfer-encoding"] == "chunked"
    chunks = oa_chunks(resp)
    assert all(c["object"] == "chat.completion.chunk" and "usage" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(texts) == len(ANSWER.split()) and "".join(texts) == ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(ANSWER.split())
    assert openai.requests[0]["stream"] is True and openai.streams_done == 1
    # The connection stays open for the next request (keep-alive across a chunked stream).
    assert oa_post(client, openai).json()["choices"][0]["message"]["content"] == ANSWER
    assert len(openai._connections) == 1 and openai.requests[1]["stream"] is False


def test_openai_stream_without_usage_option_and_chunk_cap(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script("weather in Paris", ANSWER)
    openai.stream_chunks = 2
    chunks = oa_chunks(oa_post(client, openai, stream=True))
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(texts) == 2 and "".join(texts) == ANSWER


def test_openai_tool_calls_round_trip(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script_tools("weather in Paris", [("get_weather", {"city": "Paris"}), ("not_offered", {})])
    openai.script("weather in Paris", ANSWER)
    first = oa_post(client, openai, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=True).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]  # a tool the request did not offer is not called
    assert re.fullmatch(r"call_\d+", call["id"]) and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    turns = [{"role": "user", "content": "weather in Paris"},
             {"role": "assistant", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": call["id"], "content": [{"type": "text", "text": "sunny"}]}]
    second = oa_post(client, openai, messages=turns, tools=[WEATHER]).json()
    assert second["choices"][0]["message"]["content"] == ANSWER
    none = oa_post(client, openai, tools=[WEATHER], tool_choice="none").json()
    assert none["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_calls_stream(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script_tools("weather in Paris", [("get_weather", {"city": "Paris", "unit": "celsius"})])
    chunks = oa_chunks(oa_post(client, openai, stream=True, tools=[WEATHER],
                               tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert deltas[0]["index"] == 0 and deltas[0]["id"].startswith("call_") and deltas[0]["type"] == "function"
    assert deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert len(deltas) > 2 and all("id" not in d and "name" not in d["function"] for d in deltas[1:])
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": []}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": "yes"}, "stream"),
    ({"top_p": 2}, "top_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
     "messages.[1].role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "and?"}]}, "messages.[1].role"),
    ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "txt", "text": "hi"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
])
def test_openai_rejects_bad_tool_requests(openai: FakeOpenAI, client: httpx.Client, body: dict[str, Any],
                                          param: str) -> None:
    resp = oa_post(client, openai, **body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_openai_mid_stream_error_event(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script("weather in Paris", ANSWER)
    openai.fault("stream_error")
    events = parse_sse(oa_post(client, openai, stream=True).text)
    chunks = [json.loads(data) for _, data in events]
    assert chunks[1]["choices"][0]["delta"]["content"] == "Paris "  # one content event, then the error
    assert chunks[2]["error"]["type"] == "server_error" and len(chunks) == 3


# -- Anthropic ---------------------------------------------------------------------------------------------
def an_post(client: httpx.Client, fake: FakeAnthropic, **body: Any) -> httpx.Response:
    body = {"model": "claude-x", "max_tokens": 100,
            "messages": [{"role": "user", "content": "weather in Paris"}], **body}
    return client.post(f"{fake.url}/v1/messages", json=body,
                       headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})


AN_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}


def test_anthropic_stream_text(anthropic: FakeAnthropic, client: httpx.Client) -> None:
    anthropic.script("weather in Paris", ANSWER)
    resp = an_post(client, anthropic, stream=True, system="be brief")
    assert resp.headers["content-type"] == "text/event-stream"
    events = parse_sse(resp.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == name for d, name in zip(data, names, strict=True))
    usage = data[0]["message"]["usage"]
    assert usage["output_tokens"] == 1 and {"input_tokens", "cache_creation_input_tokens",
                                            "cache_read_input_tokens"} <= set(usage)
    assert data[2]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == ANSWER
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"]["output_tokens"] == len(ANSWER.split())


def test_anthropic_tool_use_round_trip_and_stream(anthropic: FakeAnthropic, client: httpx.Client) -> None:
    anthropic.script_tools("weather in Paris", [("get_weather", {"city": "Paris"})])
    anthropic.script("weather in Paris", ANSWER)
    events = [json.loads(d) for _, d in parse_sse(an_post(client, anthropic, stream=True, tools=[AN_TOOL],
                                                          tool_choice={"type": "auto"}).text)]
    start = next(e for e in events if e["type"] == "content_block_start")["content_block"]
    assert start["type"] == "tool_use" and re.fullmatch(r"toolu_\d+", start["id"]) and start["input"] == {}
    partial = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert partial[0] == "" and json.loads("".join(partial)) == {"city": "Paris"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    turns = [{"role": "user", "content": "weather in Paris"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": start["id"], "name": "get_weather",
                                                "input": {"city": "Paris"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": start["id"],
                                           "content": [{"type": "text", "text": "sunny"}], "is_error": False}]}]
    answer = an_post(client, anthropic, messages=turns, tools=[AN_TOOL]).json()
    assert answer["content"] == [{"type": "text", "text": ANSWER}] and answer["stop_reason"] == "end_turn"


@pytest.mark.parametrize(("body", "words"), [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}]}]},
     "unexpected `tool_use_id`"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": "well?"}]}, "without `tool_result`"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages.0.content.0"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tools": [AN_TOOL], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
    ({"stop_sequences": "END"}, "stop_sequences"),
])
def test_anthropic_rejects_bad_tool_turns(anthropic: FakeAnthropic, client: httpx.Client, body: dict[str, Any],
                                          words: str) -> None:
    resp = an_post(client, anthropic, **body)
    assert resp.status_code == 400
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"]


def test_anthropic_stream_error_event(anthropic: FakeAnthropic, client: httpx.Client) -> None:
    anthropic.script("weather in Paris", ANSWER)
    anthropic.fault("stream_error")
    events = parse_sse(an_post(client, anthropic, stream=True).text)
    assert [name for name, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                            "error"]
    assert json.loads(events[-1][1]) == {"type": "error", "error": {"type": "overloaded_error",
                                                                    "message": "Overloaded"}}


def test_anthropic_forced_tool_structured_output_still_works(anthropic: FakeAnthropic, client: httpx.Client) -> None:
    anthropic.script("weather in Paris", '{"city": "Paris"}')
    body = an_post(client, anthropic, tools=[AN_TOOL], tool_choice={"type": "tool", "name": "get_weather"}).json()
    assert body["content"][0]["input"] == {"city": "Paris"} and body["stop_reason"] == "tool_use"


# -- Gemini ------------------------------------------------------------------------------------------------
GE_TOOLS = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                       "parametersJsonSchema": {"type": "object"}},
                                      {"name": "get_time", "parameters": {"type": "OBJECT"}}]}]


def ge_post(client: httpx.Client, fake: FakeGemini, method: str = "generateContent", query: str = "",
            **body: Any) -> httpx.Response:
    body = {"contents": [{"role": "user", "parts": [{"text": "weather in Paris"}]}], **body}
    return client.post(f"{fake.url}/v1beta/models/gemini-x:{method}{query}", json=body,
                       headers={"x-goog-api-key": "k"})


def test_gemini_stream_sse(gemini: FakeGemini, client: httpx.Client) -> None:
    gemini.script("weather in Paris", ANSWER)
    resp = ge_post(client, gemini, "streamGenerateContent", "?alt=sse")
    assert resp.headers["content-type"] == "text/event-stream" and resp.text.endswith("\r\n\r\n")
    objects = [json.loads(d) for _, d in parse_sse(resp.text)]
    parts = [o["candidates"][0]["content"]["parts"][0]["text"] for o in objects]
    assert len(parts) == len(ANSWER.split()) and "".join(parts) == ANSWER
    assert all("finishReason" not in o["candidates"][0] and "usageMetadata" not in o for o in objects[:-1])
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP"
    assert objects[-1]["usageMetadata"]["candidatesTokenCount"] == len(ANSWER.split())
    assert gemini.requests[0]["stream"] is True


def test_gemini_stream_json_array_and_function_calls(gemini: FakeGemini, client: httpx.Client) -> None:
    gemini.script_tools("weather in Paris", [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})])
    resp = ge_post(client, gemini, "streamGenerateContent", tools=GE_TOOLS)
    assert resp.headers["content-type"] == "application/json"
    objects = resp.json()
    calls = [o["candidates"][0]["content"]["parts"][0]["functionCall"] for o in objects]
    assert calls == [{"name": "get_weather", "args": {"city": "Paris"}}, {"name": "get_time", "args": {"tz": "CET"}}]
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in objects[-1]


def test_gemini_function_call_round_trip(gemini: FakeGemini, client: httpx.Client) -> None:
    gemini.script_tools("weather in Paris", [("get_weather", {"city": "Paris"}), ("get_time", {})])
    gemini.script("weather in Paris", ANSWER)
    gemini.send_call_ids = True
    only = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    parts = ge_post(client, gemini, tools=GE_TOOLS, toolConfig=only).json()["candidates"][0]["content"]["parts"]
    (call,) = [p["functionCall"] for p in parts]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    turns = [{"role": "user", "parts": [{"text": "weather in Paris"}]},
             {"role": "model", "parts": [{"functionCall": call}]},
             {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "id": call["id"],
                                                              "response": {"result": "sunny"}}}]}]
    answer = ge_post(client, gemini, tools=GE_TOOLS, contents=turns).json()
    assert answer["candidates"][0]["content"]["parts"] == [{"text": ANSWER}]
    none = ge_post(client, gemini, tools=GE_TOOLS, toolConfig={"functionCallingConfig": {"mode": "NONE"}}).json()
    assert none["candidates"][0]["content"]["parts"] == [{"text": ANSWER}]


@pytest.mark.parametrize(("body", "words"), [
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "function response turn comes immediately after a function call turn"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                   {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}},
                                               {"functionCall": {"name": "g", "args": {}}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "number of function response parts"),
    ({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]}, "contents[0].parts[0]"),
    ({"tools": [{"functionDeclarations": [{"name": "9bad"}]}]}, "Invalid function name"),
    ({"tools": [{"functionDeclarations": [{"name": "f", "params": {}}]}]}, 'Unknown name "params"'),
    ({"tools": GE_TOOLS, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
     "function_calling_config.mode"),
    ({"tools": GE_TOOLS, "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}},
     "allowed_function_names"),
])
def test_gemini_rejects_bad_tool_turns(gemini: FakeGemini, client: httpx.Client, body: dict[str, Any],
                                       words: str) -> None:
    resp = ge_post(client, gemini, **body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and words in error["message"]


# -- scripts, faults and counters, alike for the three -----------------------------------------------------
def test_query_is_the_last_user_text_then_the_first(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.script("first question", "A")
    openai.script("follow-up", "B")
    turns = [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "A"}]

    def ask(last: str) -> str:
        msgs = [*turns, {"role": "user", "content": last}]
        return str(oa_post(client, openai, messages=msgs).json()["choices"][0]["message"]["content"])

    assert ask("follow-up") == "B" and ask("unscripted") == "A"


STREAMS: dict[str, Callable[[httpx.Client, Any], Any]] = {
    "openai": lambda c, f: c.stream("POST", f"{f.url}/chat/completions", headers={"Authorization": "Bearer k"},
                                    json={"model": "m", "stream": True, "stream_options": {"include_usage": True},
                                          "messages": [{"role": "user", "content": "weather in Paris"}]}),
    "anthropic": lambda c, f: c.stream("POST", f"{f.url}/v1/messages", json={
        "model": "m", "max_tokens": 9, "stream": True, "messages": [{"role": "user", "content": "weather in Paris"}]},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}),
    "gemini": lambda c, f: c.stream("POST", f"{f.url}/v1beta/models/m:streamGenerateContent?alt=sse", json={
        "contents": [{"role": "user", "parts": [{"text": "weather in Paris"}]}]}, headers={"x-goog-api-key": "k"}),
}


@pytest.fixture(params=sorted(STREAMS))
def streamer(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Callable[[httpx.Client], Any]]]:
    cls = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}[request.param]
    with cls(api_key="k") as fake:
        fake.script("weather in Paris", ANSWER)
        yield fake, lambda c: STREAMS[request.param](c, fake)


def test_client_going_away_counts_a_cut_stream(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.script("weather in Paris", " ".join(["word"] * 20))
    fake.stream_chunk_delay_s = 0.02
    with open_stream(client) as resp:
        next(resp.iter_bytes())
    assert wait_for(lambda: fake.streams_cut == 1) and fake.streams_done == 0
    with open_stream(client) as resp:
        resp.read()
    assert wait_for(lambda: fake.streams_done == 1) and fake.streams_cut == 1


def test_a_hang_up_during_a_slow_start_is_seen_at_once(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.fault("slow", seconds=60.0)  # the headers come at once, the first event would come a minute later
    with open_stream(client) as resp:
        assert resp.status_code == 200
    assert wait_for(lambda: fake.streams_cut == 1) and fake.streams_done == 0


def test_cut_fault_drops_the_stream_after_two_events(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.fault("cut")
    received = b""
    with pytest.raises(httpx.RemoteProtocolError), open_stream(client) as resp:
        for piece in resp.iter_bytes():
            received += piece
    assert len(parse_sse(received.decode())) == 2 and fake.faults_served == {"cut": 1}
    assert fake.streams_cut == fake.streams_done == 0
    with open_stream(client) as resp:  # the next request answers whole
        assert resp.status_code == 200 and resp.read()


def test_http_faults_come_before_the_stream(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.fault("429")
    with open_stream(client) as resp:
        resp.read()
    assert resp.status_code == 429 and "error" in resp.json()
    assert resp.headers["content-type"] == "application/json" and fake.streams_done == 0


def test_no_usage_and_slow_streams(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.fault("no_usage")
    fake.fault("slow", seconds=0.05)
    with open_stream(client) as resp:
        bare = resp.read().decode()
    with open_stream(client) as resp:
        slow = resp.read().decode()
    counts = r'"usage": \{|usageMetadata'  # OpenAI's chunks keep their "usage": null
    assert not re.search(counts, bare) and re.search(counts, slow) and fake.streams_done == 2


def test_malformed_stream_sends_half_an_event(streamer: tuple[Any, Any], client: httpx.Client) -> None:
    fake, open_stream = streamer
    fake.fault("malformed")
    with open_stream(client) as resp:
        (event,) = parse_sse(resp.read().decode())
    with pytest.raises(ValueError):
        json.loads(event[1])


def test_cut_on_a_plain_request_drops_mid_body(openai: FakeOpenAI, client: httpx.Client) -> None:
    openai.fault("cut")
    with pytest.raises(httpx.RemoteProtocolError):
        oa_post(client, openai)
    openai.fault("stream_error")  # without a stream: the overloaded error
    assert oa_post(client, openai).status_code == 503
