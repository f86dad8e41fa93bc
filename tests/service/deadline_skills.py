"""Skills for the deadline tests, loaded by a real `router serve` (``--skills tests.service.deadline_skills:registry``).

``slow_pay`` is a ``writes`` skill whose handler takes ``seconds`` and appends ``start`` and ``done``
lines to the file ``marker``: the proof, from outside the server, of how often it ran and whether
it finished. ``balance`` reads a fresh balance; its parameters come from the extraction stage.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from router.dispatch import SkillContext, SkillRegistry


class SlowPayParams(BaseModel):
    seconds: float = Field(ge=0, le=60)
    marker: str = Field(min_length=1)


class BalanceParams(BaseModel):
    account: Literal["checking", "savings"] = "checking"


class BalanceResult(BaseModel):
    account: str
    balance: float
    as_of: float


def _mark(path: str, line: str) -> None:
    with Path(path).open("a") as f:
        f.write(line + "\n")


def registry() -> SkillRegistry:
    reg = SkillRegistry()

    @reg.skill("slow_pay", params=SlowPayParams, writes=True, description="Pay, slowly.")
    async def slow_pay(p: SlowPayParams, ctx: SkillContext) -> dict[str, object]:
        _mark(p.marker, f"start {ctx.approval_id}")
        await asyncio.sleep(p.seconds)
        _mark(p.marker, f"done {ctx.approval_id}")
        return {"paid": True, "slept": p.seconds}

    @reg.skill("balance", params=BalanceParams, result=BalanceResult, max_age_s=60,
               description="Read the balance of the user's checking or savings account.")
    async def balance(p: BalanceParams, ctx: SkillContext) -> BalanceResult:
        return BalanceResult(account=p.account, balance=1200.0, as_of=time.time())

    return reg
