"""Parameters are validated strictly by default: no unknown key, no coercion (`true` is not 1.0); a
skill opts out explicitly with ``strict_params=False``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, Field

from router.dispatch import Dispatcher, Skill, SkillContext, SkillRegistry, model_routing_from_dict
from router.dispatch._extraction import params_schema
from router.errors import InvalidParameters
from tests.dispatch.conftest import Fakes, Harness, routing


class Currency(Enum):
    USD = "USD"
    EUR = "EUR"


class Recipient(BaseModel):
    name: str = Field(min_length=1)
    iban: str | None = None


class TransferParams(BaseModel):
    amount: float = Field(gt=0, le=10_000)
    to: Recipient
    currency: Currency = Currency.USD
    when: datetime | None = None


@pytest.fixture
def seen() -> list[BaseModel]:
    return []


@pytest.fixture
def dispatcher(fakes: Fakes, seen: list[BaseModel]) -> Iterator[Dispatcher]:
    async def handler(params: BaseModel, ctx: SkillContext) -> dict[str, Any]:
        seen.append(params)
        return {"ok": True}

    reg = SkillRegistry([
        Skill("transfer", "Send money.", TransferParams, handler),
        Skill("lax_transfer", "Send money, leniently.", TransferParams, handler, strict_params=False),
    ])
    with Dispatcher(model_routing_from_dict(routing(fakes)), reg) as d:
        yield d


GOOD = {"amount": 20, "to": {"name": "sam"}}


@pytest.mark.parametrize("params, field, message", [
    ({**GOOD, "memo": "rent"}, "memo", "Extra inputs are not permitted"),
    ({**GOOD, "to": {"name": "sam", "bic": "X"}}, "to.bic", "Extra inputs are not permitted"),
    ({**GOOD, "amount": True}, "amount", "Input should be a valid number (got True)"),
    ({**GOOD, "amount": "20"}, "amount", "Input should be a valid number (got '20')"),
    ({**GOOD, "to": {"name": 7}}, "to.name", "Input should be a valid string"),
    ({**GOOD, "currency": "GBP"}, "currency", "Input should be 'USD' or 'EUR'"),
])
def test_strict_by_default_naming_the_field(dispatcher: Dispatcher, seen: list[BaseModel], params: dict[str, Any],
                                            field: str, message: str) -> None:
    with pytest.raises(InvalidParameters) as info:
        dispatcher.dispatch("s", "transfer", params=params)
    assert any(e.startswith(f"{field}: ") and message in e for e in info.value.errors), info.value.errors
    assert seen == []  # never reached the handler


def test_json_values_of_richer_types_still_pass(dispatcher: Dispatcher, seen: list[BaseModel]) -> None:
    # Parameters are JSON: a date is an ISO string and an enum member its value, an integer is a number.
    dispatcher.dispatch("s", "transfer", params={**GOOD, "currency": "EUR", "when": "2026-01-02T03:04:05Z"})
    dispatcher.dispatch("s", "transfer", params={**GOOD, "when": datetime(2026, 1, 2, tzinfo=UTC)})  # library caller
    first, second = seen
    assert isinstance(first, TransferParams) and isinstance(second, TransferParams)
    assert first.amount == 20.0 and first.currency is Currency.EUR
    assert first.when == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and second.when == datetime(2026, 1, 2, tzinfo=UTC)


def test_a_skill_opts_out_explicitly(dispatcher: Dispatcher, seen: list[BaseModel]) -> None:
    result = dispatcher.dispatch("s", "lax_transfer", params={**GOOD, "amount": "20", "memo": "ignored"})
    assert result.status == "ok" and result.params is not None
    assert result.params["amount"] == 20.0 and "memo" not in result.params
    assert dispatcher.skills.get("lax_transfer").strict_params is False


def test_the_schema_the_model_sees_forbids_extra_keys(dispatcher: Dispatcher) -> None:
    strict = params_schema(dispatcher.skills.get("transfer"))
    assert strict["additionalProperties"] is False
    assert strict["$defs"]["Recipient"]["additionalProperties"] is False
    assert "additionalProperties" not in params_schema(dispatcher.skills.get("lax_transfer"))


def test_an_extracted_answer_with_an_unknown_key_is_reasked(harness: Harness) -> None:
    f = harness.fakes
    f.openai.script("send sam 20", '{"amount": 20, "to": "sam", "note": "x"}', '{"amount": 20, "to": "sam"}')
    d = harness.make()
    pending = d.dispatch("s", "pay", text="send sam 20")
    assert pending.status == "pending_approval" and pending.params == {"amount": 20.0, "to": "sam", "currency": "USD"}
    reask = f.openai.requests[1]["body"]["messages"][-1]["content"]
    assert "note: Extra inputs are not permitted" in reask
    sent_schema = f.openai.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert sent_schema["additionalProperties"] is False
    # The stored parameters are JSON: the approval validates them strictly again and runs the handler once.
    done = d.approve(pending.approval_id or "")
    assert done.status == "ok" and len(harness.calls.pay) == 1
    assert json.loads(json.dumps(done.params)) == pending.params
