"""A big batch cannot monopolise the encoder: it is split into bounded jobs that take turns with
other requests' work (fair queueing per request), answers in order, and decides exactly as one
unchunked pass would.

The batcher's own tests drive it with a plain function on a real encoder thread; the service's go
through a real uvicorn server (or a real `router serve` process for the p99 check, ``-m slow``)
under a real HTTP client.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

from router import Router
from router._cli import main
from router.datasets import load_dataset
from router.service import ServeConfig
from router.service._batcher import MicroBatcher
from router.testing import ServeProcess
from tests.service.conftest import Running

Item = tuple[str, int, int]  # (request, index in it, cost)


class Encoder:
    """Stands in for the encoder thread's function: records each job; the first can be held."""

    def __init__(self, hold_first: bool = False) -> None:
        self.jobs: list[list[Item]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: Sequence[Item]) -> list[str]:
        self.jobs.append(list(items))
        self.started.set()
        self.release.wait(30)
        return [f"{name}:{index}" for name, index, _ in items]

    def job_of(self, name: str) -> list[int]:
        """The jobs that held an item of request ``name``."""
        return [n for n, job in enumerate(self.jobs) if any(item[0] == name for item in job)]


def _batcher(encoder: Encoder, executor: ThreadPoolExecutor, max_cost: int) -> MicroBatcher[Item, str]:
    return MicroBatcher(encoder, 0.0, 32, executor, cost=lambda item: item[2], max_cost=max_cost)


def _flow(name: str, n: int, cost: int = 10) -> list[Item]:
    return [(name, i, cost) for i in range(n)]


def test_a_big_batch_is_split_into_bounded_jobs_and_single_texts_go_in_the_next_one() -> None:
    async def scenario(encoder: Encoder) -> tuple[list[str], list[str], bool]:
        with ThreadPoolExecutor(1) as executor:
            batcher = _batcher(encoder, executor, max_cost=40)
            batcher.start()
            big = asyncio.ensure_future(batcher.submit_many(_flow("big", 100)))
            await asyncio.to_thread(encoder.started.wait, 30)  # its first job is on the encoder thread
            singles = [asyncio.ensure_future(batcher.submit(("single", k, 10))) for k in range(3)]
            await asyncio.sleep(0)  # queued behind the job in progress
            encoder.release.set()
            answered = list(await asyncio.gather(*singles))
            big_still_running = not big.done()
            results = await big
            await batcher.stop()
        return results, answered, big_still_running

    encoder = Encoder(hold_first=True)
    results, answered, big_still_running = asyncio.run(scenario(encoder))
    assert results == [f"big:{i}" for i in range(100)]  # every item, in its order
    assert answered == ["single:0", "single:1", "single:2"]
    assert all(len(job) * max(item[2] for item in job) <= 40 for job in encoder.jobs)
    assert len(encoder.job_of("big")) >= 25  # 100 items of cost 10 in jobs of at most 40
    # The singles waited for the job in progress only, then shared the next one; the batch went on after.
    assert encoder.job_of("single") == [1] and big_still_running


def test_a_job_costs_its_widest_item_times_its_items_and_a_wider_item_goes_alone() -> None:
    async def scenario(encoder: Encoder) -> list[str]:
        with ThreadPoolExecutor(1) as executor:
            batcher = _batcher(encoder, executor, max_cost=40)
            batcher.start()
            items = [("mixed", i, cost) for i, cost in enumerate([5, 30, 5, 5, 100, 5, 5, 5, 5, 5, 5, 5])]
            results = await batcher.submit_many(items)
            await batcher.stop()
        return results

    encoder = Encoder()
    assert asyncio.run(scenario(encoder)) == [f"mixed:{i}" for i in range(12)]
    for job in encoder.jobs:
        assert len(job) == 1 or len(job) * max(item[2] for item in job) <= 40, job
    assert [("mixed", 4, 100)] in encoder.jobs  # wider than any job: a job of its own


def test_two_big_batches_take_turns() -> None:
    async def scenario(encoder: Encoder) -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = _batcher(encoder, executor, max_cost=40)
            batcher.start()
            await asyncio.gather(batcher.submit_many(_flow("a", 40)), batcher.submit_many(_flow("b", 40)))
            await batcher.stop()

    encoder = Encoder()
    asyncio.run(scenario(encoder))
    a, b = encoder.job_of("a"), encoder.job_of("b")
    assert a == b  # every job served both: neither waited for the other to finish
    assert all(sum(item[0] == "a" for item in job) == sum(item[0] == "b" for item in job) for job in encoder.jobs)


def test_a_request_that_gives_up_leaves_the_queue() -> None:
    async def scenario(encoder: Encoder) -> str:
        with ThreadPoolExecutor(1) as executor:
            batcher = _batcher(encoder, executor, max_cost=40)
            batcher.start()
            big = asyncio.ensure_future(batcher.submit_many(_flow("big", 100)))
            await asyncio.to_thread(encoder.started.wait, 30)
            big.cancel()  # its client went away, or request_timeout_s passed
            encoder.release.set()
            answer = await batcher.submit(("single", 0, 10))
            await batcher.stop()
        return answer

    encoder = Encoder(hold_first=True)
    assert asyncio.run(scenario(encoder)) == "single:0"
    assert encoder.job_of("big") == [0]  # only the job already on the encoder thread when it gave up


def test_batch_max_tokens_has_a_bounded_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert ServeConfig().batch_max_tokens == 64
    for bad in (0, -1, 1_000_001):
        with pytest.raises(ValidationError, match="batch_max_tokens"):
            ServeConfig(batch_max_tokens=bad)
    assert main(["serve", "--batch-max-tokens", "0"]) == 1  # refused before anything is loaded
    assert "batch_max_tokens: Input should be greater than or equal to 1 (got 0)" in capsys.readouterr().err


# -- through the service ---------------------------------------------------------------------------


def _texts(n: int, offset: int = 0) -> list[str]:
    return list(load_dataset("clinc150").test.texts[offset:offset + n])


def _same(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("latency_us", "id")}  # all but the timings and the id


def test_a_max_size_batch_answers_in_order_as_one_unchunked_pass_would(start_server: Callable[..., Running],
                                                                         mini_router: Router) -> None:
    server = start_server()
    texts = _texts(mini_router.limits.max_batch)
    batcher = server.service.batcher
    before = batcher.batches
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/classify", json={"texts": texts})
        metrics = c.get("/metrics").text
    assert r.status_code == 200
    got = r.json()["decisions"]
    # Same index, same encoder, in process and in one pass: the same Decisions, in the same order.
    assert [_same(d) for d in got] == [_same(d.to_dict()) for d in mini_router.classify_many(texts)]
    encoded = sum("encode" in d["latency_us"] for d in got)
    config = server.service.config
    assert encoded > config.batch_max
    assert batcher.batches - before >= math.ceil(encoded / config.batch_max)  # in several jobs
    count = next(line for line in metrics.splitlines() if line.startswith("router_batch_size_count"))
    bound = next(line for line in metrics.splitlines() if line.startswith('router_batch_size_bucket{le="32.0"}'))
    assert count.split()[-1] == bound.split()[-1]  # none over batch_max texts


def test_single_texts_are_answered_while_a_max_size_batch_is_still_encoding(start_server: Callable[..., Running],
                                                                             mini_router: Router) -> None:
    server = start_server()
    batch = _texts(mini_router.limits.max_batch)
    singles = [t for t in _texts(200, offset=1000) if mini_router.classify(t).tier == "embedding"][:3]
    done: list[str] = []
    batcher = server.service.batcher
    before = batcher.batches

    def send_batch() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.post("/v1/classify", json={"texts": batch}).status_code == 200
        done.append("batch")

    sender = threading.Thread(target=send_batch)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while batcher.batches == before:  # until the batch's first job is on the encoder thread
            assert time.monotonic() < deadline, "the batch never reached the encoder"
            time.sleep(0.001)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for text in singles:
                r = c.post("/v1/classify", json={"text": text})
                assert r.status_code == 200
                assert _same(r.json()["decisions"][0]) == _same(mini_router.classify(text).to_dict())
                done.append("single")
    finally:
        sender.join(60)
    # Before: the batch was one encoder job, and each single waited for all of it.
    assert done == ["single", "single", "single", "batch"]


# -- the p99 check (-m slow) -------------------------------------------------------------------------

ROUNDS = 4
SINGLES_PER_ROUND = 150
SINGLE_CLIENTS = 4
BATCH_CLIENTS = 2


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _singles(url: str, texts: list[str]) -> list[float]:
    """Seconds per single-text request, SINGLE_CLIENTS at a time, each sending its next when answered."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(share: list[str]) -> None:
        with httpx.Client(timeout=120) as c:
            for text in share:
                started = time.perf_counter()
                r = c.post(url, json={"text": text})
                elapsed = time.perf_counter() - started
                assert r.status_code == 200, r.text
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(texts[k::SINGLE_CLIENTS],)) for k in range(SINGLE_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(latencies) == len(texts)
    return latencies


# In processes of their own, so that reading their answers takes nothing from the measuring client.
_BATCH_CLIENT = """
import pathlib, sys, httpx
url, body, stop = sys.argv[1], pathlib.Path(sys.argv[2]).read_bytes(), pathlib.Path(sys.argv[3])
with httpx.Client(timeout=300, headers={"content-type": "application/json"}) as c:
    while not stop.exists():
        print(c.post(url, content=body).status_code, flush=True)
"""


class BatchStream:
    """BATCH_CLIENTS clients, each sending a max-size batch as soon as its previous one is answered."""

    def __init__(self, url: str, texts: list[str], folder: Path) -> None:
        self.body = folder / "batch.json"
        self.body.write_bytes(orjson.dumps({"texts": texts}))
        self.stop = folder / "stop"
        self.url = url
        self.statuses: list[str] = []
        self.clients: list[subprocess.Popen[str]] = []

    def __enter__(self) -> BatchStream:
        self.stop.unlink(missing_ok=True)
        self.clients = [subprocess.Popen([sys.executable, "-c", _BATCH_CLIENT, self.url, str(self.body),
                                          str(self.stop)], stdout=subprocess.PIPE, text=True)
                        for _ in range(BATCH_CLIENTS)]
        for client in self.clients:  # each stream is under way: its first batch has been answered
            assert client.stdout is not None
            self.statuses.append(client.stdout.readline().strip())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.touch()  # each client stops after the batch it is sending, before the next round
        for client in self.clients:
            out, _ = client.communicate(timeout=600)
            self.statuses += out.split()


@pytest.mark.slow
def test_single_text_p99_under_a_max_batch_stream_stays_within_3x(mini_index: Path, mini_router: Router,
                                                                   tmp_path: Path) -> None:
    texts = _texts(3000)
    batch = _texts(mini_router.limits.max_batch, offset=3000)
    # A long request timeout: the batches get their fair share of the encoder, no more, and are slow.
    with ServeProcess("--index", str(mini_index), "--request-timeout-s", "300") as server:
        assert server.proc is not None
        url = f"{server.url}/v1/classify"
        _singles(url, texts[:100])  # warm-up
        alone: list[float] = []
        beside: list[float] = []
        rss = []
        # Alternating rounds, so both sides see the same machine (other processes' load drifts).
        for n in range(ROUNDS):
            share = texts[100 + 2 * n * SINGLES_PER_ROUND:][:2 * SINGLES_PER_ROUND]
            alone += _singles(url, share[:SINGLES_PER_ROUND])
            with BatchStream(url, batch, tmp_path) as stream:
                beside += _singles(url, share[SINGLES_PER_ROUND:])
                rss.append(_rss_mib(server.proc.pid))
            assert set(stream.statuses) == {"200"}, stream.statuses
        p99_alone, p99_beside = _percentile(alone, 0.99), _percentile(beside, 0.99)
        print(f"\nsingle-text p50 {_percentile(alone, 0.5) * 1e3:.1f} -> {_percentile(beside, 0.5) * 1e3:.1f} ms, "
              f"p99 {p99_alone * 1e3:.1f} -> {p99_beside * 1e3:.1f} ms (x{p99_beside / p99_alone:.2f}) "
              f"beside {BATCH_CLIENTS} streams of {len(batch)}-text batches; RSS {max(rss):.0f} MiB")
        assert p99_beside <= 3 * p99_alone
