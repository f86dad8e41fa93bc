"""The ``State`` Protocol's contract, run against each backend: memory (the default suite) and Redis
(``-m redis``). Budgets, approvals and breakers behave the same whichever holds them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from router.errors import ApprovalError, ApprovalRunning, BudgetExceeded, SessionsFull, TooManyApprovals
from router.state import State
from tests.state.conftest import Backend, limits

pytestmark = pytest.mark.anyio


def _make(backend: Backend, states: list[State], **kwargs: object) -> State:
    state = backend.make(limits(**kwargs))  # type: ignore[arg-type]
    states.append(state)
    return state


# -- budgets ---------------------------------------------------------------------------------------------
async def test_steps_are_counted_and_refused_past_the_cap(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, budgets={"session_steps": 2})
    await state.budgets.step("s")
    await state.budgets.step("s")
    with pytest.raises(BudgetExceeded) as info:
        await state.budgets.step("s")
    assert info.value.budget == "session_steps" and info.value.used == 2
    await state.budgets.step("other")  # per session
    totals = await state.budgets.totals("s")
    assert totals.steps == 2 and totals.budget_left["session_steps"] == 0


async def test_a_reservation_counts_until_it_is_settled_with_what_was_billed(backend: Backend,
                                                                             states: list[State]) -> None:
    state = _make(backend, states, budgets={"session_tokens": 1_000, "session_cost_usd": "off"})
    held = await state.budgets.reserve("s", 600, Decimal("0.01"))
    with pytest.raises(BudgetExceeded) as info:  # the live reservation counts: 600 + 600 > 1,000
        await state.budgets.reserve("s", 600, Decimal("0.01"))
    assert info.value.budget == "session_tokens" and info.value.used == 600 and info.value.needed == 600
    await state.budgets.settle(held, 150, Decimal("0.0025"))  # the provider billed less than the bound
    again = await state.budgets.reserve("s", 600, Decimal("0.01"))
    await state.budgets.release(again)  # failed before any work: nothing charged
    totals = await state.budgets.totals("s")
    assert (totals.tokens, totals.cost_usd, totals.calls) == (150, Decimal("0.0025"), 1)
    assert totals.budget_left["session_tokens"] == 850
    assert await state.budgets.left("s") == totals.budget_left


async def test_the_session_cost_cap_is_exact(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, budgets={"session_cost_usd": "0.03", "session_tokens": "off"})
    for _ in range(3):
        await state.budgets.settle(await state.budgets.reserve("s", 1, Decimal("0.01")), 1, Decimal("0.01"))
    with pytest.raises(BudgetExceeded) as info:  # 0.03 + a picodollar is over
        await state.budgets.reserve("s", 1, Decimal("0.000000000001"))
    assert info.value.budget == "session_cost_usd" and info.value.used == pytest.approx(0.03)
    totals = await state.budgets.totals("s")
    assert totals.cost_usd == Decimal("0.03") and totals.budget_left["session_cost_usd"] == 0


async def test_the_hourly_cap_counts_every_session_and_every_live_reservation(backend: Backend,
                                                                              states: list[State]) -> None:
    state = _make(backend, states, budgets={"hourly_cost_usd": "1.00", "session_cost_usd": "off"})
    await state.budgets.settle(await state.budgets.reserve("a", 10, Decimal("0.40")), 10, Decimal("0.40"))
    await state.budgets.reserve("b", 10, Decimal("0.50"))  # held, not settled
    with pytest.raises(BudgetExceeded) as info:
        await state.budgets.reserve("c", 10, Decimal("0.20"))  # 0.40 settled + 0.50 held + 0.20 > 1.00
    assert info.value.budget == "hourly_cost_usd" and info.value.scope == "all sessions in the last hour"
    await state.budgets.reserve("c", 10, Decimal("0.10"))  # exactly 1.00: allowed
    assert (await state.budgets.left("z"))["hourly_cost_usd"] == pytest.approx(0.60)  # settled spend only


async def test_a_switched_off_budget_reads_none(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, budgets={"session_tokens": "off", "session_steps": "off"})
    await state.budgets.settle(await state.budgets.reserve("s", 10**9, Decimal(0)), 10**9, Decimal(0))
    left = await state.budgets.left("s")
    assert left["session_tokens"] is None and left["session_steps"] is None
    assert (await state.budgets.totals("s")).tokens == 10**9


async def test_a_new_session_past_max_sessions_is_refused(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, budgets={"max_sessions": 2, "session_ttl_s": 600})
    await state.budgets.step("a")
    await state.budgets.step("b")
    with pytest.raises(SessionsFull) as info:
        await state.budgets.step("c")
    assert info.value.limit == 2 and 1 <= info.value.retry_after <= 600
    with pytest.raises(SessionsFull):
        await state.budgets.reserve("c", 1, Decimal(0))
    await state.budgets.step("a")  # live sessions are still served


async def test_a_session_idle_past_its_ttl_starts_afresh(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, budgets={"session_ttl_s": 0.4})
    await state.budgets.settle(await state.budgets.reserve("s", 500, Decimal("0.1")), 500, Decimal("0.1"))
    assert (await state.budgets.totals("s")).tokens == 500
    await backend.advance(0.6)
    assert (await state.budgets.totals("s")).tokens == 0
    await state.budgets.step("s")
    assert (await state.budgets.totals("s")).steps == 1


# -- approvals -------------------------------------------------------------------------------------------
async def test_an_approval_is_claimed_once_then_finished(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states)
    a = await state.approvals.create("s", "pay", {"amount": 5, "to": "sam"}, "pay sam 5")
    await backend.advance(0.01)
    b = await state.approvals.create("s", "pay", {"amount": 6, "to": "kim"}, None)
    assert [p.approval_id for p in await state.approvals.pending("s")] == [a.approval_id, b.approval_id]
    claimed = await state.approvals.claim(a.approval_id)
    assert (claimed.session_id, claimed.skill, claimed.params, claimed.text) == (
        "s", "pay", {"amount": 5, "to": "sam"}, "pay sam 5")
    with pytest.raises(ApprovalRunning, match="running now"):
        await state.approvals.claim(a.approval_id)
    with pytest.raises(ApprovalRunning):
        await state.approvals.take(a.approval_id)
    assert [p.approval_id for p in await state.approvals.pending()] == [b.approval_id]
    await state.approvals.finish(a.approval_id, consumed=True)
    with pytest.raises(ApprovalError, match="already used") as used:
        await state.approvals.claim(a.approval_id)
    assert type(used.value) is ApprovalError


async def test_an_unconsumed_claim_is_pending_again_in_creation_order(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, max_pending_approvals_per_session=2)
    first = await state.approvals.create("s", "pay", {}, None)
    await backend.advance(0.01)
    second = await state.approvals.create("s", "pay", {}, None)
    await state.approvals.claim(first.approval_id)
    await state.approvals.finish(first.approval_id, consumed=False)
    assert [p.approval_id for p in await state.approvals.pending("s")] == [first.approval_id, second.approval_id]
    with pytest.raises(TooManyApprovals):
        await state.approvals.create("s", "pay", {}, None)  # it counts against the cap again


async def test_a_rejection_takes_it_away(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states)
    a = await state.approvals.create("s", "pay", {"n": 1}, None)
    assert (await state.approvals.take(a.approval_id)).params == {"n": 1}
    assert await state.approvals.pending() == []
    with pytest.raises(ApprovalError, match="unknown, expired"):
        await state.approvals.take(a.approval_id)


async def test_pending_approvals_are_capped_per_session_and_in_all(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, max_pending_approvals_per_session=2, max_pending_approvals=3,
                  approval_ttl_s=600)
    for _ in range(2):
        await state.approvals.create("a", "pay", {}, None)
    await state.approvals.check("b")
    with pytest.raises(TooManyApprovals) as session:
        await state.approvals.check("a")
    assert session.value.limit_name == "max_pending_approvals_per_session" and session.value.retry_after == 600
    with pytest.raises(TooManyApprovals):
        await state.approvals.create("a", "pay", {}, None)
    await state.approvals.create("b", "pay", {}, None)  # another session has its own
    with pytest.raises(TooManyApprovals) as full:
        await state.approvals.create("c", "pay", {}, None)
    assert full.value.limit_name == "max_pending_approvals" and full.value.scope == "all sessions"
    assert len(await state.approvals.pending()) == 3


async def test_a_pending_approval_expires_after_its_ttl(backend: Backend, states: list[State]) -> None:
    state = _make(backend, states, approval_ttl_s=0.4, max_pending_approvals_per_session=1)
    a = await state.approvals.create("s", "pay", {}, None)
    with pytest.raises(TooManyApprovals):
        await state.approvals.create("s", "pay", {}, None)
    await backend.advance(0.6)
    assert await state.approvals.pending() == [] and await state.approvals.pending("s") == []
    with pytest.raises(ApprovalError, match="expired"):
        await state.approvals.claim(a.approval_id)
    await state.approvals.create("s", "pay", {}, None)  # its place is free


# -- breakers --------------------------------------------------------------------------------------------
async def test_a_breaker_opens_then_lets_one_probe_through_then_closes(backend: Backend,
                                                                       states: list[State]) -> None:
    state = _make(backend, states, breaker={"failures": 3, "cooldown_s": 0.4})
    key = "openai/gpt-5.4-nano"
    assert await state.breakers.allow(key) and await state.breakers.state(key) == "closed"
    assert await state.breakers.record_failure(key) == "closed"
    await state.breakers.record_failure(key)
    assert await state.breakers.record_failure(key) == "open"
    assert not await state.breakers.allow(key)
    assert 0 < await state.breakers.retry_after(key) <= 0.4
    assert await state.breakers.state("other/model") == "closed"  # per key
    await backend.advance(0.5)
    assert await state.breakers.state(key) == "half_open"
    assert await state.breakers.allow(key)  # the one probe
    assert not await state.breakers.allow(key)  # only one at a time
    assert await state.breakers.record_failure(key) == "open"  # a failed probe opens it again
    await backend.advance(0.5)
    assert await state.breakers.allow(key)
    assert await state.breakers.record_success(key) == "closed"  # the probe answered
    assert await state.breakers.allow(key) and await state.breakers.retry_after(key) == 0


async def test_failures_count_within_the_window_whatever_succeeded(backend: Backend, states: list[State]) -> None:
    counting = _make(backend, states, breaker={"failures": 2, "reset_on_success": False})
    await counting.breakers.record_failure("p/m")
    await counting.breakers.record_success("p/m")
    assert await counting.breakers.record_failure("p/m") == "open"  # 2 failures in the window

    resetting = _make(backend, states, breaker={"failures": 2, "reset_on_success": True})
    await resetting.breakers.record_failure("q/m")
    await resetting.breakers.record_success("q/m")  # clears the count
    assert await resetting.breakers.record_failure("q/m") == "closed"


async def test_a_probe_goes_back_to_its_holder_only_and_expires_after_probe_s(backend: Backend,
                                                                              states: list[State]) -> None:
    state = _make(backend, states, breaker={"failures": 1, "cooldown_s": 0.2})
    key = "openai/gpt-5.4-nano"
    await state.breakers.record_failure(key)
    await backend.advance(0.3)
    assert await state.breakers.allow(key, "a", 30)
    await state.breakers.abandon(key, "b")  # not b's to give back
    assert not await state.breakers.allow(key, "b", 30)
    await state.breakers.abandon(key, "a")  # a's call was never made
    assert await state.breakers.allow(key, "b", 0.3) and await state.breakers.state(key) == "half_open"
    assert not await state.breakers.allow(key, "c", 0.3)
    await backend.advance(0.4)  # b never reported: presumed lost
    assert await state.breakers.allow(key, "c", 30)
    assert await state.breakers.record_success(key) == "closed"
