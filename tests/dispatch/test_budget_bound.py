"""The budget is an upper bound: caps hold against the worst a provider can bill, and churn resets nobody.

Providers here bill like the worst tokenizer there is (one token per byte, every framing token, the
whole output cap, Anthropic cache writes at 1.25x), which is what an average of 3 bytes a token
undercounts for digits and CJK. Item 10: the in-process ledger refuses a new session when full
rather than forgetting a live one.
"""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal
from typing import Any

import pytest

from router.dispatch import BudgetConfig, Price, model_routing_from_dict
from router.dispatch._pricing import call_cost, max_call_cost
from router.errors import BudgetExceeded, ConfigError, SessionsFull
from router.providers import ChatRequest, Message, Usage
from router.state._ledger import Ledger
from router.testing import FakeAnthropic, FakeOpenAI
from tests.dispatch.conftest import Clock, Harness

DIGITS = " ".join(str(n) for n in range(100, 460))  # 1,439 bytes: numbers split into 1-3 digit tokens
CJK = "请把二十美元转给山姆，然后查一下我的储蓄账户余额。" * 50  # 1,250 characters, 3,750 bytes
TOOL_PROMPT_TOKENS = 313  # Anthropic's documented system prompt for a forced tool call
FRAMING = 4  # tokens around each message on the OpenAI and Anthropic APIs


class ByteBilledAnthropic(FakeAnthropic):
    """Bills one token per byte: the static part as a cache write the first time (a read after), the
    messages and the tool prompt as input, and the whole ``max_tokens`` as output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.billed: list[dict[str, int]] = []
        self._written: set[str] = set()

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        payload, model = super().handle(method, path, headers, body)
        system = "".join(b["text"] for b in body["system"])
        static = len(system.encode()) + len(json.dumps(body.get("tools", [])).encode())
        first = system not in self._written
        self._written.add(system)
        usage = {"input_tokens": sum(len(m["content"].encode()) + FRAMING for m in body["messages"])
                 + (TOOL_PROMPT_TOKENS if body.get("tools") else 0),
                 "output_tokens": body["max_tokens"],
                 "cache_creation_input_tokens": static if first else 0,
                 "cache_read_input_tokens": 0 if first else static}
        payload["usage"] = usage
        self.billed.append(usage)
        return payload, model


class ByteBilledOpenAI(FakeOpenAI):
    """Bills one token per byte of every message and of the schema, plus framing, and the whole output cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.billed: list[dict[str, int]] = []

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        payload, model = super().handle(method, path, headers, body)
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
        prompt = (sum(len(m["content"].encode()) + FRAMING for m in body["messages"]) + 3
                  + len(json.dumps(schema).encode()))
        usage = {"prompt_tokens": prompt, "completion_tokens": body["max_completion_tokens"],
                 "total_tokens": prompt + body["max_completion_tokens"]}
        payload["usage"] = usage
        self.billed.append(usage)
        return payload, model


@pytest.fixture
def byte_billed(harness: Harness) -> Any:
    """The harness's fakes, swapped for byte-billing ones on the same keys."""
    fakes = harness.fakes
    anthropic = ByteBilledAnthropic(api_key=fakes.anthropic.api_key).start()
    openai = ByteBilledOpenAI(api_key=fakes.openai.api_key).start()
    fakes.anthropic.stop()
    fakes.openai.stop()
    fakes.anthropic, fakes.openai = anthropic, openai  # the harness fixture stops these at teardown
    return fakes


def _extraction(provider: str) -> dict[str, Any]:
    model = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.4-nano"}[provider]
    return {"provider": provider, "model": model, "timeout_s": 2, "max_tokens": 256}


def _sent(provider: str, body: dict[str, Any]) -> ChatRequest:
    """The ChatRequest behind a request body the fake received."""
    if provider == "anthropic":
        system, schema, name = body["system"][0]["text"], body["tools"][0]["input_schema"], body["tools"][0]["name"]
        messages = body["messages"]
    else:
        system, messages = body["messages"][0]["content"], body["messages"][1:]
        schema, name = body["response_format"]["json_schema"]["schema"], body["response_format"]["json_schema"]["name"]
    return ChatRequest(system=system, messages=tuple(Message(m["role"], m["content"]) for m in messages),
                       json_schema=schema, schema_name=name)


def _old_reservation(request: ChatRequest, price: Price, max_tokens: int) -> tuple[int, Decimal]:
    """What was reserved before: 3 bytes a token, at the plain input price."""
    text = request.system + "".join(m.content for m in request.messages) + str(request.json_schema)
    tokens = math.ceil(len(text.encode()) / 3) + 8 * (len(request.messages) + 1)
    return tokens + max_tokens, (tokens * price.input + max_tokens * price.output) / Decimal(1_000_000)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("text", [DIGITS, CJK], ids=["digits", "cjk"])
@pytest.mark.parametrize("cap", ["session_tokens", "session_cost_usd"])
def test_a_session_cap_holds_against_the_worst_billing(harness: Harness, byte_billed: Any, provider: str,
                                                       text: str, cap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    limit: Any = 20_000 if cap == "session_tokens" else Decimal("0.02")
    budgets = {"session_tokens": "off", "session_cost_usd": "off", "session_steps": "off", cap: limit}
    # Only the extraction stage is given: the other stages keep the shipped models (merged per stage).
    d = harness.make(budgets=budgets, defaults={"extraction": _extraction(provider)})
    reserved: list[tuple[int, Decimal]] = []
    reserve = d.state.budgets.reserve

    async def spy(session: str, tokens: int, cost: Decimal) -> Any:
        reservation = await reserve(session, tokens, cost)
        reserved.append((tokens, cost))
        return reservation

    monkeypatch.setattr(d.state.budgets, "reserve", spy)
    fake = getattr(byte_billed, provider)
    made = 0
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(60):
            d.dispatch("s", "balance", text=text)
            made += 1
    assert info.value.budget == cap and made >= 2  # the cap was reached by real spending
    assert len(fake.billed) == made  # the refused call never reached the provider

    totals = d.session_totals("s")
    records = harness.records(d)
    billed_tokens = sum(sum(u.values()) - u.get("total_tokens", 0) for u in fake.billed)
    assert totals.tokens == sum(r["tokens"] for r in records) == billed_tokens  # reconciled with the provider
    assert totals.cost_usd == sum(Decimal(str(r["cost_usd"])) for r in records)
    spent = totals.tokens if cap == "session_tokens" else totals.cost_usd
    assert spent <= limit  # overshot by nothing

    price = d.config.prices[_extraction(provider)["model"]]
    for (tokens, cost), record, sent in zip(reserved, records, fake.requests, strict=True):
        assert record["tokens"] <= tokens and Decimal(str(record["cost_usd"])) <= cost  # each call within its bound
        old_tokens, old_cost = _old_reservation(_sent(provider, sent["body"]), price, 256)
        # The old 3-bytes-a-token reservation was below what these calls really cost: the cap could be overshot.
        assert record["tokens"] > old_tokens
        if sent is fake.requests[0]:
            assert Decimal(str(record["cost_usd"])) > old_cost


def test_the_anthropic_cache_write_is_reserved_at_its_price(harness: Harness, byte_billed: Any) -> None:
    d = harness.make(defaults={"extraction": _extraction("anthropic")})
    d.dispatch("s", "balance", text=CJK)
    record = harness.records(d)[0]
    assert record["cache_write_tokens"] > 0  # the first call wrote the static part to the cache
    price = d.config.prices["claude-haiku-4-5"]
    bound = _sent("anthropic", byte_billed.anthropic.requests[0]["body"]).max_input_tokens()
    # Every input token is reserved at the cache-write price (1.25 $/M), not the plain input price (1.00 $/M).
    assert max_call_cost(price, 1_000_000, 0) == Decimal("1.25")
    assert Decimal(str(record["cost_usd"])) <= max_call_cost(price, bound, 256)
    # The write did cost more than plain input tokens would have: a reservation at the input price fell short.
    as_plain_input = Usage(input_tokens=record["input_tokens"] + record["cache_write_tokens"],
                           output_tokens=record["output_tokens"])
    assert Decimal(str(record["cost_usd"])) > call_cost(price, as_plain_input)


def test_a_response_without_usage_is_charged_its_whole_reservation(harness: Harness) -> None:
    harness.fakes.openai.fault("no_usage")
    d = harness.make()
    d.dispatch("s", "balance", text="balance please")
    record = harness.records(d)[0]
    assert record["usage_estimated"] is True
    bound = _sent("openai", harness.fakes.openai.requests[0]["body"]).max_input_tokens()
    assert record["tokens"] == bound + 256
    assert Decimal(str(record["cost_usd"])) == max_call_cost(d.config.prices["gpt-5.4-nano"], bound, 256)


def test_settling_reconciles_down_to_the_billed_usage(harness: Harness) -> None:
    harness.fakes.openai.fixed_usage = {"input": 100, "output": 20}
    d = harness.make(budgets={"session_tokens": 2_000})
    for _ in range(5):  # each reserves ~1,472 tokens, but keeps only the 120 billed
        d.dispatch("s", "balance", text="balance please")
    assert d.session_totals("s").tokens == 600
    assert d.session_totals("s").budget_left["session_tokens"] == 1_400


def test_billing_over_the_reserved_bound_is_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.fakes.openai.fixed_usage = {"input": 1_000_000, "output": 0}
    d = harness.make(budgets={"session_tokens": "off"})
    with caplog.at_level(logging.WARNING, logger="router.dispatch"):
        d.dispatch("s", "balance", text="balance please")
    assert "over the reserved bound" in caplog.text
    assert d.session_totals("s").tokens == 1_000_000  # what was billed is what counts


def test_the_input_bound_is_one_token_per_byte_plus_framing() -> None:
    plain = ChatRequest(system="", messages=(Message("user", CJK),))
    assert plain.max_input_tokens() == len(CJK.encode()) + 8 * 2
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    structured = ChatRequest(system="s", messages=(Message("user", DIGITS),), json_schema=schema, schema_name="x")
    assert structured.max_input_tokens() == 1 + len(DIGITS) + 16 + len(json.dumps(schema)) + 1 + 512
    price = Price(input=Decimal(1), output=Decimal(5), cache_write=Decimal("1.25"))
    # An estimated usage (no usage block) is priced as the reservation: every input token at the dearest price.
    assert call_cost(price, Usage(input_tokens=1000, output_tokens=10, estimated=True)) == max_call_cost(price, 1000,
                                                                                                        10)


# -- item 10: churn resets nobody ----------------------------------------------------------------------------


def test_100_001_sessions_do_not_reset_an_earlier_sessions_usage() -> None:
    clock = Clock()
    ledger = Ledger(BudgetConfig(), clock=clock)  # defaults: 100,000 sessions, a day's TTL, 50,000 tokens
    r = ledger.reserve("early", 40_000, Decimal("0.5"))
    ledger.settle(r, 40_000, Decimal("0.5"))
    for i in range(99_999):
        ledger.step(f"churn-{i}")
    assert len(ledger) == 100_000
    with pytest.raises(SessionsFull) as info:
        ledger.step("one-too-many")  # the 100,001st: refused, nobody forgotten
    assert info.value.limit == 100_000 and "budgets.max_sessions=100,000" in str(info.value)
    assert info.value.retry_after == pytest.approx(86_400)
    assert ledger.totals("early").tokens == 40_000  # its usage is intact...
    with pytest.raises(BudgetExceeded, match="session_tokens"):
        ledger.reserve("early", 20_000, Decimal(0))  # ...and still counts
    ledger.step("churn-5")  # live sessions are still served

    clock.now += 86_000
    ledger.step("early")  # active again, and so is one of the others
    ledger.step("churn-5")
    clock.now += 1_000  # the churned sessions have now been idle over a day: ended
    ledger.step("newcomer")
    assert len(ledger) == 3  # early, churn-5 (touched later) and the newcomer
    assert ledger.totals("early").tokens == 40_000


def test_a_session_with_a_call_in_flight_is_never_expired() -> None:
    clock = Clock()
    ledger = Ledger(BudgetConfig(max_sessions=1, session_ttl_s=60), clock=clock)
    r = ledger.reserve("slow", 100, Decimal("0.01"))
    clock.now += 3_600
    with pytest.raises(SessionsFull):
        ledger.step("other")  # the idle-looking session holds a reservation: it is alive
    ledger.settle(r, 80, Decimal("0.008"))
    assert ledger.totals("slow").tokens == 80
    clock.now += 61
    ledger.step("other")
    assert len(ledger) == 1


def test_the_hourly_window_is_bounded_by_time_not_by_calls() -> None:
    clock = Clock()
    ledger = Ledger(BudgetConfig.model_validate({"hourly_cost_usd": 100, "session_cost_usd": "off"}), clock=clock)
    for i in range(20_000):  # 10 calls a second for over half an hour
        clock.now += 0.1
        r = ledger.reserve(f"s{i % 7}", 1, Decimal("0.001"))
        ledger.settle(r, 1, Decimal("0.001"))
    assert len(ledger._hour) <= 2_001  # one entry per second
    assert ledger.left("s0")["hourly_cost_usd"] == pytest.approx(100 - 20)
    clock.now += 3_600 - 1_000  # the first ~1,000 s of spend has left the window, never early
    left = ledger.left("s0")["hourly_cost_usd"]
    assert 100 - 10.1 <= left <= 100 - 9.9


def test_a_session_idle_past_its_ttl_has_ended_and_starts_afresh() -> None:
    clock = Clock()
    ledger = Ledger(BudgetConfig(session_ttl_s=60), clock=clock)
    ledger.settle(ledger.reserve("s", 500, Decimal("0.1")), 500, Decimal("0.1"))
    clock.now += 59
    assert ledger.totals("s").tokens == 500  # still live: a read does not extend it
    clock.now += 1
    assert ledger.totals("s").tokens == 0  # ended, whether or not its entry was dropped yet
    ledger.step("s")
    assert (ledger.totals("s").tokens, ledger.totals("s").steps) == (0, 1)


@pytest.mark.parametrize("budgets, message", [
    ({"max_sessions": 0}, "budgets.max_sessions: Input should be greater than or equal to 1 (got 0)"),
    ({"max_sessions": True}, "budgets.max_sessions: Input should be a valid integer (got True)"),
    ({"max_sessions": 20_000_000}, "budgets.max_sessions: Input should be less than or equal to 10000000"),
    ({"session_ttl_s": 0}, "budgets.session_ttl_s: Input should be greater than 0 (got 0)"),
    ({"session_ttl_s": "off"}, "budgets.session_ttl_s: Input should be a valid number (got 'off')"),
])
def test_the_session_limits_are_bounded_fields(budgets: dict[str, Any], message: str) -> None:
    assert BudgetConfig().max_sessions == 100_000 and BudgetConfig().session_ttl_s == 86_400
    with pytest.raises(ConfigError) as info:
        model_routing_from_dict({"budgets": budgets})
    assert message in str(info.value)
