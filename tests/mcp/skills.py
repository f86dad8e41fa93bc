"""Skills for the MCP tests, named as the mini index's intents map them (``banking.balance``...).

The writes skill appends one JSON line per run to the ledger file named by ``ROUTER_TEST_MCP_LEDGER``,
so a test (in another process than the server) sees whether, and how often, its handler ran.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from router.dispatch import SkillContext, SkillRegistry

LEDGER_ENV = "ROUTER_TEST_MCP_LEDGER"
OPENING_BALANCE = 1000.0


class BalanceParams(BaseModel):
    account: Literal["checking", "savings"] = "checking"


class TransferParams(BaseModel):
    amount: float = Field(gt=0, le=10_000, description="amount of money to send")
    to_account: str = Field(min_length=1, max_length=64, description="who or which account receives it")


class AlarmParams(BaseModel):
    time: str = Field(min_length=1, max_length=32, description="when the alarm rings, e.g. 6am")


def ledger_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def registry() -> SkillRegistry:
    reg = SkillRegistry()
    ledger = Path(os.environ[LEDGER_ENV])

    @reg.skill("banking.balance", params=BalanceParams, description="Read the balance of the user's account.")
    async def balance(p: BalanceParams, ctx: SkillContext) -> dict[str, object]:
        sent = sum(float(str(line["amount"])) for line in ledger_lines(ledger))
        return {"account": p.account, "balance": OPENING_BALANCE - sent}

    @reg.skill("payments.transfer", params=TransferParams, writes=True, description="Send money to another account.")
    async def transfer(p: TransferParams, ctx: SkillContext) -> dict[str, object]:
        with ledger.open("a") as f:
            f.write(json.dumps({"amount": p.amount, "to": p.to_account, "approval_id": ctx.approval_id}) + "\n")
        return {"sent": p.amount, "to": p.to_account}

    @reg.skill("alarm", params=AlarmParams, format_reply=True, description="Set an alarm.")
    async def alarm(p: AlarmParams, ctx: SkillContext) -> dict[str, object]:
        return {"set": True, "time": p.time}

    return reg
