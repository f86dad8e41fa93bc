"""Many replicas, one truth: real `router serve` processes sharing one real Redis (``-m redis``).

Two processes, A and B, serve the same skills (``replica_skills.py``) against one loopback provider,
``FakeOpenAI`` (every stage on it, with a price), their budgets, approvals and breakers in one Redis:
A is given it by ``--state``, B by its model-routing file's ``state.url``. Each writes its own JSONL
trace. What is claimed, from outside the processes:

- one session's dispatches spread over A and B stop at the session token cap where one process
  alone stops (same calls, same tokens), and a refused dispatch never reaches the provider (its
  request count); concurrent dispatches of one session on both never overshoot the cap;
- an approval made on A is approved on B; two approves at once, one on each, run the handler once;
- a breaker opened by failures seen on A is open on B: B's dispatch is refused without a request;
- the same between the two workers of one ``router serve --workers 2 --state redis://...`` (approvals,
  steps; both append to one trace file, which the ledger equals);
- Redis killed mid-run: dispatches fail closed (503 StateUnavailable, Retry-After) and none reaches
  the provider; classify still answers 200; dispatch resumes once Redis is back; and the ledger in
  Redis equals the sum of both traces, so nothing reserved before the outage was lost or charged twice;
- the soak (``-m "redis and slow"``): 10,000 dispatches over A and B, 16 at a time, with 10% provider
  faults; the totals in Redis equal the sum of the trace records exactly (tokens, and cost to the
  picodollar).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.dispatch import Dispatcher, model_routing_from_dict, read_jsonl
from router.dispatch._trace import session_totals
from router.errors import BudgetExceeded
from router.state import StateConfig, build_state
from router.testing import FakeOpenAI, RedisServer, ServeProcess
from tests.state.replica_skills import registry

pytestmark = pytest.mark.redis

SKILLS = "tests.state.replica_skills:registry"
STAGES = ("routing", "extraction", "formatting", "diagnostic")
KEYS = {"OPENAI_API_KEY": "sk-test-replicas", "ANTHROPIC_API_KEY": "sk-ant-unused", "GEMINI_API_KEY": "AIza-unused",
        "ROUTER_TEST_APPROVER_KEY": "approver-secret-1234"}
APPROVER = {"Authorization": f"Bearer {KEYS['ROUTER_TEST_APPROVER_KEY']}"}
NANO, PROBE_MODEL = "gpt-5.4-nano", "gpt-5.4"  # `probe` has its own model, so its own breaker
TEXT = "what is my checking balance"
# The token-cap test: a call reserves its worst case (1,300 tokens: the request's bytes and max_tokens) and is
# billed 640, so a session gets 8 calls under 6,000 (used + 1,300 must fit), well before its 25 steps.
SESSION_TOKENS = 6000
USAGE = {"input": 600, "output": 40}


def _ref(model: str) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "timeout_s": 5, "max_tokens": 64}


def routing(fake: FakeOpenAI, trace: Path | None, **extra: Any) -> dict[str, Any]:
    """Every stage on the fake, no fallbacks; ``trace`` None: in memory."""
    data: dict[str, Any] = {
        "providers": {"openai": {"kind": "openai", "base_url": fake.url, "api_key_env": "OPENAI_API_KEY"}},
        "defaults": {stage: _ref(NANO) for stage in STAGES},
        "fallbacks": {stage: [] for stage in STAGES},
        "overrides": {"probe": {"extraction": _ref(PROBE_MODEL)}},
        "retry": {"max_retries": 0},
        "breaker": {"failures": 5, "window_s": 600, "cooldown_s": 600},
        "budgets": {"session_tokens": SESSION_TOKENS},
        "trace": {"sink": "jsonl", "path": str(trace)} if trace is not None else {"sink": "memory"},
    }
    data.update(extra)
    return data


@dataclass
class Replicas:
    fake: FakeOpenAI
    a: ServeProcess
    b: ServeProcess
    traces: tuple[Path, Path]
    redis_url: str
    marker: Path

    def client(self, server: ServeProcess) -> httpx.Client:
        return httpx.Client(base_url=server.url, timeout=60)

    def stop(self) -> None:
        for server in (self.a, self.b):
            server.stop()

    def trace_totals(self) -> dict[str, dict[str, Any]]:
        return session_totals(r for path in self.traces if path.exists() for r in read_jsonl(path))


def start_replicas(folder: Path, index: Path, redis_url: str, fake: FakeOpenAI, **extra: Any) -> Replicas:
    traces = (folder / "trace-a.jsonl", folder / "trace-b.jsonl")
    file_a, file_b = folder / "routing-a.yaml", folder / "routing-b.yaml"
    file_a.write_text(yaml.safe_dump(routing(fake, traces[0], **extra)))
    file_b.write_text(yaml.safe_dump(routing(fake, traces[1], **{**extra, "state": {**extra.get("state", {}),
                                                                                "url": redis_url}})))
    common = ("--index", str(index), "--encoder-threads", "1", "--skills", SKILLS,
              "--approver-key-env", "ROUTER_TEST_APPROVER_KEY")
    a = ServeProcess(*common, "--model-routing", str(file_a), "--state", redis_url)
    b = ServeProcess(*common, "--model-routing", str(file_b))
    replicas = Replicas(fake, a, b, traces, redis_url, folder / "pay.marker")
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServeProcess.start, (a, b)))
    except BaseException:
        replicas.stop()
        raise
    return replicas


@pytest.fixture(scope="module")
def keys() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in KEYS.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def shared(keys: None, mini_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """One Redis, one fake provider, A and B: for the tests that do not stop Redis (each its own sessions)."""
    with RedisServer() as redis, FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]) as fake:
        fake.fixed_usage = USAGE
        replicas = start_replicas(tmp_path_factory.mktemp("replicas"), mini_index, redis.url, fake)
        yield replicas
        replicas.stop()


def dispatch(client: httpx.Client, session: str, skill: str = "balance", text: str = TEXT) -> httpx.Response:
    return client.post("/v1/dispatch", json={"session_id": session, "skill": skill, "text": text})


def pay(client: httpx.Client, session: str, marker: Path, seconds: float = 0.0) -> str:
    r = client.post("/v1/dispatch", json={"session_id": session, "skill": "pay",
                                          "params": {"amount": 5, "marker": str(marker), "seconds": seconds}})
    assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
    return str(r.json()["approval_id"])


def redis_totals(url: str, sessions: set[str]) -> dict[str, tuple[int, Decimal, int]]:
    """(tokens, cost, calls) per session as Redis holds them, read through the state's own API."""
    async def read() -> dict[str, tuple[int, Decimal, int]]:
        state = build_state(StateConfig(url=url))
        try:
            out = {}
            for session in sessions:
                t = await state.budgets.totals(session)
                out[session] = (t.tokens, t.cost_usd, t.calls)
            return out
        finally:
            await state.aclose()
    return asyncio.run(read())


def ledger_matches_traces(replicas: Replicas) -> tuple[bool, str]:
    traced = replicas.trace_totals()
    held = redis_totals(replicas.redis_url, set(traced))
    wrong = {s: (held[s], (t["tokens"], t["cost_usd"], t["calls"])) for s, t in traced.items()
             if held[s] != (t["tokens"], t["cost_usd"], t["calls"])}
    return not wrong, f"{len(wrong)} of {len(traced)} sessions differ (redis, traces): {list(wrong.items())[:5]}"


def until(check: Callable[[], bool], within_s: float = 60.0) -> None:
    """A bound against hanging while the servers get somewhere, not a timing assertion."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


# -- budgets ----------------------------------------------------------------------------------------------
def test_the_session_token_cap_stops_a_spread_session_where_one_process_stops(shared: Replicas) -> None:
    async def one_process() -> tuple[int, int]:
        config = model_routing_from_dict(routing(shared.fake, None))  # the memory state: today's one process
        ok = 0
        async with Dispatcher(config, registry()) as alone:
            for _ in range(20):
                try:
                    await alone.adispatch("alone", "balance", text=TEXT)
                    ok += 1
                except BudgetExceeded as exc:
                    assert exc.budget == "session_tokens"
                    break
            return ok, (await alone.asession_totals("alone")).tokens

    alone_ok, alone_tokens = asyncio.run(one_process())
    assert 2 <= alone_ok < 20  # the cap stopped it, after some calls

    before = len(shared.fake.requests)
    ok, refused = 0, 0
    with shared.client(shared.a) as a, shared.client(shared.b) as b:
        for i in range(alone_ok + 4):  # alternately on A and B
            r = dispatch(a if i % 2 == 0 else b, "spread")
            if r.status_code == 200:
                ok += 1
            else:
                assert r.status_code == 429 and r.json()["budget"] == "session_tokens", r.text
                refused += 1
        session = b.get("/v1/sessions/spread").json()  # readable from any replica
        assert a.get("/v1/sessions/spread").json() == session
    assert (ok, session["tokens"]) == (alone_ok, alone_tokens)  # where one process stops
    assert ok + refused == alone_ok + 4 and refused == 4
    assert len(shared.fake.requests) - before == ok  # no refused dispatch reached the provider
    assert session["tokens"] <= SESSION_TOKENS


def test_concurrent_dispatches_of_one_session_on_both_replicas_never_overshoot_the_cap(shared: Replicas) -> None:
    before = len(shared.fake.requests)
    with shared.client(shared.a) as a, shared.client(shared.b) as b, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: dispatch(a if i % 2 else b, "burst"), range(32)))
        tokens = a.get("/v1/sessions/burst").json()["tokens"]
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {200, 429} and statuses[429] > 0, statuses
    assert tokens <= SESSION_TOKENS
    assert len(shared.fake.requests) - before == statuses[200]  # the refused ones were never sent


# -- approvals --------------------------------------------------------------------------------------------
def test_an_approval_made_on_a_is_approved_on_b(shared: Replicas, tmp_path: Path) -> None:
    marker = tmp_path / "pay.marker"
    with shared.client(shared.a) as a, shared.client(shared.b) as b:
        approval = pay(a, "approver-test", marker)
        done = b.post(f"/v1/approvals/{approval}/approve", headers=APPROVER)
        assert done.status_code == 200 and done.json()["result"] == {"sent": 5.0}, done.text
        assert a.post(f"/v1/approvals/{approval}/approve", headers=APPROVER).status_code == 404  # used, on A too
    assert marker.read_text().splitlines() == [f"start {approval}", f"done {approval}"]


def test_two_approves_at_once_one_on_each_replica_run_the_skill_once(shared: Replicas, tmp_path: Path) -> None:
    marker = tmp_path / "pay.marker"
    with shared.client(shared.a) as a, shared.client(shared.b) as b, ThreadPoolExecutor(2) as pool:
        approvals = [pay(a if i % 2 else b, f"race-{i}", marker, seconds=0.3) for i in range(6)]
        for approval in approvals:
            go = threading.Barrier(2)

            def approve(client: httpx.Client, approval: str = approval, go: threading.Barrier = go) -> int:
                go.wait()
                return client.post(f"/v1/approvals/{approval}/approve", headers=APPROVER).status_code

            statuses = sorted(pool.map(approve, (a, b)))
            assert statuses[0] == 200 and statuses[1] in (404, 409), statuses  # one ran; the other was refused
    lines = marker.read_text().splitlines()
    for approval in approvals:
        assert lines.count(f"start {approval}") == 1 and lines.count(f"done {approval}") == 1


# -- breakers ---------------------------------------------------------------------------------------------
def test_a_breaker_opened_by_failures_on_a_is_open_on_b(shared: Replicas) -> None:
    shared.fake.always("500")
    try:
        with shared.client(shared.a) as a, shared.client(shared.b) as b:
            for i in range(5):  # breaker.failures: 5 failed attempts open it
                r = dispatch(a, f"breaker-{i}", skill="probe")
                assert r.status_code == 502 and "http_500" in r.json()["detail"], r.text
            sent = len(shared.fake.requests)
            r = dispatch(b, "breaker-b", skill="probe")
            assert r.status_code == 502 and "circuit_open" in r.json()["detail"], r.text
            assert len(shared.fake.requests) == sent  # B did not call the provider: A's failures opened it
            shared.fake.always(None)
            assert dispatch(b, "breaker-b", skill="balance").status_code == 200  # per provider/model: nano is closed
    finally:
        shared.fake.always(None)


# -- Redis down, and back -----------------------------------------------------------------------------------
def test_redis_killed_mid_run_fails_closed_then_resumes_and_the_ledger_equals_the_traces(
        keys: None, redis_server: RedisServer, mini_index: Path, tmp_path: Path) -> None:
    with FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]) as fake:
        # A few sessions dispatch many times: no step or token cap gets in the way here.
        budgets = {"session_steps": 1_000_000, "session_tokens": 1_000_000_000}
        replicas = start_replicas(tmp_path, mini_index, redis_server.url, fake, budgets=budgets)
        try:
            _kill_and_restart_redis(replicas, redis_server)
            # Settlements owed from the outage reach Redis once it is back, while the servers run on.
            until(lambda: ledger_matches_traces(replicas)[0], within_s=30)
        finally:
            replicas.stop()
        ok, why = ledger_matches_traces(replicas)  # and stopping the servers charged nothing twice
        assert ok, why
        assert sum(t["tokens"] for t in replicas.trace_totals().values()) > 0


def _kill_and_restart_redis(replicas: Replicas, redis: RedisServer) -> None:
    fake = replicas.fake
    stop = threading.Event()
    load: Counter[int] = Counter()
    lock = threading.Lock()

    def keep_dispatching(n: int) -> None:
        with replicas.client(replicas.a if n % 2 else replicas.b) as client:
            i = 0
            while not stop.is_set():
                status = dispatch(client, f"load-{n}-{i % 5}").status_code
                with lock:
                    load[status] += 1
                i += 1

    with replicas.client(replicas.a) as a, replicas.client(replicas.b) as b, ThreadPoolExecutor(4) as pool:
        for i in range(6):
            assert dispatch(a if i % 2 else b, f"before-{i}").status_code == 200
        running = [pool.submit(keep_dispatching, n) for n in range(4)]
        until(lambda: load[200] >= 20)

        redis.kill()  # mid-run: dispatches are between their reservation and their settlement
        for client in (a, b):
            until(lambda client=client: dispatch(client, "probe-down").status_code == 503)
        sent = len(fake.requests)
        for i in range(10):
            r = dispatch(a if i % 2 else b, f"down-{i}")
            assert r.status_code == 503 and r.json()["error"] == "StateUnavailable", r.text
            assert r.headers["retry-after"]
        for client in (a, b):
            assert client.post("/v1/classify", json={"text": TEXT}).status_code == 200  # classify keeps answering
            ready = client.get("/readyz")  # reports the state, and stays ready: classify is still served
            assert ready.status_code == 200 and ready.json()["state"]["backend"] == "redis"
            assert ready.json()["state"]["reachable"] is False
        assert len(fake.requests) == sent  # fail closed: nothing reached the provider while Redis was down

        redis.start()  # the same port and data (its append-only file)
        for client in (a, b):
            until(lambda client=client: dispatch(client, "after").status_code == 200)
        stop.set()
        for future in running:
            future.result()
    assert set(load) <= {200, 503} and load[503] > 0, load  # the load ran into the outage, and only got 503


# -- --workers 2 --------------------------------------------------------------------------------------------
def test_two_workers_of_one_server_share_approvals_and_budgets_through_redis(
        keys: None, redis_server: RedisServer, mini_index: Path, tmp_path: Path) -> None:
    """The same claims hold between the workers of one `router serve --workers 2` (one port, one trace file):
    an approval made on one worker is approved on the other, and a session's steps are counted once."""
    marker = tmp_path / "pay.marker"
    with FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]) as fake:
        path = tmp_path / "routing.yaml"
        path.write_text(yaml.safe_dump(routing(fake, tmp_path / "trace.jsonl", budgets={"session_steps": 3})))
        with ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--skills", SKILLS,
                          "--approver-key-env", "ROUTER_TEST_APPROVER_KEY", "--model-routing", str(path),
                          "--workers", "2", "--state", redis_server.url) as server:
            by_pid: dict[int, str] = {}  # worker pid -> an approval made on it
            deadline = time.monotonic() + 120
            while len(by_pid) < 2:
                assert time.monotonic() < deadline, f"only workers {set(by_pid)} answered"
                with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
                    pid = c.get("/readyz").json()["pid"]  # the worker holding this connection
                    if pid not in by_pid:
                        by_pid[pid] = pay(c, f"worker-{pid}", marker)
            (pid_1, made_on_1), (pid_2, made_on_2) = by_pid.items()
            approved: set[str] = set()
            while len(approved) < 2:  # each approval approved on the worker that did not make it
                assert time.monotonic() < deadline, "no connection reached the other worker"
                with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
                    pid = c.get("/readyz").json()["pid"]
                    approval = made_on_2 if pid == pid_1 else made_on_1
                    if approval not in approved:
                        r = c.post(f"/v1/approvals/{approval}/approve", headers=APPROVER)
                        assert r.status_code == 200, r.text
                        approved.add(approval)
            with httpx.Client(base_url=server.url, timeout=60) as c:  # a session's steps, over both workers
                statuses = [c.post("/v1/dispatch", json={"session_id": "steps", "skill": "pay", "params": {
                    "amount": 1, "marker": str(marker)}}, headers={"Connection": "close"}).status_code
                    for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429]  # session_steps: 3, whichever worker counted them
            with httpx.Client(base_url=server.url, timeout=60) as c:  # both workers append to the one trace file
                for i in range(12):
                    r = c.post("/v1/dispatch", json={"session_id": f"ledger-{i % 4}", "skill": "balance", "text": TEXT},
                               headers={"Connection": "close"})
                    assert r.status_code == 200, r.text
    traced = session_totals(read_jsonl(tmp_path / "trace.jsonl"))
    held = redis_totals(redis_server.url, set(traced))
    assert {s: held[s] for s in traced} == {s: (t["tokens"], t["cost_usd"], t["calls"]) for s, t in traced.items()}
    assert sum(t["calls"] for t in traced.values()) == 12
    lines = marker.read_text().splitlines()
    assert sorted(lines) == sorted(f"{kind} {a}" for a in (made_on_1, made_on_2) for kind in ("start", "done"))


# -- the soak -----------------------------------------------------------------------------------------------
SOAK_DISPATCHES = 10_000
SOAK_CONCURRENCY = 16
SOAK_SESSIONS = 1_000


@pytest.mark.slow
def test_soak_10000_dispatches_over_two_replicas_with_provider_faults_ledger_equals_traces(
        keys: None, redis_server: RedisServer, mini_index: Path, tmp_path: Path) -> None:
    fake = FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"], fault_rate=0.1, seed=18, slow_s=0.2, retry_after="0")
    soak = {"retry": {"max_retries": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.05},
            # 10% faults would keep a 5-in-10-minutes breaker open: here it only opens on a burst.
            "breaker": {"failures": 200, "window_s": 1, "cooldown_s": 0.5}, "budgets": {},
            "state": {"timeout_s": 2.0}}  # the test machine's cores are shared: a slow command is not an outage
    with fake:
        replicas = start_replicas(tmp_path, mini_index, redis_server.url, fake, **soak)
        try:
            started = time.perf_counter()
            statuses = asyncio.run(_soak(replicas))
            wall = time.perf_counter() - started
        finally:
            replicas.stop()
    print(f"\nsoak: {SOAK_DISPATCHES} dispatches over 2 replicas, {SOAK_CONCURRENCY} at a time, 10% faults: "
          f"{wall:.1f} s, {SOAK_DISPATCHES / wall:.0f} dispatches/s; statuses {dict(statuses)}; "
          f"faults served {fake.faults_served}")
    assert sum(statuses.values()) == SOAK_DISPATCHES
    # Served, or every attempt failed (502); a Redis command slower than state.timeout_s on a loaded machine is
    # refused (503 StateUnavailable, fail closed). Whatever the outcome, the ledger and the traces agree below.
    assert set(statuses) <= {200, "502 FallbacksExhausted", "503 StateUnavailable"}, statuses
    assert statuses[200] > SOAK_DISPATCHES * 0.8
    ok, why = ledger_matches_traces(replicas)
    assert ok, why
    traced = replicas.trace_totals()
    assert len(traced) == SOAK_SESSIONS
    held = redis_totals(replicas.redis_url, set(traced))
    assert sum(t[0] for t in held.values()) == sum(t["tokens"] for t in traced.values()) > 0


async def _soak(replicas: Replicas) -> Counter[int | str]:
    # Each session's dispatches spread over both replicas, the sessions interleaved.
    work = [(replicas.a.url if i % 2 else replicas.b.url, f"soak-{i % SOAK_SESSIONS}") for i in range(SOAK_DISPATCHES)]
    random.Random(18).shuffle(work)
    statuses: Counter[int | str] = Counter()
    limits = httpx.Limits(max_connections=SOAK_CONCURRENCY, max_keepalive_connections=SOAK_CONCURRENCY)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        queue = iter(work)

        async def worker() -> None:
            for url, session in queue:
                r = await client.post(f"{url}/v1/dispatch", json={"session_id": session, "skill": "balance",
                                                                   "text": TEXT})
                statuses[r.status_code if r.status_code == 200 else f"{r.status_code} {r.json().get('error')}"] += 1

        await asyncio.gather(*(worker() for _ in range(SOAK_CONCURRENCY)))
    return statuses

