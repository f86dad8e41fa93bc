"""The OpenAI wire format: every parse rule, and what is rendered, read back by the openai SDK's own parsers."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageFunctionToolCall

from router.errors import (
    BadChatRequest,
    BudgetExceeded,
    FallbacksExhausted,
    InputError,
    ProviderTimeout,
    SessionsFull,
    StateUnavailable,
    UnknownModel,
)
from router.providers._base import Completion, Message, TextDelta, ToolCall, ToolCallDelta, ToolChoice, Usage
from router.proxy._openai_wire import (
    IGNORED,
    OpenAIStream,
    completion_body,
    error_body,
    error_for,
    models_body,
    parse_chat_request,
)
from router.proxy._request import WireLimits
from router.proxy._sse import json_body

LIMITS = WireLimits(max_text_chars=100, max_messages=8, max_tools=2, max_output_tokens=4096)
BASE = "http://127.0.0.1:9/v1"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "what is my balance"}], **fields}


def refused(request: Any) -> BadChatRequest:
    with pytest.raises(BadChatRequest) as caught:
        parse_chat_request(request, LIMITS)
    return caught.value


# -- parsing: what is accepted ----------------------------------------------------------------------
def test_a_minimal_request_has_the_documented_defaults() -> None:
    parsed = parse_chat_request(body(), LIMITS)
    assert (parsed.api, parsed.model, parsed.stream, parsed.include_usage, parsed.user) == \
        ("openai", "auto", False, False, None)
    assert parsed.user_texts == ("what is my balance",)
    request = parsed.request
    assert request.system == "" and request.messages == (Message("user", "what is my balance"),)
    # No temperature given: OpenAI's documented default, not the router's greedy 0.0.
    assert request.temperature == 1.0
    assert request.output_cap is None and request.top_p is None and request.stop == ()
    assert request.tools == () and request.tool_choice is None and request.json_schema is None
    assert request.query == "what is my balance"


def test_system_and_developer_turns_join_into_the_system_part_and_text_parts_join() -> None:
    parsed = parse_chat_request(body(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi", "name": "sam"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [{"type": "text", "text": "how much"}, {"type": "text", "text": "is it"}]},
    ]), LIMITS)
    assert parsed.request.system == "You are terse.\n\nAnswer in French."
    assert parsed.request.messages == (Message("user", "hi"), Message("assistant", "hello"),
                                       Message("user", "how much\nis it"))
    assert parsed.user_texts == ("hi", "how much\nis it")
    assert parsed.request.query == "how much\nis it"


def test_every_forwarded_field_reaches_the_chat_request() -> None:
    parsed = parse_chat_request(body(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=50, max_completion_tokens=300, temperature=0.2, top_p=0.9, stop=["END", "STOP"], n=1,
        stream=True, stream_options={"include_usage": True}, user="alice",
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
                                                                "schema": {"type": "object"}}},
    ), LIMITS)
    request = parsed.request
    assert (parsed.stream, parsed.include_usage, parsed.user) == (True, True, "alice")
    assert request.output_cap == 300  # max_completion_tokens wins over max_tokens
    assert (request.temperature, request.top_p, request.stop) == (0.2, 0.9, ("END", "STOP"))
    assert request.json_schema == {"type": "object"} and request.schema_name == "answer"
    [tool] = request.tools
    assert (tool.name, tool.description) == ("get_weather", "Weather in a city")
    assert tool.parameters["properties"] == {"city": {"type": "string"}}
    assert request.tool_choice == ToolChoice("tool", "get_weather")


def test_max_tokens_alone_is_the_output_cap_and_a_single_stop_string_is_one_sequence() -> None:
    request = parse_chat_request(body(max_tokens=64, stop="\n\n"), LIMITS).request
    assert request.output_cap == 64 and request.stop == ("\n\n",)


def test_the_accepted_but_not_forwarded_fields_are_accepted() -> None:
    values: dict[str, Any] = {"seed": 1, "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {},
                              "logprobs": False, "top_logprobs": 0, "parallel_tool_calls": True,
                              "metadata": {"k": "v"}, "store": False, "service_tier": "auto",
                              "reasoning_effort": "low", "modalities": ["text"], "prediction": None,
                              "safety_identifier": "x", "prompt_cache_key": "k", "verbosity": "low",
                              "prompt_cache_retention": "24h", "prompt_cache_options": {"ttl": "1h"}}
    assert set(values) == IGNORED
    assert parse_chat_request(body(**values), LIMITS).request == parse_chat_request(body(), LIMITS).request


def test_nulls_read_as_not_given() -> None:
    parsed = parse_chat_request(body(temperature=None, max_tokens=None, tools=None, stop=None, user=None,
                                     stream=None, stream_options=None, response_format=None, n=None), LIMITS)
    assert parsed.request == parse_chat_request(body(), LIMITS).request and parsed.stream is False


def test_a_tool_round_trip_keeps_the_calls_and_names_each_result() -> None:
    parsed = parse_chat_request(body(tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
    ]), LIMITS)
    _, assistant, first, second = parsed.request.messages
    assert assistant == Message("assistant", "", tool_calls=(
        ToolCall("call_1", "get_weather", '{"city":"Paris"}'), ToolCall("call_2", "get_weather", '{"city":"Rome"}')))
    # Gemini answers a call by the function's name: it is looked up from the call the result answers.
    assert first == Message("tool", "18C", tool_call_id="call_1", name="get_weather")
    assert second == Message("tool", "24C", tool_call_id="call_2", name="get_weather")
    # A tool result is not a user turn: the routed text is still the user's question.
    assert parsed.user_texts == ("weather in Paris and Rome?",)


def test_an_assistant_refusal_is_kept_as_its_text() -> None:
    parsed = parse_chat_request(body(messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": None, "refusal": "I can't."},
        {"role": "user", "content": "b"}]), LIMITS)
    assert parsed.request.messages[1] == Message("assistant", "I can't.")


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_auto_or_none_without_tools_chooses_nothing(choice: str) -> None:
    assert parse_chat_request(body(tool_choice=choice), LIMITS).request.tool_choice is None


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_a_tool_choice_mode_with_tools(choice: str) -> None:
    assert parse_chat_request(body(tools=[WEATHER], tool_choice=choice), LIMITS).request.tool_choice == \
        ToolChoice(choice)  # type: ignore[arg-type]


def test_a_tool_without_parameters_takes_an_empty_object_schema() -> None:
    [tool] = parse_chat_request(body(tools=[{"type": "function", "function": {"name": "ping"}}]), LIMITS).request.tools
    assert tool.parameters == {"type": "object", "properties": {}} and tool.description == ""


# -- parsing: what is refused -----------------------------------------------------------------------
def _many(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"turn {i}"} for i in range(n)]


REFUSALS: list[tuple[str, dict[str, Any], str | None, str, str]] = [
    # (case, body, param, code, a fragment the message must contain: the value given)
    ("missing model", {"messages": [{"role": "user", "content": "x"}]}, "model", "missing", "model"),
    ("empty model", body(model=""), "model", "empty", "''"),
    ("model not a string", body(model=3), "model", "invalid_type", "3"),
    ("missing messages", {"model": "auto"}, "messages", "missing", "required"),
    ("messages not a list", body(messages="hi"), "messages", "invalid_type", "'hi'"),
    ("no messages", body(messages=[]), "messages", "empty", "[]"),
    ("too many messages", body(messages=_many(9)), "messages", "too_many", "9 items"),
    ("unknown field", body(temprature=1), "temprature", "unknown_parameter",
     "Unrecognized request argument supplied: temprature"),
    ("legacy functions", body(functions=[]), "functions", "unsupported", "use tools"),
    ("legacy function_call", body(function_call="auto"), "function_call", "unsupported", "use tool_choice"),
    ("moderation", body(moderation={"model": "omni-moderation-latest"}), "moderation", "unsupported",
     "moderation is not supported"),
    ("web search", body(web_search_options={}), "web_search_options", "unsupported", "web search is not supported"),
    ("audio output", body(audio={"voice": "alloy", "format": "mp3"}), "audio", "unsupported", "text only"),
    ("a part's type a list", body(messages=[{"role": "user", "content": [{"type": []}]}]),
     "messages.0.content.0.type", "invalid_type", "[]"),
    ("a part's type an object", body(messages=[{"role": "user", "content": [{"type": {}, "text": "x"}]}]),
     "messages.0.content.0.type", "invalid_type", "{}"),
    ("message not an object", body(messages=["hi"]), "messages.0", "invalid_type", "'hi'"),
    ("missing role", body(messages=[{"content": "x"}]), "messages.0.role", "missing", "role"),
    ("unknown role", body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role", "invalid_value",
     "'robot'"),
    ("function role", body(messages=[{"role": "function", "name": "f", "content": "x"}]), "messages.0.role",
     "unsupported", "'function'"),
    ("unknown message key", body(messages=[{"role": "user", "content": "x", "tool_call_id": "c"}]),
     "messages.0.tool_call_id", "unknown_parameter", "messages.0.tool_call_id"),
    ("image part", body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     "messages.0.content.1.type", "unsupported_content", "'image_url'"),
    ("audio part", body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
     "messages.0.content.0.type", "unsupported_content", "'input_audio'"),
    ("file part", body(messages=[{"role": "user", "content": [{"type": "file", "file": {}}]}]),
     "messages.0.content.0.type", "unsupported_content", "'file'"),
    ("unknown part", body(messages=[{"role": "user", "content": [{"type": "video"}]}]),
     "messages.0.content.0.type", "invalid_value", "'video'"),
    ("content a number", body(messages=[{"role": "user", "content": 42}]), "messages.0.content", "invalid_type", "42"),
    ("empty last user message", body(messages=[{"role": "user", "content": "fine"}, {"role": "assistant",
     "content": "ok"}, {"role": "user", "content": "   "}]), "messages.2.content", "empty", "'   '"),
    ("last user message too long", body(messages=[{"role": "user", "content": "x" * 101}]), "messages.0.content",
     "too_long", "101 characters, over the limit of 100"),
    ("no user message", body(messages=[{"role": "system", "content": "be nice"}]), "messages", "no_user_message",
     "no user message"),
    ("tool result without its call id", body(messages=[{"role": "user", "content": "x"},
     {"role": "tool", "content": "18C"}]), "messages.1.tool_call_id", "missing", "tool_call_id"),
    ("assistant with neither content nor calls", body(messages=[{"role": "user", "content": "x"},
     {"role": "assistant", "content": None}, {"role": "user", "content": "y"}]), "messages.1.content", "missing",
     "no tool_calls"),
    ("assistant function_call", body(messages=[{"role": "user", "content": "x"}, {"role": "assistant",
     "content": None, "function_call": {"name": "f", "arguments": "{}"}}]), "messages.1.function_call",
     "unsupported", "function_call"),
    ("tool call arguments not text", body(messages=[{"role": "user", "content": "x"}, {"role": "assistant",
     "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]),
     "messages.1.tool_calls.0.function.arguments", "invalid_type", "{'a': 1}"),
    ("tools not a list", body(tools={"type": "function"}), "tools", "invalid_type", "'function'"),
    ("too many tools", body(tools=[WEATHER] * 3), "tools", "too_many", "over the limit of 2 (max_tools)"),
    ("bad tool name", body(tools=[{"type": "function", "function": {"name": "get weather!"}}]),
     "tools.0.function.name", "invalid_value", "'get weather!'"),
    ("custom tool", body(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools.0.type", "unsupported",
     "'custom'"),
    ("duplicate tool", body(tools=[WEATHER, WEATHER]), "tools.1.function.name", "duplicate", "'get_weather'"),
    ("parameters not an object", body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
     "tools.0.function.parameters", "invalid_type", "'{}'"),
    ("unknown function key", body(tools=[{"type": "function", "function": {"name": "f", "args": {}}}]),
     "tools.0.function.args", "unknown_parameter", "tools.0.function.args"),
    ("required without tools", body(tool_choice="required"), "tool_choice", "invalid_value", "'required'"),
    ("unknown tool choice", body(tools=[WEATHER], tool_choice="sometimes"), "tool_choice", "invalid_value",
     "'sometimes'"),
    ("choice of a tool not offered", body(tools=[WEATHER], tool_choice={"type": "function",
     "function": {"name": "get_time"}}), "tool_choice.function.name", "invalid_value", "'get_time'"),
    ("allowed_tools choice", body(tools=[WEATHER], tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
     "tool_choice.type", "unsupported", "'allowed_tools'"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens", "invalid_value", "got 0"),
    ("max_tokens over the limit", body(max_tokens=5000), "max_tokens", "invalid_value", "5000"),
    ("max_tokens text", body(max_tokens="100"), "max_tokens", "invalid_type", "'100'"),
    ("max_completion_tokens true", body(max_completion_tokens=True), "max_completion_tokens", "invalid_type",
     "True"),
    ("temperature too high", body(temperature=2.5), "temperature", "invalid_value", "2.5"),
    ("temperature text", body(temperature="hot"), "temperature", "invalid_type", "'hot'"),
    ("top_p too high", body(top_p=1.5), "top_p", "invalid_value", "1.5"),
    ("five stop sequences", body(stop=["a", "b", "c", "d", "e"]), "stop", "too_many", "'e'"),
    ("empty stop sequence", body(stop=["a", ""]), "stop.1", "empty", "''"),
    ("stop a number", body(stop=7), "stop", "invalid_type", "7"),
    ("two choices", body(n=2), "n", "unsupported", "2"),
    ("stream text", body(stream="yes"), "stream", "invalid_type", "'yes'"),
    ("include_usage text", body(stream=True, stream_options={"include_usage": "yes"}),
     "stream_options.include_usage", "invalid_type", "'yes'"),
    ("json_object", body(response_format={"type": "json_object"}), "response_format.type", "unsupported",
     "json_schema"),
    ("json_schema strict text", body(response_format={"type": "json_schema", "json_schema": {"name": "a",
     "schema": {}, "strict": "yes"}}), "response_format.json_schema.strict", "invalid_type", "'yes'"),
    ("json_schema without a schema", body(response_format={"type": "json_schema", "json_schema": {"name": "a"}}),
     "response_format.json_schema.schema", "missing", "schema"),
    ("unknown response format", body(response_format={"type": "xml"}), "response_format.type", "invalid_value",
     "'xml'"),
    ("user a number", body(user=5), "user", "invalid_type", "5"),
]


@pytest.mark.parametrize(("case", "request_body", "param", "code", "fragment"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_a_refused_request_names_the_field_and_the_value(case: str, request_body: dict[str, Any], param: str | None,
                                                         code: str, fragment: str) -> None:
    exc = refused(request_body)
    assert (exc.param, exc.code, exc.status) == (param, code, 400), str(exc)
    assert fragment in str(exc)
    status, error, _ = error_for(exc)
    assert status == 400
    assert error == {"error": {"message": str(exc), "type": "invalid_request_error", "param": param, "code": code}}


@pytest.mark.parametrize("request_body", [[], "text", None, 3])
def test_a_body_that_is_not_an_object_is_refused(request_body: Any) -> None:
    exc = refused(request_body)
    assert (exc.param, exc.code) == (None, "invalid_type") and repr(request_body) in str(exc)


def test_a_long_value_is_cut_in_the_message() -> None:
    exc = refused(body(model=["x" * 500]))
    assert exc.param == "model" and len(str(exc)) < 200 and str(exc).endswith("...")


def test_a_parse_leaves_the_body_as_it_was() -> None:
    given = body(tools=[WEATHER], stop=["a"])
    kept = copy.deepcopy(given)
    parse_chat_request(given, LIMITS)
    assert given == kept


# -- rendering: bodies ------------------------------------------------------------------------------
USAGE = Usage(input_tokens=30, output_tokens=7, cached_input_tokens=100, cache_write_tokens=20)


def test_a_text_completion_renders_as_a_chat_completion_the_sdk_reads() -> None:
    rendered = completion_body(Completion("Your balance is $12.", USAGE, "gpt-x", finish="stop"),
                               model="openai/gpt-x", id="chatcmpl-1", created=1700000000)
    completion = ChatCompletion.model_validate(rendered)
    assert (completion.id, completion.model, completion.created) == ("chatcmpl-1", "openai/gpt-x", 1700000000)
    [choice] = completion.choices
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == \
        ("Your balance is $12.", None, "stop")
    assert completion.usage is not None
    # prompt_tokens counts every input token: uncached, cache reads and cache writes.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == \
        (150, 7, 157)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_tool_calls_render_with_no_content_and_finish_tool_calls() -> None:
    calls = (ToolCall("call_a", "get_weather", '{"city":"Paris"}'), ToolCall("", "get_time", "{}"))
    completion = ChatCompletion.model_validate(completion_body(Completion("", USAGE, "m", tool_calls=calls),
                                                               model="m", id="chatcmpl-2", created=1))
    [choice] = completion.choices
    assert choice.message.content is None and choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    first, second = choice.message.tool_calls
    assert isinstance(first, ChatCompletionMessageFunctionToolCall)
    assert (first.id, first.type, first.function.name, first.function.arguments) == \
        ("call_a", "function", "get_weather", '{"city":"Paris"}')
    assert second.id.startswith("call_") and len(second.id) > 5  # a missing id is invented


def test_the_completion_finish_is_kept() -> None:
    rendered = completion_body(Completion("cut", USAGE, "m", finish="length"), model="m", id="x", created=1)
    assert ChatCompletion.model_validate(rendered).choices[0].finish_reason == "length"


def test_models_list() -> None:
    listed = openai.types.Model  # the SDK's own model object
    rendered = models_body(["auto", "openai/gpt-x"], 1700000000)
    assert rendered["object"] == "list"
    models = [listed.model_validate(m) for m in rendered["data"]]
    assert [(m.id, m.owned_by, m.object) for m in models] == \
        [("auto", "tiered-router", "model"), ("openai/gpt-x", "openai", "model")]


# -- rendering: streams -----------------------------------------------------------------------------
def events(data: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE byte stream, as sent."""
    frames = data.decode().split("\n\n")
    assert frames[-1] == ""  # every event ends with a blank line
    out = []
    for frame in frames[:-1]:
        [line] = frame.split("\n")
        assert line.startswith("data: ")
        out.append(line.removeprefix("data: "))
    return out


def sdk_chunks(data: bytes) -> list[ChatCompletionChunk]:
    """The chunks as the openai SDK's own stream reader yields them (it stops at ``[DONE]``)."""
    with openai.OpenAI(api_key="test", base_url=BASE) as client:
        response = httpx.Response(200, content=data, headers={"content-type": "text/event-stream"},
                                  request=httpx.Request("POST", f"{BASE}/chat/completions"))
        chunks = list(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))
    for chunk in chunks:  # the reader builds without validating; every chunk must also validate
        ChatCompletionChunk.model_validate(chunk.model_dump())
    return chunks


def accumulate(chunks: list[ChatCompletionChunk]) -> Any:
    """The SDK's own accumulation of a chunk stream into a completion (what ``.stream()`` returns)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    return state.get_final_completion()


def render(stream: OpenAIStream, deltas: list[TextDelta | ToolCallDelta], end: Completion,
           extra: dict[str, Any] | None = None) -> bytes:
    return stream.start() + b"".join(stream.event(d) for d in deltas) + stream.end(end, extra)


def test_a_text_stream_with_usage() -> None:
    stream = OpenAIStream(id="chatcmpl-s", model="anthropic/claude", created=5, include_usage=True)
    data = render(stream, [TextDelta("Hel"), TextDelta(""), TextDelta("lo!")],
                  Completion("Hello!", USAGE, "claude", finish="stop"))
    sent = events(data)
    assert sent[-1] == "[DONE]"
    chunks = sdk_chunks(data)
    assert {(c.id, c.model, c.created, c.object) for c in chunks} == {("chatcmpl-s", "anthropic/claude", 5,
                                                                      "chat.completion.chunk")}
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in chunks[1:3]] == ["Hel", "lo!"]  # the empty delta is not sent
    finish, last = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == "stop" and finish.usage is None
    # As OpenAI: the usage chunk comes last, with no choices, and every other chunk has a null usage.
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (150, 7, 157)
    assert all("usage" in json.loads(s) and json.loads(s)["usage"] is None for s in sent[:-2])
    final = accumulate(chunks)
    assert final.choices[0].message.content == "Hello!" and final.choices[0].finish_reason == "stop"
    assert final.usage.prompt_tokens == 150


def test_a_tool_call_stream_is_sent_as_openai_sends_it() -> None:
    stream = OpenAIStream(id="chatcmpl-t", model="m", created=5, include_usage=False)
    # Our deltas' indexes are positions in the answer (here 1 and 3); OpenAI's count calls from 0.
    deltas: list[TextDelta | ToolCallDelta] = [
        ToolCallDelta(1, "call_p", "get_weather", ""), ToolCallDelta(1, None, None, '{"city":'),
        ToolCallDelta(1, None, None, '"Paris"}'), ToolCallDelta(3, "call_r", "get_weather", '{"city":"Rome"}'),
    ]
    calls = (ToolCall("call_p", "get_weather", '{"city":"Paris"}'),
             ToolCall("call_r", "get_weather", '{"city":"Rome"}'))
    data = render(stream, deltas, Completion("", USAGE, "m", tool_calls=calls, finish="tool_calls"))
    sent = [json.loads(s) for s in events(data)[:-1]]
    pieces = [s["choices"][0]["delta"]["tool_calls"][0] for s in sent if "tool_calls" in s["choices"][0]["delta"]]
    assert pieces == [
        {"index": 0, "id": "call_p", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
        # A first piece that already carries arguments: the header first, then the arguments.
        {"index": 1, "id": "call_r", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "function": {"arguments": '{"city":"Rome"}'}},
    ]
    assert all("usage" not in s for s in sent)  # no include_usage: no usage field at all
    final = accumulate(sdk_chunks(data))
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and not message.content
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == \
        [("call_p", "get_weather", '{"city":"Paris"}'), ("call_r", "get_weather", '{"city":"Rome"}')]


def test_text_then_a_tool_call_in_one_stream() -> None:
    stream = OpenAIStream(id="chatcmpl-b", model="m", created=5, include_usage=True)
    data = render(stream, [TextDelta("Let me check."), ToolCallDelta(0, None, "lookup", '{"q":"x"}')],
                  Completion("Let me check.", USAGE, "m", tool_calls=(ToolCall("", "lookup", '{"q":"x"}'),)))
    final = accumulate(sdk_chunks(data))
    message = final.choices[0].message
    assert message.content == "Let me check." and final.choices[0].finish_reason == "tool_calls"
    [call] = message.tool_calls
    assert call.id.startswith("call_") and (call.function.name, call.function.arguments) == ("lookup", '{"q":"x"}')


def test_extra_fields_are_merged_into_the_last_chunk() -> None:
    cost = {"x_router": {"cost_usd": "0.0012", "intent": "balance"}}
    for include_usage in (True, False):
        stream = OpenAIStream(id="c", model="m", created=1, include_usage=include_usage)
        data = render(stream, [TextDelta("ok")], Completion("ok", USAGE, "m"), cost)
        sent = events(data)
        assert [json.loads(s).get("x_router") for s in sent[:-1]] == [None] * (len(sent) - 2) + [cost["x_router"]]
        last = sdk_chunks(data)[-1]
        assert last.model_extra == cost  # the SDK keeps it and reads the rest as usual
        assert (last.usage is not None) == include_usage


def test_parts_only_in_the_stream_end_are_sent_before_it_finishes() -> None:
    stream = OpenAIStream(id="c", model="m", created=1, include_usage=False)
    data = render(stream, [], Completion("whole", USAGE, "m", tool_calls=(ToolCall("call_1", "f", "{}"),)))
    message = accumulate(sdk_chunks(data)).choices[0].message
    assert message.content == "whole" and [c.id for c in message.tool_calls] == ["call_1"]


def test_a_stream_error_is_what_the_sdk_raises() -> None:
    stream = OpenAIStream(id="c", model="m", created=1, include_usage=False)
    data = stream.start() + stream.event(TextDelta("partial")) + \
        stream.error(502, "openai/gpt-x: connection dropped", "server_error", "upstream_unavailable")
    assert json.loads(events(data)[-1]) == {"error": {"message": "openai/gpt-x: connection dropped",
                                                      "type": "server_error", "param": None,
                                                      "code": "upstream_unavailable"}}
    with pytest.raises(openai.APIError, match="connection dropped") as caught:
        sdk_chunks(data)
    assert caught.value.code == "upstream_unavailable" and caught.value.type == "server_error"


# -- errors -----------------------------------------------------------------------------------------
def sdk_error(status: int, rendered: dict[str, Any], headers: dict[str, str]) -> tuple[openai.APIStatusError, bool]:
    """The exception the openai SDK raises for this response, and whether it would retry it."""
    with openai.OpenAI(api_key="test", base_url=BASE) as client:
        response = httpx.Response(status, json=rendered, headers=headers,
                                  request=httpx.Request("POST", f"{BASE}/chat/completions"))
        return client._make_status_error_from_response(response), client._should_retry(response)


def test_an_unknown_model_is_a_404_model_not_found() -> None:
    status, rendered, headers = error_for(UnknownModel("gpt-9", ["auto", "openai/gpt-x"]))
    assert (status, headers) == (404, {})
    assert rendered["error"]["code"] == "model_not_found" and rendered["error"]["param"] == "model"
    assert rendered["error"]["type"] == "invalid_request_error"  # as OpenAI answers an unknown model
    assert "'gpt-9'" in rendered["error"]["message"]
    exc, _ = sdk_error(status, rendered, headers)
    assert isinstance(exc, openai.NotFoundError) and exc.code == "model_not_found"


def test_other_input_errors_are_400() -> None:
    status, rendered, _ = error_for(InputError("text is empty"))
    assert status == 400 and rendered["error"]["type"] == "invalid_request_error"


def test_a_budget_is_a_429_the_sdk_does_not_retry() -> None:
    status, rendered, headers = error_for(BudgetExceeded("session_usd", 1.0, 0.99, 0.05, "session 's1'"))
    assert status == 429 and headers == {"x-should-retry": "false"}
    assert rendered["error"]["type"] == "insufficient_quota" and rendered["error"]["code"] == "budget_exceeded"
    assert rendered["error"]["param"] == "session_usd"
    exc, retried = sdk_error(status, rendered, headers)
    assert isinstance(exc, openai.RateLimitError) and exc.code == "budget_exceeded" and not retried


@pytest.mark.parametrize(("exc", "code", "secret"), [
    (SessionsFull(1000, 12.2), "sessions_full", None),
    (StateUnavailable("redis", "Error 111 connecting to 10.1.2.3:6379", retry_after=2.5), "state_unavailable",
     "10.1.2.3"),
])
def test_unavailable_state_is_a_503_with_retry_after(exc: Exception, code: str, secret: str | None) -> None:
    status, rendered, headers = error_for(exc)
    assert status == 503 and rendered["error"]["type"] == "server_error" and rendered["error"]["code"] == code
    assert headers == {"retry-after": "13" if code == "sessions_full" else "3"}
    if secret is not None:
        assert secret not in rendered["error"]["message"]


def test_an_upstream_failure_after_fallbacks_is_a_502_the_sdk_does_not_retry() -> None:
    failed = FallbacksExhausted("chat", [ProviderTimeout("openai/a", "no answer in 5s")], ["openai/a"])
    status, rendered, headers = error_for(failed)
    assert status == 502 and headers == {"x-should-retry": "false"}
    assert rendered["error"]["type"] == "server_error" and rendered["error"]["code"] == "fallbacks_exhausted"
    assert "openai/a: timeout" in rendered["error"]["message"]
    exc, retried = sdk_error(status, rendered, headers)
    assert isinstance(exc, openai.InternalServerError) and not retried
    status, rendered, _ = error_for(ProviderTimeout("openai/a", "no answer in 5s"))
    assert (status, rendered["error"]["code"]) == (502, "upstream_timeout")


def test_an_unexpected_error_is_a_500_without_internals() -> None:
    status, rendered, headers = error_for(RuntimeError("KeyError at /srv/router/_x.py line 3"))
    assert status == 500 and headers == {} and rendered["error"]["type"] == "server_error"
    assert "/srv" not in rendered["error"]["message"]


def test_error_body_shape() -> None:
    assert error_body("m", "t", None, None) == {"error": {"message": "m", "type": "t", "param": None, "code": None}}


def test_a_lone_surrogate_in_a_models_text_is_sent_escaped() -> None:
    stream = OpenAIStream(id="c", model="m", created=1, include_usage=False)
    text = "bad \ud800 char"
    data = render(stream, [TextDelta(text)], Completion(text, USAGE, "m"))
    assert data.isascii() and b"\\ud800" in data
    assert accumulate(sdk_chunks(data)).choices[0].finish_reason == "stop"


def test_a_body_with_a_lone_surrogate_is_utf8_with_a_replacement_character() -> None:
    completion = Completion("bad \ud800 char", USAGE, "m", tool_calls=(ToolCall("c1", "f", '{"a": "\udc00"}'),))
    data = json_body(completion_body(completion, model="m", id="c", created=1))
    message = ChatCompletion.model_validate_json(data).choices[0].message
    assert message.content == "bad \ufffd char"
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall) and call.function.arguments == '{"a": "\ufffd"}'
    # A pair held as two code points is one character, not two replacements.
    assert json.loads(json_body({"t": "\ud83d\ude00"})) == {"t": "\U0001f600"}
