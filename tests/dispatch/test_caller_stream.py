"""``ModelCaller.stream``: a stage's chain as a stream, metered per session like ``call``: settled at its
end, spent when it is cut or closed once begun, one trace record per attempt."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from router.dispatch._config import ModelRef
from router.errors import FallbacksExhausted, ProviderUnavailable
from router.providers import ChatRequest, Message, StreamEnd, StreamEvent, TextDelta
from tests.dispatch.conftest import Harness

pytestmark = pytest.mark.anyio

ANSWER = "Sent twenty to Sam just now"
REQUEST = ChatRequest(system="", messages=(Message("user", "pay sam 20"),), max_tokens=64)


async def _drain(call: object) -> list[StreamEvent]:
    return [event async for event in call]  # type: ignore[attr-defined]


async def test_a_stream_is_metered_and_traced_like_a_call(harness: Harness) -> None:
    harness.fakes.anthropic.script("pay sam 20", ANSWER)
    d = harness.make()
    call = await d.caller.stream(stage="formatting", skill="pay", session="s1", request=REQUEST)
    assert (call.provider, call.model, call.fallback_from) == ("anthropic", "claude-haiku-4-5", None)
    events = await _drain(call)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    assert isinstance(events[-1], StreamEnd) and call.completion is not None and call.completion.text == ANSWER
    assert call.cost > 0
    [record] = harness.records(d)
    assert record["status"] == "ok" and record["stage"] == "formatting" and record["session"] == "s1"
    assert Decimal(str(record["cost_usd"])) == call.cost and record["tokens"] == call.completion.usage.total
    totals = await d.state.budgets.totals("s1")
    assert totals.tokens == call.completion.usage.total and totals.cost_usd == call.cost


async def test_a_refusal_before_the_first_event_falls_back(harness: Harness) -> None:
    harness.fakes.openai.script("pay sam 20", ANSWER)
    harness.fakes.anthropic.fault("400")
    d = harness.make()
    call = await d.caller.stream(stage="formatting", skill="pay", session="s1", request=REQUEST)
    await _drain(call)
    assert call.provider == "openai" and call.fallback_from == "anthropic/claude-haiku-4-5"
    assert [r["status"] for r in harness.records(d)] == ["http_400", "ok"]
    assert [a.status for a in call.attempts] == ["http_400", "ok"]


async def test_no_model_beginning_raises_fallbacks_exhausted(harness: Harness) -> None:
    harness.fakes.anthropic.fault("400")
    harness.fakes.openai.fault("401")
    d = harness.make()
    with pytest.raises(FallbacksExhausted, match="formatting for skill 'pay'"):
        await d.caller.stream(stage="formatting", skill="pay", session="s1", request=REQUEST)


async def test_a_cut_mid_stream_raises_and_is_metered_at_the_reservation(harness: Harness) -> None:
    harness.fakes.openai.script("pay sam 20", ANSWER)
    harness.fakes.openai.fault("cut")  # the role chunk and the first piece, then the connection drops
    d = harness.make()
    call = await d.caller.stream(stage="extraction", skill="pay", session="s1", request=REQUEST)
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable):
        async for event in call:
            seen.append(event)
    assert seen and all(isinstance(e, TextDelta) for e in seen) and call.completion is None
    [record] = harness.records(d)
    assert record["status"] == "connection" and record["usage_estimated"] and record["cost_usd"] > 0
    assert "metered at the reserved worst case" in record["error"]
    assert (await d.state.budgets.totals("s1")).cost_usd == call.cost > 0
    assert harness.fakes.gemini.requests == []  # no fallback once text was passed on


async def test_aclose_mid_stream_ends_the_upstream_request(harness: Harness) -> None:
    fake = harness.fakes.openai
    fake.script("pay sam 20", ANSWER)
    fake.stream_chunk_delay_s = 0.05
    d = harness.make(real_sleep=True)
    call = await d.caller.stream(stage="extraction", skill="pay", session="s1", request=REQUEST)
    async with call:
        async for _ in call:
            break  # the client went away after the first piece
    for _ in range(200):
        if fake.streams_cut:
            break
        await asyncio.sleep(0.02)
    assert fake.streams_cut == 1 and fake.streams_done == 0
    [record] = harness.records(d)
    assert record["status"] == "cancelled" and "client" in record["error"] and record["cost_usd"] > 0


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_chain_of_its_own_names_its_own_primary(harness: Harness, streamed: bool) -> None:
    harness.fakes.openai.script("pay sam 20", ANSWER)
    d = harness.make()
    only = ModelRef(provider="openai", model="gpt-5.4-nano", max_tokens=64)  # the stage's fallback, asked by name
    args = {"stage": "formatting", "skill": "pay", "session": "s1", "request": REQUEST, "chain": [only]}
    if streamed:
        call: Any = await d.caller.stream(**args, primary=only.key)
        await _drain(call)
    else:
        call = await d.caller.call(**args, primary=only.key)
    assert call.provider == "openai" and call.fallback_from is None  # no fallback: the one model asked answered
    assert [r["fallback_from"] for r in harness.records(d)] == [None]
    # without it, the stage's configured primary is named, as before
    plain: Any = await d.caller.call(stage="formatting", skill="pay", session="s1", request=REQUEST, chain=[only])
    assert plain.fallback_from == "anthropic/claude-haiku-4-5"
