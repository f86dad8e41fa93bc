"""The Dispatcher over its state, against the loopback providers: the memory state by default (who
approved in the trace, the session's spend in each skill record), and two dispatchers sharing one
real Redis (``-m redis``) as two replicas would: one budget, one set of approvals, one breaker, and
nothing sent while Redis is down."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from router.dispatch import Dispatcher, model_routing_from_dict
from router.dispatch._trace import MemorySink
from router.errors import ApprovalError, BudgetExceeded, ConfigError, InputError, StateUnavailable
from router.state import MemoryState, StateLimits
from router.testing import RedisServer
from tests.dispatch.conftest import PAY, Calls, Fakes, anyio_backend, fakes, registry, routing  # noqa: F401

pytestmark = pytest.mark.anyio


def _records(d: Dispatcher, kind: str) -> list[dict[str, Any]]:
    assert isinstance(d.sink, MemorySink)
    return [r for r in d.sink.records if r["kind"] == kind]


def _dispatcher(fakes: Fakes, calls: Calls, **overrides: Any) -> Dispatcher:  # noqa: F811
    return Dispatcher(model_routing_from_dict(routing(fakes, **overrides)), registry(calls))


# -- the memory state (the default suite) ----------------------------------------------------------------
async def test_the_default_state_is_memory_and_the_trace_names_who_approved(fakes: Fakes) -> None:  # noqa: F811
    calls = Calls()
    async with _dispatcher(fakes, calls) as d:
        assert d.state.name == "memory" and d.state.describe()["backend"] == "memory"
        pending = await d.adispatch("s", "pay", params={"amount": 5, "to": "sam"})
        done = await d.aapprove(pending.approval_id or "", approved_by="ops@example.com")
        assert done.status == "ok" and len(calls.pay) == 1
        other = await d.adispatch("s", "pay", params={"amount": 6, "to": "kim"})
        await d.areject(other.approval_id or "", approved_by="ops-2")
        with pytest.raises(InputError, match="approved_by"):
            await d.aapprove("whatever", approved_by=" ")
        skill = _records(d, "skill")
        assert [(r["status"], r.get("approved_by")) for r in skill] == [
            ("pending_approval", None), ("ok", "ops@example.com"), ("pending_approval", None),
            ("rejected", "ops-2")]
        stamp = datetime.fromisoformat(skill[1]["approved_at"])
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert "approved_at" not in skill[0]


async def test_each_skill_record_carries_the_sessions_spend_so_far(fakes: Fakes) -> None:  # noqa: F811
    fakes.openai.script("balance please", '{"account": "savings"}')
    async with _dispatcher(fakes, Calls()) as d:
        first = await d.adispatch("s", "balance", text="balance please")
        second = await d.adispatch("s", "balance", text="balance please")
        records = _records(d, "skill")
        totals = await d.asession_totals("s")
    assert records[0]["session_tokens"] == first.tokens
    assert records[1]["session_tokens"] == first.tokens + second.tokens == totals.tokens
    assert Decimal(str(records[1]["session_cost_usd"])) == totals.cost_usd
    assert records[1]["budget_left"] == totals.budget_left


def test_a_given_state_must_enforce_the_files_limits(fakes: Fakes) -> None:  # noqa: F811
    config = model_routing_from_dict(routing(fakes))
    with pytest.raises(ConfigError, match="other limits"):
        Dispatcher(config, registry(Calls()), state=MemoryState(StateLimits()))
    d = Dispatcher(config, registry(Calls()), state=MemoryState(config.state_limits()))
    d.close()


# -- two dispatchers, one Redis ---------------------------------------------------------------------------
def _shared(fakes: Fakes, calls: Calls, server: RedisServer, **overrides: Any) -> Dispatcher:  # noqa: F811
    return _dispatcher(fakes, calls, state={"url": server.url, "retry_after_s": 0.2, "timeout_s": 0.3},
                       **overrides)


@pytest.mark.redis
async def test_a_session_spread_over_two_dispatchers_stops_where_one_stops(fakes: Fakes,  # noqa: F811
                                                                            redis_server: RedisServer) -> None:
    fakes.openai.fixed_usage = {"input": 300, "output": 40}
    budgets = {"session_tokens": 6_000, "session_cost_usd": "off"}

    async def run(dispatchers: list[Dispatcher]) -> int:
        made = 0
        try:
            for i in range(40):
                await dispatchers[i % len(dispatchers)].adispatch("s", "balance", text="balance please")
                made += 1
        except BudgetExceeded as exc:
            assert exc.budget == "session_tokens"
        return made

    async with _dispatcher(fakes, Calls(), budgets=budgets) as alone:
        one = await run([alone])
        one_tokens = (await alone.asession_totals("s")).tokens
    sent_alone = len(fakes.openai.requests)
    assert 2 <= one < 40 and sent_alone == one  # the cap stopped it; the refused call was never sent

    calls = Calls()
    async with _shared(fakes, calls, redis_server, budgets=budgets) as a, \
            _shared(fakes, calls, redis_server, budgets=budgets) as b:
        assert await run([a, b]) == one
        assert len(fakes.openai.requests) - sent_alone == one  # nothing refused reached the provider
        assert (await b.asession_totals("s")).tokens == one_tokens == (await a.asession_totals("s")).tokens


@pytest.mark.redis
async def test_an_approval_made_on_one_runs_once_on_the_other(fakes: Fakes,  # noqa: F811
                                                              redis_server: RedisServer) -> None:
    calls = Calls()
    async with _shared(fakes, calls, redis_server) as a, _shared(fakes, calls, redis_server) as b:
        pending = await a.adispatch("s", "pay", params={"amount": 20, "to": "sam"})
        assert [p.approval_id for p in await b.apending("s")] == [pending.approval_id]
        outcomes = await asyncio.gather(a.aapprove(pending.approval_id or "", "alice"),
                                        b.aapprove(pending.approval_id or "", "bob"), return_exceptions=True)
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, ApprovalError)]
        assert len(done) == 1 and len(refused) == 1 and len(calls.pay) == 1  # the handler ran once
        approved = [r for d in (a, b) for r in _records(d, "skill") if r["status"] == "ok"]
        assert len(approved) == 1 and approved[0]["approved_by"] in ("alice", "bob")


@pytest.mark.redis
async def test_a_breaker_opened_on_one_is_open_on_the_other(fakes: Fakes,  # noqa: F811
                                                            redis_server: RedisServer) -> None:
    fakes.openai.fault("500", times=2)
    fakes.gemini.script("balance please", '{"account": "savings"}')
    breaker = {"failures": 2, "window_s": 600, "cooldown_s": 600}
    calls = Calls()
    async with _shared(fakes, calls, redis_server, breaker=breaker, retry={"max_retries": 1}) as a, \
            _shared(fakes, calls, redis_server, breaker=breaker) as b:
        await a.adispatch("s", "balance", text="balance please")  # openai fails twice, gemini answers
        assert len(fakes.openai.requests) == 2
        result = await b.adispatch("s", "balance", text="balance please")
        assert len(fakes.openai.requests) == 2  # b never asked it: the breaker is open for b too
        assert result.calls[0].provider == "gemini"
        skipped = [r for r in _records(b, "call") if r["provider"] == "openai"]
        assert skipped[0]["status"] == "circuit_open" and skipped[0]["breaker"] == "open"


@pytest.mark.redis
async def test_redis_down_refuses_dispatches_before_any_call_then_they_resume(fakes: Fakes,  # noqa: F811
                                                                              redis_server: RedisServer) -> None:
    fakes.openai.script("balance please", '{"account": "savings"}')
    async with _shared(fakes, Calls(), redis_server) as d:
        await d.adispatch("s", "balance", text="balance please")
        sent = len(fakes.openai.requests)
        redis_server.kill()
        for _ in range(3):
            with pytest.raises(StateUnavailable) as info:
                await d.adispatch("s", "balance", text="balance please")
            assert info.value.retry_after == 0.2
        assert len(fakes.openai.requests) == sent  # failed closed: nothing sent unmetered
        assert d.state.describe()["url"] == redis_server.url and not await d.state.ping()
        redis_server.start()
        result = await d.adispatch("s", "balance", text="balance please")
        assert result.status == "ok" and len(fakes.openai.requests) == sent + 1
        totals = await d.asession_totals("s")
        traced = sum(r["tokens"] for r in _records(d, "call"))
        assert totals.tokens == traced and totals.steps == 2  # the refused steps were never counted
