"""Example skills for CLINC150 intents, used by the README, ``demo_golden.jsonl`` and the tests.

``transfer`` writes (it waits for approval); ``balance`` reads data that must be fresh;
``timer`` formats its reply with the formatting stage. The handlers are in-memory stand-ins for
the user's own systems: the point is the dispatcher's contract around them.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from router.dispatch._skills import SkillContext, SkillRegistry


class TransferParams(BaseModel):
    amount: float = Field(gt=0, le=10_000, description="amount of money to send")
    currency: Literal["USD", "EUR", "GBP"] = "USD"
    to_account: str = Field(min_length=1, max_length=64, description="who or which account receives it")


class BalanceParams(BaseModel):
    account: Literal["checking", "savings"] = "checking"


class BalanceResult(BaseModel):
    account: str
    balance: float
    as_of: float = Field(description="unix time the balance was read")


class TimerParams(BaseModel):
    minutes: int = Field(ge=1, le=24 * 60)


def build_registry() -> SkillRegistry:
    reg = SkillRegistry()
    balances = {"checking": 1200.0, "savings": 5000.0}

    @reg.skill("transfer", params=TransferParams, writes=True, description="Send money to another account.")
    async def transfer(p: TransferParams, ctx: SkillContext) -> dict[str, object]:
        balances["checking"] -= p.amount
        return {"sent": p.amount, "currency": p.currency, "to": p.to_account, "approval_id": ctx.approval_id}

    @reg.skill("balance", params=BalanceParams, result=BalanceResult, max_age_s=60,
               description="Read the balance of the user's checking or savings account.")
    async def balance(p: BalanceParams, ctx: SkillContext) -> BalanceResult:
        return BalanceResult(account=p.account, balance=balances[p.account], as_of=time.time())

    @reg.skill("timer", params=TimerParams, format_reply=True, description="Start a countdown timer.")
    async def timer(p: TimerParams, ctx: SkillContext) -> dict[str, object]:
        return {"started": True, "minutes": p.minutes}

    return reg


registry = build_registry
