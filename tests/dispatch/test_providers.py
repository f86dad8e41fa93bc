"""Each adapter against its loopback server: the request on the wire, usage, cost, errors, secrets."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from router.dispatch import ProviderConfig, load_model_routing
from router.dispatch._pricing import call_cost
from router.errors import BadResponse, RateLimited, RequestRejected
from router.providers import ChatRequest, HttpClients, Message, Usage, build_provider, parse_retry_after
from tests.dispatch.conftest import KEYS, Fakes, Harness, provider_section

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
REQUEST = ChatRequest(system="Extract the city. " * 5, messages=(Message("user", "weather in Paris"),),
                      json_schema=SCHEMA, schema_name="weather_params", max_tokens=64)


async def _complete(fakes: Fakes, name: str, model: str, request: ChatRequest = REQUEST) -> Any:
    config = ProviderConfig.model_validate(provider_section(fakes)[name])
    clients = HttpClients()
    try:
        return await build_provider(name, config, clients).complete(model, request, 2.0)
    finally:
        await clients.aclose()


@pytest.mark.parametrize("name, model", [("openai", "gpt-5.4-nano"), ("anthropic", "claude-haiku-4-5"),
                                         ("gemini", "gemini-2.5-flash")])
async def test_structured_answer_and_usage(fakes: Fakes, name: str, model: str) -> None:
    server = getattr(fakes, name)
    server.script("weather in Paris", '{"city": "Paris"}')
    first = await _complete(fakes, name, model)
    second = await _complete(fakes, name, model)
    assert json.loads(first.text) == {"city": "Paris"}
    assert first.usage.output_tokens > 0 and not first.usage.estimated
    # the static part is cached on the second call, read back from each provider's usage block
    assert first.usage.cached_input_tokens == 0 and second.usage.cached_input_tokens > 0
    assert second.usage.total == first.usage.total


async def test_openai_wire_format(fakes: Fakes) -> None:
    await _complete(fakes, "openai", "gpt-5.4-nano")
    sent = fakes.openai.requests[0]
    body = sent["body"]
    assert sent["headers"]["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    assert body["messages"][0] == {"role": "system", "content": REQUEST.system}
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body and "temperature" not in body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "weather_params", "schema": SCHEMA, "strict": True}}


async def test_anthropic_marks_the_static_part_for_caching(fakes: Fakes) -> None:
    await _complete(fakes, "anthropic", "claude-haiku-4-5")
    sent = fakes.anthropic.requests[0]
    body = sent["body"]
    assert sent["headers"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert body["system"] == [{"type": "text", "text": REQUEST.system, "cache_control": {"type": "ephemeral"}}]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tool_choice"] == {"type": "tool", "name": "weather_params"}


async def test_anthropic_cache_write_and_read_are_counted(fakes: Fakes) -> None:
    first = await _complete(fakes, "anthropic", "claude-haiku-4-5")
    second = await _complete(fakes, "anthropic", "claude-haiku-4-5")
    assert first.usage.cache_write_tokens > 0 and second.usage.cache_write_tokens == 0
    assert second.usage.cached_input_tokens == first.usage.cache_write_tokens


async def test_gemini_wire_format(fakes: Fakes) -> None:
    await _complete(fakes, "gemini", "gemini-2.5-flash")
    sent = fakes.gemini.requests[0]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == KEYS["GEMINI_API_KEY"]
    config = sent["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == SCHEMA
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": REQUEST.system}]}


@pytest.mark.parametrize("name, model", [("openai", "gpt-5.4-nano"), ("anthropic", "claude-haiku-4-5"),
                                         ("gemini", "gemini-2.5-flash")])
async def test_missing_usage_block_is_estimated_not_free(fakes: Fakes, name: str, model: str) -> None:
    getattr(fakes, name).fault("no_usage")
    result = await _complete(fakes, name, model)
    assert result.usage.estimated and result.usage.input_tokens >= REQUEST.max_input_tokens()


@pytest.mark.parametrize("name, model", [("openai", "gpt-5.4-nano"), ("anthropic", "claude-haiku-4-5"),
                                         ("gemini", "gemini-2.5-flash")])
async def test_truncated_json_is_a_bad_response(fakes: Fakes, name: str, model: str) -> None:
    getattr(fakes, name).fault("malformed")
    with pytest.raises(BadResponse, match="malformed JSON body"):
        await _complete(fakes, name, model)


async def test_provider_rejects_a_malformed_request_as_the_real_one_does(fakes: Fakes) -> None:
    bad = ChatRequest(system="s", messages=(Message("assistant", "I start"),), max_tokens=8)
    with pytest.raises(RequestRejected, match='HTTP 400 invalid_request_error: messages: first message must use '
                                              'the "user" role \\(not retryable'):
        await _complete(fakes, "anthropic", "claude-haiku-4-5", bad)


async def test_rate_limit_carries_retry_after(fakes: Fakes) -> None:
    fakes.openai.retry_after = "3"
    fakes.openai.fault("429")
    with pytest.raises(RateLimited) as info:
        await _complete(fakes, "openai", "gpt-5.4-nano")
    assert info.value.retry_after == 3.0 and info.value.retryable


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("garbage") is None and parse_retry_after("2.5") == 2.5


async def test_a_missing_key_fails_that_provider_only_and_names_the_variable(
        fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(RequestRejected, match="'GEMINI_API_KEY' \\(api_key_env\\) is not set") as info:
        await _complete(fakes, "gemini", "gemini-2.5-flash")
    assert info.value.reason == "no_key" and fakes.gemini.requests == []


# -- cost to the cent -------------------------------------------------------------------------------
PRICES = load_model_routing().prices


@pytest.mark.parametrize("model, usage, expected", [
    # Sonnet 4.6 $3/$15, cached $0.30, cache write $3.75
    ("claude-sonnet-4-6", Usage(120_000, 40_000, 800_000, 10_000), Decimal("0.36") + Decimal("0.60")
     + Decimal("0.24") + Decimal("0.0375")),
    ("claude-haiku-4-5", Usage(1_000_000, 1_000_000), Decimal("6.00")),
    ("claude-opus-4-7", Usage(10_000, 2_000), Decimal("0.10")),
    ("gpt-5.4-nano", Usage(1_000_000, 1_000_000, 1_000_000), Decimal("1.47")),
    ("gpt-5.4", Usage(200_000, 100_000), Decimal("2.00")),
    ("gpt-5.5", Usage(100_000, 10_000, 100_000), Decimal("0.85")),
    ("gemini-2.5-flash", Usage(500_000, 200_000, 1_000_000), Decimal("0.68")),
    ("gemini-2.5-pro", Usage(800_000, 100_000, 800_000), Decimal("2.10")),
])
def test_cost_per_call_matches_the_price_table(model: str, usage: Usage, expected: Decimal) -> None:
    assert call_cost(PRICES[model], usage) == expected


def test_cost_through_the_dispatcher_to_the_cent(harness: Harness) -> None:
    harness.fakes.openai.fixed_usage = {"input": 400_000, "cached": 600_000, "output": 100_000}
    d = harness.make(budgets={"session_cost_usd": 10, "session_tokens": "off"})
    result = d.dispatch("s", "balance", text="balance please")
    # gpt-5.4-nano: 400k x $0.20 + 600k x $0.02 + 100k x $1.25 per million = $0.08 + $0.012 + $0.125
    assert result.cost_usd == 0.217
    assert d.session_totals("s").cost_usd == Decimal("0.217")
    assert harness.records(d)[-1]["cost_usd"] == 0.217


def test_api_keys_never_appear_in_traces_or_errors(harness: Harness, tmp_path: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    f = harness.fakes
    f.openai.fault("401")
    f.gemini.fault("500")
    d = harness.make(trace={"sink": "jsonl", "path": str(tmp_path / "t.jsonl")})
    d.dispatch("s", "balance", text="balance please")
    d.close()
    text = (tmp_path / "t.jsonl").read_text() + caplog.text
    assert "http_401" in text
    for secret in KEYS.values():
        assert secret not in text
