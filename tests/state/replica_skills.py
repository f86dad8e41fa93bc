"""Skills for the replica tests (tests/state/test_replicas.py), loaded by real `router serve` processes
(``--skills tests.state.replica_skills:registry``).

``pay`` writes: its handler appends ``start <approval id>`` and then ``done <approval id>`` to the file
``marker``, ``seconds`` apart: from outside the servers, how often it ran. ``balance`` and ``probe``
read; their parameters come from the extraction stage (one provider call each), and the model-routing
file gives ``probe`` a model of its own, so that a breaker opened on one leaves the other's closed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from router.dispatch import SkillContext, SkillRegistry


class PayParams(BaseModel):
    amount: float = Field(gt=0, le=10_000)
    marker: str = Field(min_length=1)
    seconds: float = Field(0.0, ge=0, le=10)


class AccountParams(BaseModel):
    account: Literal["checking", "savings"] = "checking"


def _mark(path: str, line: str) -> None:
    with Path(path).open("a") as f:
        f.write(line + "\n")


def registry() -> SkillRegistry:
    reg = SkillRegistry()

    @reg.skill("pay", params=PayParams, writes=True, description="Send money.")
    async def pay(p: PayParams, ctx: SkillContext) -> dict[str, object]:
        _mark(p.marker, f"start {ctx.approval_id}")
        await asyncio.sleep(p.seconds)
        _mark(p.marker, f"done {ctx.approval_id}")
        return {"sent": p.amount}

    @reg.skill("balance", params=AccountParams, description="Read the balance of an account.")
    async def balance(p: AccountParams, ctx: SkillContext) -> dict[str, object]:
        return {"account": p.account, "balance": 1200.0}

    @reg.skill("probe", params=AccountParams, description="Check that an account exists.")
    async def probe(p: AccountParams, ctx: SkillContext) -> dict[str, object]:
        return {"account": p.account, "exists": True}

    return reg
