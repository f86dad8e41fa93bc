"""What the cross-process tests run in each child process (``multiprocessing``, spawn): importable
top-level functions, each with its own event loop and its own Redis state on the shared server."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from router.errors import ApprovalError, BudgetExceeded
from router.state import RedisState, StateConfig, StateLimits


def _state(url: str, limits: StateLimits) -> RedisState:
    return RedisState(StateConfig(url=url), limits)


def reserve_until_refused(url: str, limits: StateLimits, session: str, tokens: int, start: Any) -> int:
    """Reserve ``tokens`` again and again (settling each at what it reserved) until refused; the
    number granted."""

    async def run() -> int:
        state = _state(url, limits)
        granted = 0
        start.wait()
        try:
            while True:
                try:
                    held = await state.budgets.reserve(session, tokens, Decimal("0.000001"))
                except BudgetExceeded:
                    return granted
                granted += 1
                await state.budgets.settle(held, tokens, Decimal("0.000001"))
        finally:
            await state.aclose()

    return asyncio.run(run())


def claim_all(url: str, limits: StateLimits, ids: list[str], start: Any) -> list[str]:
    """Claim every id in turn; the ones this process got."""

    async def run() -> list[str]:
        state = _state(url, limits)
        got = []
        start.wait()
        try:
            for approval_id in ids:
                try:
                    await state.approvals.claim(approval_id)
                except ApprovalError:  # ApprovalRunning included: the other process has it
                    continue
                got.append(approval_id)
        finally:
            await state.aclose()
        return got

    return asyncio.run(run())


def fail(url: str, limits: StateLimits, key: str, times: int, start: Any) -> str:
    """Record ``times`` failures of ``key``; the breaker's state after."""

    async def run() -> str:
        state = _state(url, limits)
        start.wait()
        try:
            for _ in range(times):
                await state.breakers.record_failure(key)
            return await state.breakers.state(key)
        finally:
            await state.aclose()

    return asyncio.run(run())


def _child(results: Any, index: int, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        results.put((index, fn(*args), None))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put((index, None, repr(exc)))


def run_at_once(fn: Any, argument_lists: list[tuple[Any, ...]], timeout_s: float = 60.0) -> list[Any]:
    """``fn(*args, start)`` in one spawned process per ``args``, all released together by one barrier
    ``start``; their results in order."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(argument_lists)), ctx.Queue()
    children = [ctx.Process(target=_child, args=(results, i, fn, (*args, start)))
                for i, args in enumerate(argument_lists)]
    for child in children:
        child.start()
    out: dict[int, Any] = {}
    try:
        for _ in children:
            index, value, error = results.get(timeout=timeout_s)
            if error is not None:
                raise AssertionError(f"child process {index} failed: {error}")
            out[index] = value
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
    return [out[i] for i in range(len(argument_lists))]
