"""The Anthropic Messages wire format: every parse rule, and what is rendered, read back by the anthropic SDK's
own parsers (its stream accumulator included: the final usage it reports must be the real one)."""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic
import httpx2
import pytest
from anthropic.lib.streaming import MessageStream
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from router.errors import (
    BadChatRequest,
    BudgetExceeded,
    FallbacksExhausted,
    InputError,
    ProviderUnavailable,
    SessionsFull,
    StateUnavailable,
    UnknownModel,
)
from router.providers._base import Completion, Message, TextDelta, ToolCall, ToolCallDelta, ToolChoice, Usage
from router.proxy._anthropic_wire import (
    IGNORED,
    AnthropicStream,
    error_body,
    error_for,
    message_body,
    parse_messages_request,
    tool_input,
)
from router.proxy._request import WireLimits

LIMITS = WireLimits(max_text_chars=100, max_messages=8, max_tools=2, max_output_tokens=4096)
BASE = "http://127.0.0.1:9"
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
EVENT = TypeAdapter(RawMessageStreamEvent)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": "what is my balance"}],
            **fields}


def refused(request: Any) -> BadChatRequest:
    with pytest.raises(BadChatRequest) as caught:
        parse_messages_request(request, LIMITS)
    return caught.value


# -- parsing: what is accepted ----------------------------------------------------------------------
def test_a_minimal_request_has_the_documented_defaults() -> None:
    parsed = parse_messages_request(body(), LIMITS)
    assert (parsed.api, parsed.model, parsed.stream, parsed.include_usage, parsed.user) == \
        ("anthropic", "auto", False, True, None)
    request = parsed.request
    assert request.system == "" and request.messages == (Message("user", "what is my balance"),)
    assert request.output_cap == 256 and request.temperature == 1.0  # Anthropic's documented default
    assert request.top_p is None and request.stop == () and request.tools == () and request.tool_choice is None
    assert parsed.user_texts == ("what is my balance",) and request.query == "what is my balance"


def test_every_forwarded_field_reaches_the_chat_request() -> None:
    parsed = parse_messages_request(body(
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in French."}],
        tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        stop_sequences=["END"], temperature=0.3, top_p=0.8, stream=True, metadata={"user_id": "alice"},
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"},
    ), LIMITS)
    request = parsed.request
    assert (parsed.stream, parsed.user) == (True, "alice")
    assert request.system == "You are terse.\n\nAnswer in French."
    assert (request.temperature, request.top_p, request.stop) == (0.3, 0.8, ("END",))
    assert request.json_schema == {"type": "object"}
    [tool] = request.tools
    assert (tool.name, tool.description, tool.parameters) == ("get_weather", "Weather in a city",
                                                              WEATHER["input_schema"])
    assert request.tool_choice == ToolChoice("tool", "get_weather")


def test_a_string_system_and_the_accepted_but_not_forwarded_fields() -> None:
    values: dict[str, Any] = {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
                              "service_tier": "auto", "cache_control": {"type": "ephemeral"},
                              "inference_geo": "us", "speed": "fast"}
    assert set(values) == IGNORED
    parsed = parse_messages_request(body(system="Be nice.", **values), LIMITS)
    assert parsed.request.system == "Be nice."
    assert parsed.request.messages == parse_messages_request(body(), LIMITS).request.messages


def test_the_sdks_tool_hints_are_accepted_and_not_forwarded() -> None:
    tool = {**WEATHER, "defer_loading": False, "input_examples": [{"city": "Paris"}],
            "allowed_callers": ["direct", "code_execution_20250825"]}
    parsed = parse_messages_request(body(tools=[tool]), LIMITS)
    assert parsed.request.tools == parse_messages_request(body(tools=[WEATHER]), LIMITS).request.tools


@pytest.mark.parametrize(("choice", "expected"), [({"type": "auto"}, ToolChoice("auto")),
                                                  ({"type": "any"}, ToolChoice("required")),
                                                  ({"type": "none"}, ToolChoice("none"))])
def test_tool_choice_modes(choice: dict[str, str], expected: ToolChoice) -> None:
    assert parse_messages_request(body(tools=[WEATHER], tool_choice=choice), LIMITS).request.tool_choice == expected


def test_a_tool_round_trip_becomes_tool_turns_then_the_users_text() -> None:
    parsed = parse_messages_request(body(tools=[WEATHER, {"name": "get_time", "input_schema": {"type": "object"},
                                                          "type": "custom"}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "the user wants weather", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "broken"}]},
            {"type": "text", "text": "and in Rome?"},
        ]},
    ]), LIMITS)
    first, assistant, weather, clock, follow_up = parsed.request.messages
    assert first == Message("user", "weather in Paris?")
    # The thinking block is the model's own reasoning: not forwarded.
    assert assistant == Message("assistant", "Checking.", tool_calls=(
        ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("toolu_2", "get_time", "{}")))
    assert weather == Message("tool", "18C", tool_call_id="toolu_1", name="get_weather")
    assert clock == Message("tool", "clock\nbroken", tool_call_id="toolu_2", name="get_time")
    assert follow_up == Message("user", "and in Rome?")
    assert parsed.user_texts == ("weather in Paris?", "and in Rome?")


def test_the_last_user_text_is_routed_when_the_last_user_message_only_carries_results() -> None:
    parsed = parse_messages_request(body(messages=[
        {"role": "user", "content": "list my files"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]), LIMITS)
    assert parsed.user_texts == ("list my files",) and parsed.request.query == "list my files"
    assert parsed.request.messages[-1] == Message("tool", "", tool_call_id="t1", name="ls")


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "none"}])
def test_auto_or_none_without_tools_chooses_nothing(choice: dict[str, str]) -> None:
    assert parse_messages_request(body(tool_choice=choice), LIMITS).request.tool_choice is None


# -- parsing: what is refused -----------------------------------------------------------------------
REFUSALS: list[tuple[str, dict[str, Any], str | None, str, str]] = [
    # (case, body, param, code, a fragment the message must contain: the value given)
    ("missing model", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model", "missing", "model"),
    ("missing max_tokens", {"model": "auto", "messages": [{"role": "user", "content": "x"}]}, "max_tokens",
     "missing", "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens", "invalid_value", "got 0"),
    ("max_tokens over the limit", body(max_tokens=4097), "max_tokens", "invalid_value", "4097"),
    ("missing messages", {"model": "auto", "max_tokens": 5}, "messages", "missing", "messages"),
    ("no messages", body(messages=[]), "messages", "empty", "[]"),
    ("too many messages", body(messages=[{"role": "user", "content": "x"}] * 9), "messages", "too_many", "9 items"),
    ("unknown field", body(frequency_penalty=1), "frequency_penalty", "unknown_parameter",
     "frequency_penalty: Extra inputs are not permitted"),
    ("unknown message key", body(messages=[{"role": "user", "content": "x", "name": "sam"}]), "messages.0.name",
     "unknown_parameter", "Extra inputs are not permitted"),
    ("container", body(container="cntr_1"), "container", "unsupported", "no code execution"),
    ("diagnostics", body(diagnostics={"previous_message_id": "msg_1"}), "diagnostics", "unsupported",
     "diagnostics are not supported"),
    ("user_profile_id", body(user_profile_id="up_1"), "user_profile_id", "unsupported", "metadata.user_id"),
    ("workspace_id", body(workspace_id="wrkspc_1"), "workspace_id", "unsupported", "workspaces"),
    ("tool only for code execution", body(tools=[{**WEATHER, "allowed_callers": ["code_execution_20250825"]}]),
     "tools.0.allowed_callers", "unsupported", "'direct'"),
    ("tool defer_loading text", body(tools=[{**WEATHER, "defer_loading": "yes"}]), "tools.0.defer_loading",
     "invalid_type", "'yes'"),
    ("a block's type a list", body(messages=[{"role": "user", "content": [{"type": []}]}]),
     "messages.0.content.0.type", "invalid_type", "[]"),
    ("a system block's type an object", body(system=[{"type": {}}]), "system.0.type", "invalid_type", "{}"),
    ("a result block's type a list", body(messages=[{"role": "user", "content": [{"type": "tool_result",
     "tool_use_id": "t", "content": [{"type": [1]}]}]}]), "messages.0.content.0.content.0.type", "invalid_type",
     "[1]"),
    ("an assistant block's type a list", body(messages=[{"role": "user", "content": "x"}, {"role": "assistant",
     "content": [{"type": ["thinking"]}]}, {"role": "user", "content": "y"}]), "messages.1.content.0.type",
     "invalid_type", "['thinking']"),
    ("tool_choice type a list", body(tools=[WEATHER], tool_choice={"type": ["auto"]}), "tool_choice.type",
     "invalid_type", "['auto']"),
    ("system role", body(messages=[{"role": "system", "content": "x"}]), "messages.0.role", "invalid_value",
     "'system'"),
    ("image block", body(messages=[{"role": "user", "content": [{"type": "text", "text": "what is it"},
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]),
     "messages.0.content.1.type", "unsupported_content", "'image'"),
    ("document block", body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
     "messages.0.content.0.type", "unsupported_content", "'document'"),
    ("image in a tool result", body(messages=[{"role": "user", "content": [{"type": "tool_result",
     "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]), "messages.0.content.0.content.0.type",
     "unsupported_content", "'image'"),
    ("tool_use in a user message", body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t",
     "name": "f", "input": {}}]}]), "messages.0.content.0.type", "invalid_value", "'tool_use'"),
    ("tool_use input not an object", body(messages=[{"role": "user", "content": "x"}, {"role": "assistant",
     "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}, {"role": "user", "content": "y"}]),
     "messages.1.content.0.input", "invalid_type", "'{}'"),
    ("tool result without its id", body(messages=[{"role": "user", "content": [{"type": "tool_result",
     "content": "x"}]}]), "messages.0.content.0.tool_use_id", "missing", "tool_use_id"),
    ("content a number", body(messages=[{"role": "user", "content": 1}]), "messages.0.content", "invalid_type", "1"),
    ("empty last user text", body(messages=[{"role": "user", "content": [{"type": "text", "text": " "}]}]),
     "messages.0.content", "empty", "' '"),
    ("last user text too long", body(messages=[{"role": "user", "content": "y" * 101}]), "messages.0.content",
     "too_long", "101 characters, over the limit of 100"),
    ("no user text", body(messages=[{"role": "assistant", "content": "hello"}]), "messages", "no_user_message",
     "no user message"),
    ("system a number", body(system=5), "system", "invalid_type", "5"),
    ("system image", body(system=[{"type": "image"}]), "system.0.type", "unsupported_content", "'image'"),
    ("server tool", body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type",
     "unsupported", "'web_search_20250305'"),
    ("tool without a schema", body(tools=[{"name": "f"}]), "tools.0.input_schema", "missing", "input_schema"),
    ("bad tool name", body(tools=[{"name": "a b", "input_schema": {}}]), "tools.0.name", "invalid_value", "'a b'"),
    ("unknown tool key", body(tools=[{**WEATHER, "parameters": {}}]), "tools.0.parameters", "unknown_parameter",
     "Extra inputs are not permitted"),
    ("too many tools", body(tools=[WEATHER, {**WEATHER, "name": "b"}, {**WEATHER, "name": "c"}]), "tools",
     "too_many", "max_tools"),
    ("duplicate tool", body(tools=[WEATHER, WEATHER]), "tools.1.name", "duplicate", "'get_weather'"),
    ("any without tools", body(tool_choice={"type": "any"}), "tool_choice", "invalid_value", "'any'"),
    ("choice of a tool not offered", body(tools=[WEATHER], tool_choice={"type": "tool", "name": "f"}),
     "tool_choice.name", "invalid_value", "'f'"),
    ("unknown tool choice", body(tools=[WEATHER], tool_choice={"type": "required"}), "tool_choice.type",
     "invalid_value", "'required'"),
    ("temperature over 1", body(temperature=1.5), "temperature", "invalid_value", "1.5"),
    ("top_p text", body(top_p="high"), "top_p", "invalid_type", "'high'"),
    ("top_k negative", body(top_k=-1), "top_k", "invalid_value", "-1"),
    ("stop sequences a string", body(stop_sequences="END"), "stop_sequences", "invalid_type", "'END'"),
    ("empty stop sequence", body(stop_sequences=[""]), "stop_sequences.0", "empty", "''"),
    ("metadata unknown key", body(metadata={"session": "x"}), "metadata.session", "unknown_parameter",
     "Extra inputs are not permitted"),
    ("user_id a number", body(metadata={"user_id": 7}), "metadata.user_id", "invalid_type", "7"),
    ("stream text", body(stream="true"), "stream", "invalid_type", "'true'"),
    ("output format not a schema", body(output_config={"format": {"type": "xml"}}), "output_config.format.type",
     "invalid_value", "'xml'"),
]


@pytest.mark.parametrize(("case", "request_body", "param", "code", "fragment"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_a_refused_request_names_the_field_and_the_value(case: str, request_body: dict[str, Any], param: str | None,
                                                         code: str, fragment: str) -> None:
    exc = refused(request_body)
    assert (exc.param, exc.code, exc.status) == (param, code, 400), str(exc)
    assert fragment in str(exc)
    assert error_for(exc) == (400, {"type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}},
                              {})


def test_a_body_that_is_not_an_object_is_refused() -> None:
    exc = refused(["x"])
    assert (exc.param, exc.code) == (None, "invalid_type") and "['x']" in str(exc)


# -- rendering: bodies ------------------------------------------------------------------------------
USAGE = Usage(input_tokens=30, output_tokens=7, cached_input_tokens=100, cache_write_tokens=20)


def test_a_text_message_the_sdk_reads() -> None:
    rendered = message_body(Completion("Your balance is $12.", USAGE, "gpt-x", finish="stop"),
                            model="openai/gpt-x", id="msg_1")
    message = SdkMessage.model_validate(rendered)
    assert (message.id, message.model, message.role, message.stop_reason, message.stop_sequence) == \
        ("msg_1", "openai/gpt-x", "assistant", "end_turn", None)
    [block] = message.content
    assert block.type == "text" and block.text == "Your balance is $12."
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens) == (30, 7, 100, 20)


def test_tool_calls_render_as_tool_use_blocks() -> None:
    calls = (ToolCall("call_abc", "get_weather", '{"city":"Paris"}'), ToolCall("", "get_time", ""),
             ToolCall("call_x", "broken", '{"city": "Par'))
    message = SdkMessage.model_validate(message_body(Completion("Checking.", USAGE, "m", tool_calls=calls),
                                                     model="m", id="msg_2"))
    assert message.stop_reason == "tool_use"
    text, weather, time, broken = message.content
    assert text.type == "text" and text.text == "Checking."
    assert weather.type == "tool_use" and (weather.id, weather.name, weather.input) == \
        ("call_abc", "get_weather", {"city": "Paris"})  # an upstream's call id passes through
    assert time.type == "tool_use" and time.id.startswith("toolu_") and time.input == {}
    assert broken.type == "tool_use" and broken.input == {"_raw": '{"city": "Par'}


@pytest.mark.parametrize(("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_stop_reasons(finish: Any, reason: str) -> None:
    rendered = message_body(Completion("x", USAGE, "m", finish=finish), model="m", id="msg")
    assert SdkMessage.model_validate(rendered).stop_reason == reason


def test_an_anthropic_upstreams_stop_sequence_is_kept() -> None:
    completion = Completion("x", USAGE, "m", finish_reason="stop_sequence", finish="stop",
                            raw={"stop_sequence": "END"})
    message = SdkMessage.model_validate(message_body(completion, model="m", id="msg"))
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


@pytest.mark.parametrize(("arguments", "expected"), [
    ("", {}), ("  ", {}), ('{"a": [1]}', {"a": [1]}), ("[1, 2]", {"_raw": "[1, 2]"}), ("{oops", {"_raw": "{oops"})])
def test_tool_input(arguments: str, expected: dict[str, Any]) -> None:
    assert tool_input(arguments) == expected


# -- rendering: streams -----------------------------------------------------------------------------
def frames(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each SSE event, each validated by the SDK's own event model."""
    out = []
    chunks = data.decode().split("\n\n")
    assert chunks[-1] == ""
    for chunk in chunks[:-1]:
        event_line, data_line = chunk.split("\n")
        name, payload = event_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert payload["type"] == name
        if name not in ("ping", "error"):
            EVENT.validate_python(payload)
        out.append((name, payload))
    return out


def sdk_final(data: bytes) -> Any:
    """What the SDK's ``messages.stream(...).get_final_message()`` accumulates from these bytes."""
    with anthropic.Anthropic(api_key="test", base_url=BASE) as client:
        response = httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"},
                                   request=httpx2.Request("POST", f"{BASE}/v1/messages"))
        raw: anthropic.Stream[Any] = anthropic.Stream(cast_to=cast(Any, RawMessageStreamEvent), response=response,
                                                      client=client)
        return MessageStream(raw, output_format=anthropic.NOT_GIVEN).get_final_message()


def render(stream: AnthropicStream, deltas: list[TextDelta | ToolCallDelta], end: Completion) -> bytes:
    return stream.start() + b"".join(stream.event(d) for d in deltas) + stream.end(end)


def test_a_text_stream_and_its_final_usage() -> None:
    stream = AnthropicStream(id="msg_s", model="openai/gpt-x")
    data = render(stream, [TextDelta("Hel"), TextDelta(""), TextDelta("lo €!")],
                  Completion("Hello €!", USAGE, "gpt-x", finish="length"))
    names = [name for name, _ in frames(data)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    start = frames(data)[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == ("msg_s", "openai/gpt-x", [])
    message = sdk_final(data)
    assert [b.text for b in message.content] == ["Hello €!"] and message.stop_reason == "max_tokens"
    # The usage is known at the end only: the SDK takes every count from message_delta.
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens) == (30, 7, 100, 20)


def test_a_tool_call_stream() -> None:
    stream = AnthropicStream(id="msg_t", model="m")
    deltas: list[TextDelta | ToolCallDelta] = [
        ToolCallDelta(0, "call_p", "get_weather", ""), ToolCallDelta(0, None, None, '{"city":'),
        ToolCallDelta(0, None, None, '"Paris"}'), ToolCallDelta(1, None, "get_time", ""),
    ]
    calls = (ToolCall("call_p", "get_weather", '{"city":"Paris"}'), ToolCall("", "get_time", ""))
    data = render(stream, deltas, Completion("", USAGE, "m", tool_calls=calls, finish="tool_calls"))
    sent = frames(data)
    starts = [(p["index"], p["content_block"]) for n, p in sent if n == "content_block_start"]
    assert starts[0] == (0, {"type": "tool_use", "id": "call_p", "name": "get_weather", "input": {}})
    assert starts[1][0] == 1 and starts[1][1]["id"].startswith("toolu_")
    # Each call's arguments go as one piece when its block closes (the SDK parses every piece as JSON).
    assert [p["delta"]["partial_json"] for n, p in sent if n == "content_block_delta"] == ['{"city":"Paris"}', '{}']
    assert [p["index"] for n, p in sent if n == "content_block_stop"] == [0, 1]
    message = sdk_final(data)
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in message.content] == \
        [("tool_use", "get_weather", {"city": "Paris"}), ("tool_use", "get_time", {})]


def test_text_then_tool_calls_then_text_open_and_close_blocks_in_order() -> None:
    stream = AnthropicStream(id="msg_b", model="m")
    deltas: list[TextDelta | ToolCallDelta] = [
        TextDelta("Let me"), TextDelta(" check."), ToolCallDelta(0, "t1", "lookup", '{"q":"x"}'),
        ToolCallDelta(1, "t2", "lookup", '{"q":"y"}'), TextDelta("Done."),
        ToolCallDelta(0, None, None, "ignored"),  # its block is closed: it cannot be sent
    ]
    data = render(stream, deltas, Completion("Let me check.Done.", USAGE, "m"))
    sent = frames(data)
    blocks = [(n, p["index"]) for n, p in sent if n.startswith("content_block_") and n != "content_block_delta"]
    assert blocks == [("content_block_start", 0), ("content_block_stop", 0), ("content_block_start", 1),
                      ("content_block_stop", 1), ("content_block_start", 2), ("content_block_stop", 2),
                      ("content_block_start", 3), ("content_block_stop", 3)]
    message = sdk_final(data)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use", "text"]
    assert message.content[0].text == "Let me check." and message.content[3].text == "Done."
    assert [b.input for b in message.content[1:3]] == [{"q": "x"}, {"q": "y"}]


def test_extra_fields_ride_on_message_delta_and_the_sdk_tolerates_them() -> None:
    stream = AnthropicStream(id="msg", model="m")
    extra = {"x_router": {"cost_usd": "0.0012", "intent": "balance"}}
    data = stream.start() + stream.event(TextDelta("ok")) + stream.end(Completion("ok", USAGE, "m"), extra)
    [delta] = [p for n, p in frames(data) if n == "message_delta"]
    assert delta["x_router"] == extra["x_router"]
    message = sdk_final(data)
    assert message.content[0].text == "ok" and message.usage.input_tokens == 30


def test_parts_only_in_the_stream_end_are_sent_before_it_finishes() -> None:
    stream = AnthropicStream(id="msg", model="m")
    data = render(stream, [], Completion("whole", USAGE, "m", tool_calls=(ToolCall("t9", "f", '{"a":1}'),)))
    message = sdk_final(data)
    assert [b.type for b in message.content] == ["text", "tool_use"] and message.content[1].input == {"a": 1}


def test_calls_only_in_the_stream_end_are_sent_after_streamed_text() -> None:
    stream = AnthropicStream(id="msg", model="m")
    end = Completion("Checking.", USAGE, "m", tool_calls=(ToolCall("t1", "lookup", '{"q":"x"}'),), finish="tool_calls")
    message = sdk_final(render(stream, [TextDelta("Checking.")], end))
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Checking."  # not sent twice
    assert (message.content[1].id, message.content[1].input) == ("t1", {"q": "x"})


@pytest.mark.parametrize(("pieces", "expected"), [
    (["{\"q\": ", "tru"], {"_raw": '{"q": tru'}),  # cut short: not JSON
    (["[1, ", "2]"], {"_raw": "[1, 2]"}),  # JSON, not an object
    (["", ""], {}),
    (["{\"q\":", " \"x\"}"], {"q": "x"}),
])
def test_streamed_arguments_reach_the_sdk_as_tool_input_reads_them(pieces: list[str], expected: Any) -> None:
    stream = AnthropicStream(id="msg", model="m")
    deltas: list[TextDelta | ToolCallDelta] = [ToolCallDelta(0, "t1", "lookup", pieces[0]),
                                               *(ToolCallDelta(0, None, None, p) for p in pieces[1:])]
    data = render(stream, deltas, Completion("", USAGE, "m", tool_calls=(ToolCall("t1", "lookup", "".join(pieces)),)))
    message = sdk_final(data)  # the SDK's accumulator parses each input_json_delta: it would raise on bad JSON
    assert [(b.type, b.input) for b in message.content] == [("tool_use", expected)]
    assert message.content[0].input == tool_input("".join(pieces))


def test_a_lone_surrogate_in_a_models_text_is_sent_escaped() -> None:
    stream = AnthropicStream(id="msg", model="m")
    data = render(stream, [TextDelta("bad \ud800 char")], Completion("bad \ud800 char", USAGE, "m"))
    assert data.isascii() and b"\\ud800" in data
    assert [n for n, _ in frames(data)][-1] == "message_stop"


def test_an_empty_answer_streams_no_block() -> None:
    stream = AnthropicStream(id="msg", model="m")
    data = render(stream, [], Completion("", USAGE, "m"))
    assert [n for n, _ in frames(data)] == ["message_start", "ping", "message_delta", "message_stop"]
    assert sdk_final(data).content == []


def test_a_stream_error_is_what_the_sdk_raises() -> None:
    stream = AnthropicStream(id="msg", model="m")
    data = stream.start() + stream.event(TextDelta("partial")) + stream.error("api_error", "upstream dropped")
    assert frames(data)[-1] == ("error", {"type": "error", "error": {"type": "api_error",
                                                                     "message": "upstream dropped"}})
    with pytest.raises(anthropic.APIStatusError, match="upstream dropped"):
        sdk_final(data)


# -- errors -----------------------------------------------------------------------------------------
def sdk_error(status: int, rendered: dict[str, Any], headers: dict[str, str]) -> tuple[Exception, bool]:
    """The exception the anthropic SDK raises for this response, and whether it would retry it."""
    with anthropic.Anthropic(api_key="test", base_url=BASE) as client:
        response = httpx2.Response(status, json=rendered, headers=headers,
                                   request=httpx2.Request("POST", f"{BASE}/v1/messages"))
        return client._make_status_error_from_response(response), client._should_retry(response)


def test_an_unknown_model_is_a_404_not_found_error() -> None:
    status, rendered, headers = error_for(UnknownModel("claude-9", ["auto"]))
    assert (status, rendered["error"]["type"], headers) == (404, "not_found_error", {})
    assert "'claude-9'" in rendered["error"]["message"]
    exc, _ = sdk_error(status, rendered, headers)
    assert isinstance(exc, anthropic.NotFoundError)


def test_other_input_errors_are_400() -> None:
    assert error_for(InputError("bad"))[:2] == (400, error_body("invalid_request_error", "bad"))


def test_a_budget_is_a_429_the_sdk_does_not_retry() -> None:
    status, rendered, headers = error_for(BudgetExceeded("session_usd", 1.0, 0.99, 0.05, "session 's1'"))
    assert (status, rendered["error"]["type"], headers) == (429, "rate_limit_error", {"x-should-retry": "false"})
    assert "session_usd" in rendered["error"]["message"]
    exc, retried = sdk_error(status, rendered, headers)
    assert isinstance(exc, anthropic.RateLimitError) and not retried


def test_unavailable_state_is_a_503_overloaded_error_with_retry_after() -> None:
    for exc in (SessionsFull(10, 0.2), StateUnavailable("redis", "refused by 10.0.0.7")):
        status, rendered, headers = error_for(exc)
        assert (status, rendered["error"]["type"], headers) == (503, "overloaded_error", {"retry-after": "1"})
        assert "10.0.0.7" not in rendered["error"]["message"]


def test_an_upstream_failure_is_a_502_api_error_the_sdk_does_not_retry() -> None:
    failed = FallbacksExhausted("chat", [ProviderUnavailable("anthropic/c", "HTTP 529")], ["anthropic/c"])
    status, rendered, headers = error_for(failed)
    assert (status, rendered["error"]["type"], headers) == (502, "api_error", {"x-should-retry": "false"})
    exc, retried = sdk_error(status, rendered, headers)
    assert isinstance(exc, anthropic.APIStatusError) and exc.status_code == 502 and not retried


def test_an_unexpected_error_is_a_500_without_internals() -> None:
    status, rendered, headers = error_for(KeyError("/srv/secret"))
    assert (status, rendered["error"]["type"], headers) == (500, "api_error", {})
    assert "/srv" not in rendered["error"]["message"]
