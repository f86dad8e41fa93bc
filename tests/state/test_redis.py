"""The Redis state with a real redis-server (``-m redis``): atomic across processes, failing closed,
and losing or double-charging nothing across an outage."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from decimal import Decimal
from types import SimpleNamespace

import pytest

from router.errors import BudgetExceeded, StateUnavailable
from router.providers import (
    Chain,
    ChatRequest,
    HttpClients,
    Message,
    ProviderConfig,
    RetryConfig,
    Target,
    build_provider,
)
from router.state import RedisState, Reservation, StateConfig, StateLimits, _redis_budgets
from router.testing import RedisServer
from tests.providers.test_probe import Hanging, Refusing
from tests.state import _processes
from tests.state.conftest import limits

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _state(server: RedisServer, lim: StateLimits | None = None, **config: object) -> RedisState:
    return RedisState(StateConfig.model_validate({"url": server.url, **config}), lim or limits())


# -- across processes ------------------------------------------------------------------------------------
def test_processes_reserving_at_once_grant_exactly_what_one_process_would(redis_server: RedisServer) -> None:
    lim = limits(budgets={"session_tokens": 10_000, "session_cost_usd": "off", "hourly_cost_usd": "off"})
    alone = _processes.run_at_once(_processes.reserve_until_refused, [(redis_server.url, lim, "alone", 100)])
    assert alone == [100]
    granted = _processes.run_at_once(_processes.reserve_until_refused,
                                     [(redis_server.url, lim, "shared", 100) for _ in range(4)])
    assert sum(granted) == 100  # exactly what one process grants: no overshoot, nothing lost

    async def totals() -> tuple[int, int]:
        state = _state(redis_server, lim)
        try:
            t = await state.budgets.totals("shared")
            return t.tokens, t.calls
        finally:
            await state.aclose()

    assert asyncio.run(totals()) == (10_000, 100)


def test_two_processes_claiming_the_same_approvals_get_each_one_once(redis_server: RedisServer) -> None:
    lim = limits(max_pending_approvals_per_session=100)

    async def create() -> list[str]:
        state = _state(redis_server, lim)
        try:
            return [(await state.approvals.create("s", "pay", {"n": i}, None)).approval_id for i in range(30)]
        finally:
            await state.aclose()

    ids = asyncio.run(create())
    first, second = _processes.run_at_once(_processes.claim_all, [(redis_server.url, lim, ids)] * 2)
    assert sorted(first + second) == sorted(ids)  # every one claimed, and by one process only
    assert not set(first) & set(second)


def test_a_breaker_opened_in_one_process_is_open_in_another(redis_server: RedisServer) -> None:
    lim = limits(breaker={"failures": 3, "cooldown_s": 600})
    assert _processes.run_at_once(_processes.fail, [(redis_server.url, lim, "openai/gpt-5.4-nano", 3)]) == ["open"]

    async def seen() -> tuple[bool, str, bool]:
        state = _state(redis_server, lim)
        try:
            key = "openai/gpt-5.4-nano"
            return (await state.breakers.allow(key), await state.breakers.state(key),
                    await state.breakers.allow("openai/gpt-5.4"))
        finally:
            await state.aclose()

    assert asyncio.run(seen()) == (False, "open", True)


# -- outages ---------------------------------------------------------------------------------------------
async def test_an_outage_fails_closed_and_the_outbox_settles_exactly_once(redis_server: RedisServer,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    state = _state(redis_server, limits(budgets={"session_tokens": 10_000}), retry_after_s=0.2, timeout_s=0.3)
    try:
        held = [await state.budgets.reserve("s", 1_000, Decimal("0.01")) for _ in range(3)]
        await state.budgets.settle(held[0], 700, Decimal("0.007"))
        redis_server.kill()
        with pytest.raises(StateUnavailable) as info:
            await state.budgets.reserve("s", 10, Decimal(0))
        assert info.value.backend == "redis" and info.value.retry_after == 0.2
        assert redis_server.url.split("//")[1] in info.value.detail
        with pytest.raises(StateUnavailable):
            await state.budgets.step("s")
        with pytest.raises(StateUnavailable):
            await state.approvals.create("s", "pay", {}, None)
        with pytest.raises(StateUnavailable):
            await state.breakers.allow("p/m")
        assert await state.ping() is False
        assert state.describe()["outbox"] == 1  # the refused reserve's release: its script may have run
        with caplog.at_level(logging.ERROR, logger="router.state"):
            await state.budgets.settle(held[1], 800, Decimal("0.008"))  # kept, not raised
            await state.budgets.release(held[2])
        assert "kept in the outbox" in caplog.text and state.describe()["outbox"] == 3
        with pytest.raises(StateUnavailable, match="not applied yet"):
            await state.budgets.reserve("s", 10, Decimal(0))  # refused while the outbox is not empty

        redis_server.start()  # its data back from the append-only file
        for _ in range(100):  # the background retry applies the outbox
            if state.describe()["outbox"] == 0:
                break
            await asyncio.sleep(0.05)
        assert state.describe()["outbox"] == 0
        totals = await state.budgets.totals("s")
        assert (totals.tokens, totals.cost_usd, totals.calls) == (1_500, Decimal("0.015"), 2)
        # Nothing still held: the whole cap but what was settled can be reserved again.
        await state.budgets.reserve("s", 10_000 - 1_500, Decimal(0))
    finally:
        await state.aclose()


async def test_a_replayed_settlement_charges_once(redis_server: RedisServer) -> None:
    state = _state(redis_server)
    try:
        held = await state.budgets.reserve("s", 1_000, Decimal("0.01"))
        for _ in range(3):  # e.g. the reply was lost and the outbox tried again
            await state.budgets.settle(held, 400, Decimal("0.004"))
        await state.budgets.release(held)
        totals = await state.budgets.totals("s")
        assert (totals.tokens, totals.cost_usd, totals.calls) == (400, Decimal("0.004"), 1)
    finally:
        await state.aclose()


async def test_a_reservation_held_past_hold_s_is_let_go_and_its_late_settlement_still_counts(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    state = _state(redis_server, limits(budgets={"session_tokens": 1_000}, hold_s=0.3))
    try:
        dead = await state.budgets.reserve("s", 900, Decimal("0.01"))  # its process "died" holding it
        with pytest.raises(BudgetExceeded):
            await state.budgets.reserve("s", 200, Decimal(0))
        await asyncio.sleep(0.5)
        with caplog.at_level(logging.WARNING, logger="router.state"):
            fresh = await state.budgets.reserve("s", 200, Decimal(0))  # reaps the dead one first
        assert "were let go" in caplog.text
        await state.budgets.settle(dead, 300, Decimal("0.003"))  # it did come back: what was billed counts
        await state.budgets.release(fresh)
        totals = await state.budgets.totals("s")
        assert (totals.tokens, totals.cost_usd) == (300, Decimal("0.003"))
        await state.budgets.reserve("s", 700, Decimal(0))  # and nothing is held twice
    finally:
        await state.aclose()


async def test_the_close_flushes_and_names_what_it_could_not(redis_server: RedisServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    state = _state(redis_server, timeout_s=0.3)
    held = await state.budgets.reserve("s", 100, Decimal("0.001"))
    redis_server.kill()
    await state.budgets.settle(held, 100, Decimal("0.001"))
    with caplog.at_level(logging.CRITICAL, logger="router.state"):
        await state.aclose()
    assert f"never applied (Redis unreachable): settle 100 tokens / $0.001 of reservation {held.id}" in caplog.text


async def test_keys_are_prefixed(redis_server: RedisServer) -> None:
    state = _state(redis_server, prefix="team-a:")
    try:
        await state.budgets.step("s")
        await state.approvals.create("s", "pay", {}, None)
        await state.breakers.record_failure("p/m")
        connection = await state.connection()
        keys = await connection.client.keys("*")
        assert keys and all(k.startswith("team-a:") for k in keys)
        assert {"team-a:session:s", "team-a:sessions", "team-a:pending", "team-a:pending:s",
                "team-a:breaker_failures:p/m"} <= set(keys)
    finally:
        await state.aclose()


async def test_readiness_reports_the_state_without_its_password(redis_server: RedisServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_TEST_REDIS_PASSWORD", "")  # set but empty: no AUTH sent
    state = _state(redis_server, password_env="ROUTER_TEST_REDIS_PASSWORD")
    try:
        assert await state.ping() is True
        assert state.describe() == {"backend": "redis", "url": redis_server.url, "prefix": "router:", "outbox": 0,
                                    "outbox_overdue": 0}
    finally:
        await state.aclose()


# -- answers lost, probes not sent, settlements owed too long ---------------------------------------------
@pytest.mark.parametrize("how", ["timeout", "cancelled"])
async def test_a_reserve_whose_answer_was_lost_is_released_not_held_until_hold_s(redis_server: RedisServer,
                                                                                  how: str) -> None:
    state = _state(redis_server, limits(budgets={"session_tokens": 1_000}), retry_after_s=30,
                   timeout_s=0.3 if how == "timeout" else 10)
    pid = redis_server.proc.pid  # type: ignore[union-attr]
    try:
        await state.budgets.release(await state.budgets.reserve("s", 1, Decimal(0)))  # connected, script loaded
        os.kill(pid, signal.SIGSTOP)  # Redis reads nothing more: the reserve's script waits in its socket
        try:
            if how == "timeout":
                with pytest.raises(StateUnavailable):
                    await state.budgets.reserve("s", 600, Decimal(0))
            else:
                with pytest.raises(TimeoutError):  # the caller's own timeout cancels the reserve
                    await asyncio.wait_for(state.budgets.reserve("s", 600, Decimal(0)), 0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert state.describe()["outbox"] == 1  # its release is owed
        connection = await state.connection()
        for _ in range(200):  # Redis goes on and runs the script the client gave up on: held by no one
            if await connection.client.zcard("router:reservations") == 1:
                break
            await asyncio.sleep(0.02)
        assert await connection.client.zcard("router:reservations") == 1
        await state.budgets.reserve("s", 1_000, Decimal(0))  # the owed release went first: the whole cap is free
        assert state.describe()["outbox"] == 0
    finally:
        await state.aclose()


async def test_a_reserve_script_that_arrives_after_its_release_holds_nothing(redis_server: RedisServer,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state(redis_server, limits(budgets={"session_tokens": 1_000}))
    try:
        await state.budgets.release(Reservation("s", 600, Decimal(0), "late"))  # the owed release ran first
        monkeypatch.setattr(_redis_budgets, "uuid", SimpleNamespace(uuid4=lambda: SimpleNamespace(hex="late")))
        with pytest.raises(StateUnavailable):  # what a client still waiting would be told; the real one gave up
            await state.budgets.reserve("s", 600, Decimal(0))
        monkeypatch.undo()
        await state.budgets.reserve("s", 1_000, Decimal(0))  # nothing was held
    finally:
        await state.aclose()


async def test_a_shared_probe_that_was_not_sent_goes_back_for_every_replica(redis_server: RedisServer) -> None:
    lim = limits(breaker={"failures": 1, "cooldown_s": 0.2})
    state, other = _state(redis_server, lim), _state(redis_server, lim)  # two replicas
    key, target = "p/m", Target("p", "m", timeout_s=30)
    request = ChatRequest(system="s", messages=(Message("user", "hi"),))
    try:
        await state.breakers.record_failure(key)
        await asyncio.sleep(0.3)  # half-open
        memory = build_provider("p", ProviderConfig(kind="memory"), HttpClients())
        chain = Chain({"p": memory}, retry=RetryConfig(max_retries=0), breakers=state.breakers)
        with pytest.raises(BudgetExceeded):  # the session is at its cap: the probe's call is not sent
            await chain.call([target], request, meter=Refusing())
        assert await other.breakers.allow(key, "other")  # the probe is free at once, not after hold_s
        await other.breakers.abandon(key, "other")

        hanging = Hanging()
        chain = Chain({"p": hanging}, retry=RetryConfig(max_retries=0), breakers=state.breakers)
        call = asyncio.create_task(chain.call([target], request))
        await hanging.entered.wait()
        assert not await other.breakers.allow(key, "other")  # held while in flight...
        connection = await state.connection()
        ttl = await connection.client.pttl(f"router:breaker_probe:{key}")
        assert 30_000 < ttl <= 40_000  # ...for the call's timeout_s plus a margin at most, not hold_s
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await other.breakers.allow(key, "other")  # and given back when it is cancelled
    finally:
        await state.aclose()
        await other.aclose()


async def test_a_settlement_owed_longer_than_its_done_mark_is_logged_and_counted(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    state = _state(redis_server, limits(budgets={"session_ttl_s": 0.2}, hold_s=0.2), timeout_s=0.3,
                   retry_after_s=30)
    try:
        held = await state.budgets.reserve("s", 100, Decimal("0.001"))
        redis_server.kill()
        await state.budgets.settle(held, 100, Decimal("0.001"))
        assert (state.describe()["outbox"], state.describe()["outbox_overdue"]) == (1, 0)
        await asyncio.sleep(0.3)  # longer than done:<id> lives (max(session_ttl_s, hold_s))
        with caplog.at_level(logging.CRITICAL, logger="router.state"):
            assert not await state.budgets.flush()
            assert not await state.budgets.flush()
        assert caplog.text.count("longer than its done mark lives") == 1 and held.id in caplog.text  # once
        assert (state.describe()["outbox"], state.describe()["outbox_overdue"]) == (1, 1)
        redis_server.start()
        assert await state.budgets.flush()
        assert (state.describe()["outbox"], state.describe()["outbox_overdue"]) == (0, 0)
    finally:
        await state.aclose()
