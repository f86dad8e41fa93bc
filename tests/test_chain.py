"""The Chain's semantics with small in-memory tiers (the Tier Protocol), and the real mini router's chain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns

import pytest

from router import Router
from router._decision import Candidate, Decision
from router._sync import SyncBridge
from router.tiers import TIERS, Chain, Query, Tier, TierKind


def _decision(tier: str, text: str, q: Query, *, escalate: bool = False) -> Decision:
    return Decision(intent=f"{tier}:{text}", out_of_scope=False, confidence=1.0, tier=tier, escalate=escalate,
                    candidates=[Candidate(f"{tier}:{text}", 1.0)], flags=q.flags, latency_us=q.latency_us)


class Recorder:
    """A Tier that settles the queries ``settles`` picks and records every call it gets.

    ``guess`` leaves a best-guess Decision on the queries it passes on (as an escalating tier does).
    """

    def __init__(self, name: str, kind: TierKind, log: list[tuple[str, str, list[str], int]],
                 settles: Callable[[str], bool], guess: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.log = log
        self.settles = settles
        self.guess = guess

    def _settle(self, method: str, queries: list[Query]) -> None:
        self.log.append((self.name, method, [q.text for q in queries], threading.get_ident()))
        for q in queries:
            assert not q.done, f"{self.name} was given a settled query: {q.text!r}"
            q.latency_us[self.name] = 1.0
            if self.settles(q.text):
                q.settle(_decision(self.name, q.text, q))
            elif self.guess:
                q.decision = _decision(self.name, q.text, q, escalate=True)

    def settle(self, queries: list[Query]) -> None:
        self._settle("settle", queries)

    async def asettle(self, queries: list[Query]) -> None:
        await asyncio.sleep(0)  # a real io tier awaits; the chain must await it, not call settle
        self._settle("asettle", queries)


def never(text: str) -> bool:
    return False


def always(text: str) -> bool:
    return True


def starts(prefix: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(prefix)


Log = list[tuple[str, str, list[str], int]]


def test_start_makes_fresh_pending_queries_with_one_start_time() -> None:
    queries = Chain.start(["a", "b", "c"])
    assert [q.text for q in queries] == ["a", "b", "c"]
    assert all(not q.done and q.decision is None and q.ids is None and q.latency_us == {} for q in queries)
    assert len({q.start_ns for q in queries}) == 1
    queries[0].latency_us["x"] = 1.0
    assert queries[1].latency_us == {}  # no shared mutable default


def test_names_and_get() -> None:
    log: Log = []
    first, second = Recorder("first", "inline", log, never), Recorder("second", "compute", log, always)
    chain = Chain([first, second])
    assert chain.names == ["first", "second"]
    assert chain.get("second") is second and chain.get("first") is first
    assert chain.get("absent") is None


def test_tiers_run_in_order_and_each_gets_only_the_pending_queries() -> None:
    log: Log = []
    chain = Chain([
        Recorder("a", "inline", log, starts("a")),
        Recorder("b", "compute", log, starts("b")),
        Recorder("c", "io", log, always),
    ])
    queries = chain.start(["a1", "b1", "c1", "a2", "c2"])
    bridge = SyncBridge()
    try:
        chain.run(queries, bridge=bridge)
    finally:
        bridge.close()
    assert [(name, method, texts) for name, method, texts, _ in log] == [
        ("a", "settle", ["a1", "b1", "c1", "a2", "c2"]),
        ("b", "settle", ["b1", "c1", "c2"]),
        ("c", "asettle", ["c1", "c2"]),  # the sync path awaits an io tier through the bridge
    ]
    assert log[0][3] == log[1][3] == threading.get_ident() != log[2][3]  # io on the bridge's loop thread
    decisions = chain.finish(queries)
    assert [d.tier for d in decisions] == ["a", "b", "c", "a", "c"]
    assert [d.intent for d in decisions] == ["a:a1", "b:b1", "c:c1", "a:a2", "c:c2"]
    # Each query went through exactly the tiers up to the one that settled it.
    assert [set(d.latency_us) - {"total"} for d in decisions] == [
        {"a"}, {"a", "b"}, {"a", "b", "c"}, {"a"}, {"a", "b", "c"}]


def test_a_tier_that_settles_everything_stops_the_chain() -> None:
    log: Log = []
    chain = Chain([Recorder("a", "inline", log, starts("x")), Recorder("b", "inline", log, always),
                   Recorder("c", "compute", log, always)])
    queries = chain.start(["x", "y"])
    chain.run(queries)
    assert [name for name, *_ in log] == ["a", "b"]
    assert [d.tier for d in chain.finish(queries)] == ["a", "b"]

    log.clear()
    asyncio.run(chain.arun(queries := chain.start(["x", "y"])))
    assert [name for name, *_ in log] == ["a", "b"]
    assert all(q.done for q in queries)


def test_an_escalated_best_guess_is_passed_on_and_replaced_by_a_later_tier() -> None:
    log: Log = []
    chain = Chain([Recorder("guess", "compute", log, starts("sure"), guess=True), Recorder("late", "io", log, always)])
    queries = chain.start(["sure", "unsure"])
    chain.run(queries, kinds=("inline", "compute"))
    assert queries[0].done and not queries[1].done
    assert queries[1].decision is not None and queries[1].decision.escalate  # the guess is kept while pending
    assert [name for name, *_ in log] == ["guess"]
    asyncio.run(chain.arun(queries, kinds={"io"}))  # the rest of the chain
    assert [(name, texts) for name, _, texts, _ in log] == [("guess", ["sure", "unsure"]), ("late", ["unsure"])]
    decisions = chain.finish(queries)
    assert [(d.tier, d.escalate) for d in decisions] == [("guess", False), ("late", False)]


def test_kinds_select_which_tiers_run() -> None:
    log: Log = []
    chain = Chain([Recorder("inline", "inline", log, never), Recorder("compute", "compute", log, never),
                   Recorder("io", "io", log, always)])
    queries = chain.start(["q"])
    chain.run(queries, kinds={"inline"})
    assert [name for name, *_ in log] == ["inline"] and not queries[0].done
    asyncio.run(chain.arun(queries, kinds=("compute", "io")))
    assert [name for name, *_ in log] == ["inline", "compute", "io"] and queries[0].done


def test_arun_runs_inline_on_the_loop_compute_on_a_thread_and_awaits_io() -> None:
    log: Log = []
    chain = Chain([Recorder("inline", "inline", log, never), Recorder("compute", "compute", log, never),
                   Recorder("io", "io", log, always)])
    queries = chain.start(["q1", "q2"])

    async def main() -> int:
        await chain.arun(queries)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    (_, m_inline, _, t_inline), (_, m_compute, _, t_compute), (_, m_io, _, t_io) = log
    assert (m_inline, m_compute, m_io) == ("settle", "settle", "asettle")
    assert t_inline == loop_thread and t_io == loop_thread
    assert t_compute != loop_thread  # asyncio.to_thread: the event loop is not blocked by the transformer
    assert [d.tier for d in chain.finish(queries)] == ["io", "io"]


def test_an_io_tier_on_the_sync_path_needs_a_bridge() -> None:
    log: Log = []
    chain = Chain([Recorder("io", "io", log, always)])
    with pytest.raises(RuntimeError, match="tier 'io' is async: the sync path runs it through a SyncBridge"):
        chain.run(chain.start(["q"]))
    assert log == []


def test_arun_runs_compute_tiers_through_the_given_runner_and_inline_off_the_loop_on_request() -> None:
    log: Log = []
    chain = Chain([Recorder("inline", "inline", log, never), Recorder("compute", "compute", log, always)])
    ran: list[tuple[str, list[str]]] = []

    async def runner(tier: Tier, queries: list[Query]) -> None:
        ran.append((tier.name, [q.text for q in queries]))
        tier.settle(queries)  # here on the loop: the runner decides where compute runs

    async def main() -> int:
        await chain.arun(chain.start(["q1", "q2"]), compute=runner, inline_off_loop=True)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert ran == [("compute", ["q1", "q2"])]
    (_, _, _, t_inline), (_, _, _, t_compute) = log
    assert t_inline != loop_thread and t_compute == loop_thread


def test_finish_sets_the_total_latency_from_the_query_start() -> None:
    log: Log = []
    chain = Chain([Recorder("a", "inline", log, always)])
    queries = [Query("q", start_ns=perf_counter_ns() - 5_000_000)]  # started 5 ms ago
    chain.run(queries)
    (decision,) = chain.finish(queries)
    assert decision is queries[0].decision
    assert decision.latency_us["a"] == 1.0
    assert decision.latency_us["total"] >= 5000.0


def test_finish_raises_when_no_tier_produced_a_decision() -> None:
    log: Log = []
    chain = Chain([Recorder("a", "inline", log, starts("yes"))])
    queries = chain.start(["yes", "nothing settles this query"])
    chain.run(queries)
    with pytest.raises(RuntimeError, match=r"no tier produced a Decision for 'nothing settles.*lacks a last tier"):
        chain.finish(queries)


def test_an_empty_batch_calls_no_tier() -> None:
    log: Log = []
    chain = Chain([Recorder("a", "inline", log, always)])
    chain.run([])
    asyncio.run(chain.arun([]))
    assert log == [] and chain.finish([]) == []


def test_the_registry_is_in_chain_order() -> None:
    assert list(TIERS) == ["rules", "static", "embedding", "llm"]


def test_mini_router_chain(mini_router: Router, mini_index: Path) -> None:
    assert mini_router.chain.names == ["rules", "static", "embedding"]  # no tier 2 configured
    assert [t.kind for t in mini_router.chain.tiers] == ["inline", "inline", "compute"]
    no_static = Router.load(mini_index, static=False)
    assert no_static.chain.names == ["rules", "embedding"]
    assert no_static.artifact.static is None
