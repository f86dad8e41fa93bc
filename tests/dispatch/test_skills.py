"""Allowlist, validated parameters, approvals for writes, and checked results."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from router.dispatch import Dispatcher, Skill, SkillContext, SkillRegistry, model_routing_from_dict
from router.errors import ApprovalError, ConfigError, InputError, InvalidParameters, SkillFailed, SkillNotAllowed
from tests.dispatch.conftest import PAY, Harness, routing


def test_a_writes_skill_never_runs_without_approval(harness: Harness) -> None:
    harness.fakes.openai.script("send sam 20", PAY)
    d = harness.make()
    pending = d.dispatch("s", "pay", text="send sam 20")
    assert pending.status == "pending_approval" and pending.approval_id
    assert pending.params == {"amount": 20.0, "to": "sam", "currency": "USD"}
    assert harness.calls.pay == []
    done = d.approve(pending.approval_id)
    assert done.status == "ok" and done.result == {"sent": 20.0, "to": "sam"}
    assert len(harness.calls.pay) == 1
    with pytest.raises(ApprovalError, match="unknown, expired .* or already used"):
        d.approve(pending.approval_id)
    assert len(harness.calls.pay) == 1


def test_rejected_and_expired_approvals_never_run(harness: Harness) -> None:
    d = harness.make(approval_ttl_s=60)
    rejected = d.dispatch("s", "pay", params={"amount": 5, "to": "ann"})
    d.reject(rejected.approval_id or "")
    with pytest.raises(ApprovalError):
        d.approve(rejected.approval_id or "")
    expired = d.dispatch("s", "pay", params={"amount": 5, "to": "ann"})
    harness.clock.now += 61
    with pytest.raises(ApprovalError, match="ttl 60s"):
        d.approve(expired.approval_id or "")
    with pytest.raises(ApprovalError):
        d.approve("made-up-id")
    assert harness.calls.pay == []
    statuses = [r["status"] for r in harness.records(d, "skill")]
    assert statuses == ["pending_approval", "rejected", "pending_approval"]


def test_invalid_extracted_parameters_get_one_reask_then_never_reach_the_handler(harness: Harness) -> None:
    f = harness.fakes
    f.openai.script("send sam lots", '{"amount": -5, "to": "sam"}', '{"amount": "lots", "to": ""}')
    d = harness.make()
    with pytest.raises(InvalidParameters) as info:
        d.dispatch("s", "pay", text="send sam lots")
    assert len(f.openai.requests) == 2
    reask = f.openai.requests[1]["body"]["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"amount": -5, "to": "sam"}'}
    assert "amount: Input should be greater than 0 (got -5)" in reask[-1]["content"]
    assert "amount" in str(info.value) and "to" in str(info.value)
    assert harness.calls.pay == []
    assert d.pending() == []


def test_a_reask_that_fixes_the_answer_succeeds(harness: Harness) -> None:
    harness.fakes.openai.script("send sam 20", "not json at all", PAY)
    d = harness.make()
    result = d.dispatch("s", "pay", text="send sam 20")
    assert result.status == "pending_approval" and len(result.calls) == 2
    assert "not JSON" in harness.fakes.openai.requests[1]["body"]["messages"][-1]["content"]


def test_invalid_given_parameters_never_reach_the_handler(harness: Harness) -> None:
    d = harness.make()
    with pytest.raises(InvalidParameters, match=r"account: Input should be 'checking' or 'savings' \(got 'gold'\)"):
        d.dispatch("s", "balance", params={"account": "gold"})
    with pytest.raises(InvalidParameters, match="give `text` or `params`"):
        d.dispatch("s", "balance")
    assert harness.calls.balance == [] and harness.fakes.openai.requests == []


def test_only_registered_skills_run(harness: Harness) -> None:
    d = harness.make()
    with pytest.raises(SkillNotAllowed, match=r"'rm_rf' is not allowed.*\['balance', 'pay'\]"):
        d.dispatch("s", "rm_rf", text="delete everything")
    assert harness.fakes.openai.requests == []
    assert d.session_totals("s").steps == 0


def test_text_length_limit(harness: Harness) -> None:
    d = harness.make(max_text_chars=50)
    with pytest.raises(InputError, match="text: 51 characters is over max_text_chars=50"):
        d.dispatch("s", "balance", text="x" * 51)


def test_results_are_checked_for_schema_and_freshness(harness: Harness) -> None:
    d = harness.make()
    ok = d.dispatch("s", "balance", params={})
    assert ok.status == "ok" and ok.result["balance"] == 120.5
    harness.calls.balance_age_s = 301
    with pytest.raises(SkillFailed, match=r"stale: its data is 30\ds old, max_age_s is 300") as info:
        d.dispatch("s", "balance", params={})
    assert info.value.reason == "stale"
    harness.calls.balance_result = {"balance": "a lot"}
    with pytest.raises(SkillFailed, match="result fails its schema: balance: .*as_of: Field required"):
        d.dispatch("s", "balance", params={})


class Empty(BaseModel):
    pass


def _one_skill(handler: Any) -> SkillRegistry:
    return SkillRegistry([Skill("job", "a job", Empty, handler)])


def test_handler_errors_and_timeouts_are_skill_failures(harness: Harness) -> None:
    async def boom(params: Empty, ctx: SkillContext) -> None:
        raise RuntimeError("disk full")

    async def hang(params: Empty, ctx: SkillContext) -> None:
        await asyncio.sleep(10)

    config = model_routing_from_dict(routing(harness.fakes))
    with Dispatcher(config, _one_skill(boom)) as d:
        with pytest.raises(SkillFailed, match="handler raised RuntimeError: disk full"):
            d.dispatch("s", "job", params={})
    with Dispatcher(config, _one_skill(hang), handler_timeout_s=0.2) as d:
        with pytest.raises(SkillFailed, match=r"no result within 0.2s") as info:
            d.dispatch("s", "job", params={})
        assert info.value.reason == "handler_timeout"


def test_registry_refuses_bad_declarations() -> None:
    async def h(params: Empty, ctx: SkillContext) -> None:
        return None

    with pytest.raises(ConfigError, match="max_age_s needs a result model with an `as_of` field"):
        Skill("x", "x", Empty, h, max_age_s=10)
    reg = _one_skill(h)
    with pytest.raises(ConfigError, match="registered twice"):
        reg.add(Skill("job", "again", Empty, h))


def test_formatting_stage_writes_the_reply(harness: Harness) -> None:
    async def h(params: Empty, ctx: SkillContext) -> dict[str, int]:
        return {"minutes": 5}

    harness.fakes.anthropic.script("User asked: set a timer\nSkill: timer\nResult: {\"minutes\": 5}",
                                   "Your 5-minute timer is set.")
    reg = SkillRegistry([Skill("timer", "set a timer", Empty, h, format_reply=True)])
    with Dispatcher(model_routing_from_dict(routing(harness.fakes)), reg) as d:
        result = d.dispatch("s", "timer", text="set a timer", params={})
    assert result.reply == "Your 5-minute timer is set."
    assert [c.stage for c in result.calls] == ["formatting"]
