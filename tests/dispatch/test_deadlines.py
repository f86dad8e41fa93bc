"""One time budget per dispatch (router/dispatch/_deadline.py), against the loopback providers.

The chain is cut to fit ``dispatch_timeout_s`` with the fallback still tried; a model-routing file where
the handler and the models cannot fit is refused; a caller that stops waiting does not cut a
dispatch; a step cut at close still meters its calls and writes its trace record; an approval is
consumed only once its handler has finished, and never runs twice; pending approvals are capped
per session and in all, and expire.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from router.dispatch import Dispatcher, SkillContext, SkillRegistry
from router.dispatch import model_routing_from_dict as from_dict
from router.dispatch._trace import MemorySink
from router.errors import (
    ApprovalError,
    ApprovalRunning,
    ConfigError,
    FallbacksExhausted,
    SkillFailed,
    TooManyApprovals,
)
from router.providers import ChatRequest, Deadline, Message
from router.state._approval_store import ApprovalStore
from tests.dispatch.conftest import PAY, Harness, registry, routing

pytestmark = pytest.mark.anyio


def _until(check: Callable[[], bool], within_s: float = 20.0) -> None:
    """Wait for something another thread does (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


async def _auntil(check: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


# -- the chain is cut to fit, the fallback still answers ------------------------------------------------------
def test_a_chain_that_fits_gets_each_models_full_timeout(harness: Harness) -> None:
    d = harness.make()  # dispatch_timeout_s 60 holds handler_timeout_s 30 and the 3 x 2 s extraction chain
    d.dispatch("s", "balance", text="balance please")
    assert [r["timeout_s"] for r in harness.records(d)] == [2.0]


async def test_a_slow_primary_is_cut_and_the_fallback_answers(harness: Harness) -> None:
    """The issue's reproduction, scaled: four dispatches of `balance` whose extraction model is too slow."""
    f = harness.fakes
    f.openai.always("slow", seconds=3)  # never answers within its slot
    f.gemini.script("balance please", '{"account": "savings"}')
    # 5 s: the handler keeps 1 s, the three 2 s models share 4 s: 1.33 s each.
    d = harness.make(real_sleep=True, dispatch_timeout_s=5, handler_timeout_s=1)
    results = await asyncio.gather(*(d.adispatch("s", "balance", text="balance please") for _ in range(4)))
    assert all(r.status == "ok" and r.fallback_taken and r.params == {"account": "savings"} for r in results)
    calls = harness.records(d)
    cut = [r for r in calls if r["provider"] == "openai"]
    # one attempt each, cut to its share (not the model's 2 s), and no retry: its wait would eat gemini's share
    assert [r["status"] for r in cut] == ["timeout"] * 4 and len(f.openai.requests) == 4
    assert all(1.0 < r["timeout_s"] <= 4 * 2 / 6 for r in cut)
    assert [r["status"] for r in calls if r["provider"] == "gemini"] == ["ok"] * 4
    totals = d.session_totals("s")  # every call sent is metered: the cut ones at their reserved worst case
    assert totals.calls == 8 and totals.tokens == sum(r.tokens for r in results) > 0
    assert all(r["usage_estimated"] and r["cost_usd"] > 0 for r in cut)
    assert [r["status"] for r in harness.records(d, "skill")] == ["ok"] * 4
    await d.aclose()  # this loop's connections are closed on it


def test_a_retry_that_would_eat_the_fallbacks_share_is_not_made(harness: Harness) -> None:
    f = harness.fakes
    f.openai.retry_after = "2"
    f.openai.fault("429")
    for server in (f.openai, f.gemini):
        server.script("pay sam 20", PAY)
    # a writes skill: no handler in the dispatch, so 4 s shared by three 2 s models: 1.33 s each
    result = harness.make(dispatch_timeout_s=4, handler_timeout_s=1).dispatch("s", "pay", text="pay sam 20")
    assert harness.sleeps.waits == [] and len(f.openai.requests) == 1
    assert result.calls[0].provider == "gemini"


def test_with_room_the_same_retry_is_made(harness: Harness) -> None:
    f = harness.fakes
    f.openai.retry_after = "2"
    f.openai.fault("429")
    f.openai.script("pay sam 20", PAY)
    result = harness.make().dispatch("s", "pay", text="pay sam 20")
    assert harness.sleeps.waits == [2.0] and len(f.openai.requests) == 2
    assert result.calls[0].provider == "openai"


def test_a_model_with_no_time_left_is_not_sent(harness: Harness) -> None:
    d = harness.make()
    request = ChatRequest(system="s", messages=(Message("user", "hi"),))

    async def spent() -> Any:
        return await d.caller.call(stage="extraction", skill="pay", session="s", request=request,
                                   deadline=Deadline(0.01))

    with pytest.raises(FallbacksExhausted) as info:
        asyncio.run(spent())
    assert [e.reason for e in info.value.errors] == ["deadline"] * 3
    assert "dispatch_timeout_s=0.01" in str(info.value.errors[0])
    assert sum(len(s.requests) for s in harness.fakes.all()) == 0


# -- a model-routing file where they cannot fit is refused ------------------------------------------------------
def test_a_handler_that_cannot_fit_is_refused_naming_both_values(harness: Harness) -> None:
    config = from_dict(routing(harness.fakes, dispatch_timeout_s=10))
    with pytest.raises(ConfigError, match=r"dispatch_timeout_s=10 .*handler_timeout_s=30"):
        Dispatcher(config, _registry(harness)[0])


def test_models_that_cannot_share_the_budget_are_refused(harness: Harness) -> None:
    config = from_dict(routing(harness.fakes, dispatch_timeout_s=1.5, handler_timeout_s=0.5))
    with pytest.raises(ConfigError) as info:
        Dispatcher(config, _registry(harness)[0])
    message = str(info.value)
    assert "dispatch_timeout_s=1.5" in message and "openai/gpt-5.4-nano timeout_s=2" in message
    assert "it needs at least 3s" in message  # 1 s for each of the three models


@pytest.mark.parametrize("field, value", [("dispatch_timeout_s", 0), ("dispatch_timeout_s", True),
                                          ("handler_timeout_s", 3601), ("max_pending_approvals_per_session", 0),
                                          ("max_pending_approvals", "10")])
def test_the_new_limits_are_bounded_fields(harness: Harness, field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        from_dict(routing(harness.fakes, **{field: value}))


# -- a caller that stops waiting; a step cut at close ------------------------------------------------------
async def test_a_caller_that_stops_waiting_does_not_cut_the_dispatch(harness: Harness) -> None:
    harness.fakes.openai.always("slow", seconds=1)  # answers within its 2 s timeout
    d = harness.make(real_sleep=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(d.adispatch("s", "balance", text="balance please"), 0.2)
    await _auntil(lambda: bool(harness.records(d, "skill")))
    assert [r["status"] for r in harness.records(d, "skill")] == ["ok"]
    assert [r["status"] for r in harness.records(d)] == ["ok"]
    assert len(harness.calls.balance) == 1 and d.session_totals("s").calls == 1
    await d.aclose()


async def test_a_provider_call_cut_after_it_was_sent_is_metered_and_traced(harness: Harness) -> None:
    f = harness.fakes
    f.openai.always("slow", seconds=3)
    d = harness.make(real_sleep=True)
    request = ChatRequest(system="diagnose", messages=(Message("user", "why"),))
    task = asyncio.create_task(d.acomplete("extraction", "pay", "s", request))
    await _auntil(lambda: len(f.openai.requests) == 1)  # sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _auntil(lambda: bool(harness.records(d)))
    [record] = harness.records(d)
    assert record["status"] == "timeout" and record["usage_estimated"] and record["tokens"] > 0
    totals = d.session_totals("s")
    assert totals.calls == 1 and totals.tokens == record["tokens"] and float(totals.cost_usd) == record["cost_usd"] > 0
    await d.aclose()


class Slow(BaseModel):
    seconds: float


def _registry(harness: Harness, entered: threading.Event | None = None,
              release: threading.Event | None = None) -> tuple[SkillRegistry, list[str | None]]:
    """The test skills plus `slow_write`; the list gets the approval id of each run of its handler."""
    reg = registry(harness.calls)
    runs: list[str | None] = []

    @reg.skill("slow_write", params=Slow, writes=True, description="A write that takes a while.")
    async def slow_write(p: Slow, ctx: SkillContext) -> dict[str, Any]:
        runs.append(ctx.approval_id)
        if entered is not None:
            entered.set()
        if release is not None:
            await asyncio.to_thread(release.wait, 20)
        await asyncio.sleep(p.seconds)
        return {"done": True}

    return reg, runs


def _make(harness: Harness, reg: SkillRegistry, **kwargs: Any) -> Dispatcher:
    return Dispatcher(from_dict(routing(harness.fakes)), reg, monotonic=harness.clock, **kwargs)


def _skill_records(d: Dispatcher) -> list[dict[str, Any]]:
    assert isinstance(d.sink, MemorySink)
    return [r for r in d.sink.records if r["kind"] == "skill"]


async def test_an_approval_cut_at_close_is_consumed_with_its_outcome_traced(harness: Harness) -> None:
    entered = threading.Event()
    reg, runs = _registry(harness, entered)
    d = _make(harness, reg)
    pending = d.dispatch("s", "slow_write", params={"seconds": 30})
    task = asyncio.create_task(d.aapprove(pending.approval_id or ""))
    await asyncio.to_thread(entered.wait, 20)
    await asyncio.to_thread(d.close, 0)  # no wait: the step is cut inside its handler
    with pytest.raises(asyncio.CancelledError):
        await task
    skill = _skill_records(d)
    assert [(r["status"], r.get("handler")) for r in skill] == [("pending_approval", None), ("timeout", "cancelled")]
    assert skill[1]["approval_id"] == pending.approval_id
    store = d.state.approvals.store  # type: ignore[attr-defined]  # the memory state's
    assert store.pending() == [] and store.running() == []  # consumed: it may have acted
    assert runs == [pending.approval_id]


def test_a_handler_past_its_timeout_consumes_the_approval(harness: Harness) -> None:
    reg, runs = _registry(harness)
    with _make(harness, reg, handler_timeout_s=0.2) as d:
        pending = d.dispatch("s", "slow_write", params={"seconds": 5})
        with pytest.raises(SkillFailed) as info:
            d.approve(pending.approval_id or "")
        assert info.value.reason == "handler_timeout"
        with pytest.raises(ApprovalError) as again:
            d.approve(pending.approval_id or "")
        assert type(again.value) is ApprovalError and "already used" in str(again.value)
        last = _skill_records(d)[-1]
        assert (last["status"], last["handler"], last["approval_id"]) == ("SkillFailed", "timeout",
                                                                          pending.approval_id)
        assert runs == [pending.approval_id]


async def test_an_approval_runs_once_while_a_second_approve_or_reject_is_refused(harness: Harness) -> None:
    entered, release = threading.Event(), threading.Event()
    reg, runs = _registry(harness, entered, release)
    d = _make(harness, reg)
    try:
        pending = d.dispatch("s", "slow_write", params={"seconds": 0})
        approval_id = pending.approval_id or ""
        first = asyncio.create_task(d.aapprove(approval_id))
        await asyncio.to_thread(entered.wait, 20)
        with pytest.raises(ApprovalRunning, match="running"):
            await d.aapprove(approval_id)
        with pytest.raises(ApprovalRunning):
            d.reject(approval_id)
        release.set()
        assert (await first).result == {"done": True}
        with pytest.raises(ApprovalError, match="already used"):
            await d.aapprove(approval_id)
        assert runs == [approval_id]
        assert [r.get("handler") for r in _skill_records(d)] == [None, "ok"]
    finally:
        release.set()
        d.close()


# -- pending approvals: capped per session and in all, and expiring --------------------------------------
def test_a_session_past_its_cap_is_refused_and_other_sessions_are_not(harness: Harness) -> None:
    d = harness.make(max_pending_approvals_per_session=2, max_pending_approvals=3, approval_ttl_s=600)
    pay = {"amount": 5, "to": "sam"}
    for _ in range(2):
        assert d.dispatch("a", "pay", params=pay).status == "pending_approval"
    with pytest.raises(TooManyApprovals) as info:
        d.dispatch("a", "pay", params=pay)
    assert info.value.limit_name == "max_pending_approvals_per_session" and info.value.limit == 2
    assert info.value.retry_after == 600 and "session 'a'" in str(info.value)
    assert d.session_totals("a").steps == 2  # the refusal counted no step
    requests = len(harness.fakes.openai.requests)
    with pytest.raises(TooManyApprovals):
        d.dispatch("a", "pay", text="pay sam 5")
    assert len(harness.fakes.openai.requests) == requests  # refused before a model was paid to extract

    assert d.dispatch("b", "pay", params=pay).status == "pending_approval"  # another session gets its own
    with pytest.raises(TooManyApprovals) as full:  # the global cap, the last line
        d.dispatch("c", "pay", params=pay)
    assert full.value.limit_name == "max_pending_approvals" and "all sessions" in str(full.value)

    first = d.pending("a")[0]
    d.reject(first.approval_id)  # a place freed in the session
    assert d.dispatch("a", "pay", params=pay).status == "pending_approval"
    harness.clock.now += 601  # all expire
    assert d.pending() == []
    assert d.dispatch("c", "pay", params=pay).status == "pending_approval"
    assert harness.calls.pay == []  # nothing pending ever ran


def test_expired_approvals_are_gone_from_the_front_first() -> None:
    now = [0.0]
    store = ApprovalStore(10, clock=lambda: now[0], max_pending=100, max_per_session=100)
    ids = []
    for i in range(5):
        now[0] = float(i)
        ids.append(store.create("s", "pay", {}, None).approval_id)
    now[0] = 12.5  # the first three are past 10 s
    assert [a.approval_id for a in store.pending()] == ids[3:]
    with pytest.raises(ApprovalError, match="expired"):
        store.claim(ids[0])


def test_an_approval_whose_handler_never_started_is_pending_again() -> None:
    now = [0.0]
    store = ApprovalStore(10, clock=lambda: now[0], max_pending=100, max_per_session=2)
    first = store.create("s", "pay", {}, None)
    now[0] = 1.0
    second = store.create("s", "pay", {}, None)
    store.claim(first.approval_id)
    store.finish(first.approval_id, consumed=False)
    assert [a.approval_id for a in store.pending("s")] == [first.approval_id, second.approval_id]  # creation order
    with pytest.raises(TooManyApprovals):
        store.create("s", "pay", {}, None)  # it counts against the cap again
    now[0] = 10.5  # and it still expires on its own clock, first
    assert [a.approval_id for a in store.pending()] == [second.approval_id]
    store.claim(second.approval_id)
    store.finish(second.approval_id, consumed=True)
    with pytest.raises(ApprovalError, match="already used"):
        store.claim(second.approval_id)
