"""Budgets are on by default, refuse a call before it is made, and name the budget."""

from __future__ import annotations

import logging

import pytest

from router.errors import BudgetExceeded
from tests.dispatch.conftest import Harness


def test_a_session_stops_at_its_token_cap_with_the_call_not_made(harness: Harness) -> None:
    f = harness.fakes
    f.openai.fixed_usage = {"input": 300, "output": 50}
    d = harness.make(budgets={"session_tokens": 2_500})
    made = 0
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(10):
            d.dispatch("s1", "balance", text="balance please")
            made += 1
    # each call reserves its worst case (input bound ~1,200 + max_tokens 256) before it is sent
    assert made >= 2
    assert len(f.openai.requests) == made  # the refused call never reached the provider
    err = info.value
    assert err.budget == "session_tokens" and err.limit == 2_500 and err.used == made * 350
    assert "session_tokens" in str(err) and "limit 2,500" in str(err) and "not made" in str(err)
    # another session is unaffected
    d.dispatch("s2", "balance", text="balance please")
    assert len(f.openai.requests) == made + 1


def test_token_cap_default_is_50000(harness: Harness) -> None:
    f = harness.fakes
    f.openai.fixed_usage = {"input": 24_800, "output": 200}
    d = harness.make()
    d.dispatch("s", "balance", text="balance please")
    d.dispatch("s", "balance", text="balance please")
    with pytest.raises(BudgetExceeded, match="session_tokens .* limit 50,000, used 50,000"):
        d.dispatch("s", "balance", text="balance please")
    assert len(f.openai.requests) == 2


def test_session_cost_cap(harness: Harness) -> None:
    f = harness.fakes
    # $0.30 a call at gpt-5.4-nano's $0.20 per million input tokens: far over the reserved bound, which a
    # real provider cannot bill (test_budget_bound.py). The ledger still settles what was billed, so no call
    # is made once the cap is crossed.
    f.openai.fixed_usage = {"input": 1_500_000, "output": 0}
    d = harness.make(budgets={"session_cost_usd": 0.5, "session_tokens": "off"})
    d.dispatch("s", "balance", text="balance please")
    d.dispatch("s", "balance", text="balance please")
    with pytest.raises(BudgetExceeded) as info:
        d.dispatch("s", "balance", text="balance please")
    assert info.value.budget == "session_cost_usd" and info.value.used == pytest.approx(0.6)
    assert len(f.openai.requests) == 2


def test_hourly_cost_cap_spans_sessions_and_rolls(harness: Harness) -> None:
    f = harness.fakes
    f.openai.fixed_usage = {"input": 1_500_000, "output": 0}
    d = harness.make(budgets={"hourly_cost_usd": 0.5, "session_tokens": "off"})
    d.dispatch("a", "balance", text="balance please")
    d.dispatch("b", "balance", text="balance please")
    with pytest.raises(BudgetExceeded, match="hourly_cost_usd exceeded for all sessions"):
        d.dispatch("c", "balance", text="balance please")
    harness.clock.now += 3601
    d.dispatch("c", "balance", text="balance please")
    assert len(f.openai.requests) == 3


def test_steps_cap_stops_a_runaway_loop(harness: Harness) -> None:
    d = harness.make(budgets={"session_steps": 3})
    for _ in range(3):
        d.dispatch("s", "balance", params={"account": "savings"})
    with pytest.raises(BudgetExceeded, match="session_steps"):
        d.dispatch("s", "balance", params={"account": "savings"})
    assert len(harness.calls.balance) == 3


def test_a_budget_switched_off_is_logged_at_start(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="router.dispatch"):
        d = harness.make(budgets={"session_steps": "off"})
    assert "session_steps is switched OFF" in caplog.text
    assert d.config.budgets.session_steps is None
    assert d.config.budgets.session_tokens == 50_000  # the keys left out keep their defaults
    for _ in range(30):
        d.dispatch("s", "balance", params={"account": "savings"})


def test_budget_left_is_in_the_trace_and_the_totals(harness: Harness) -> None:
    harness.fakes.openai.fixed_usage = {"input": 900, "output": 100}
    d = harness.make()
    d.dispatch("s", "balance", text="balance please")
    record = harness.records(d)[-1]
    assert record["budget_left"]["session_tokens"] == 49_000
    assert record["budget_left"]["session_steps"] == 24
    totals = d.session_totals("s")
    assert totals.tokens == 1_000 and totals.calls == 1 and totals.steps == 1
