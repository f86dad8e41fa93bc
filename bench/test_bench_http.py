"""The HTTP service under load, as a separate process over loopback (query cache off).

- ``test_round_trip`` / ``test_in_process_classify``: one request at a time, the same queries,
  so the two medians give the HTTP cost (pytest-benchmark).
- ``test_load_wrk``: wrk (Debian package) at concurrency 1, 8 and 64 for 8 s each, cycling
  5,000 CLINC150 test queries (``bench/queries.lua``); prints requests/s and p50/p99.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from router import EncoderConfig, Router
from router.datasets import load_dataset
from router.paths import indexes_dir
from router.testing import ServeProcess

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def served(router: Router) -> Iterator[str]:
    with ServeProcess("--encoder-cache-size", "0") as server:
        yield server.url


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return load_dataset("clinc150").test.texts[:2000]


def test_round_trip(benchmark: BenchmarkFixture, served: str, queries: list[str]) -> None:
    texts = itertools.cycle(queries)
    with httpx.Client(base_url=served) as client:
        response = benchmark(lambda: client.post("/v1/classify", json={"text": next(texts)}))
    assert response.status_code == 200


def test_in_process_classify(benchmark: BenchmarkFixture, queries: list[str]) -> None:
    # The same default index, threads as `router serve` picks them on this machine, cache off.
    import os

    threads = min(os.cpu_count() or 1, 4)
    local = Router.load(indexes_dir() / "default", encoder=EncoderConfig(threads=threads, cache_size=0))
    texts = itertools.cycle(queries)
    decision = benchmark(lambda: local.classify(next(texts)))
    assert decision.latency_us["total"] > 0


def test_load_wrk(served: str) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    print()
    for connections in (1, 8, 64):
        out = subprocess.run([wrk, "-t1", f"-c{connections}", "-d8s", "--latency", "-s", str(HERE / "queries.lua"),
                              f"{served}/v1/classify"], capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        print(f"wrk c={connections:>2}: {rps:8.1f} requests/s  p50 {p50:>9}  p99 {p99:>9}  "
              f"non-2xx {errors.group(1) if errors else 0}")
        assert errors is None
