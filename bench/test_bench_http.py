"""The HTTP service under load, as separate processes over loopback (query cache off), with the
static tier (1a) on and off: two ``router serve`` processes on the same default index.

- ``test_round_trip`` / ``test_in_process_classify``: one request at a time over the shuffled
  CLINC150 test split, so the medians give the HTTP cost (pytest-benchmark), static on and off.
- ``test_load_wrk_static_on_vs_off``: wrk (Debian package) at concurrency 64 (``BENCH_WRK_C``, a
  comma-separated list), cycling every CLINC150 test query in a seeded random order (the script
  ``bench/queries.lua`` reads them from ``bench/queries.txt``, written by ``write_queries``), so any
  prefix carries the real static share. A warm-up per server, then ABBA segments (on, off, off, on)
  of ``BENCH_WRK_SECONDS`` (10) each, so drift in the shared machine's load falls on both servers
  alike. Prints requests/s and p50/p99 per segment and per server, and the on/off ratios. No timing
  is asserted.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from router import EncoderConfig, Router
from router.testing import ServeProcess

from .conftest import shuffled_test_queries

HERE = Path(__file__).parent
SERVERS = {"static-on": "on", "static-off": "off"}
SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
WARMUP_SECONDS = 5
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_WRK_C", "64").split(",")]


def write_queries(path: Path, seed: int = 0) -> Path:
    """``bench/queries.txt``, which the wrk script ``bench/queries.lua`` reads at start-up: every CLINC150
    test query, one per line, in a seeded random order, sent in turn by each wrk thread."""
    path.write_text("".join(f"{t}\n" for t in shuffled_test_queries(seed)))
    return path


@pytest.fixture(scope="module")
def served(index_folder: Path) -> Iterator[dict[str, str]]:
    """Both servers at once: the one not under load idles."""
    with (ServeProcess("--index", str(index_folder), "--encoder-cache-size", "0", "--static", "on") as on,
          ServeProcess("--index", str(index_folder), "--encoder-cache-size", "0", "--static", "off") as off):
        urls = {"static-on": on.url, "static-off": off.url}
        for name, url in urls.items():
            tiers = httpx.get(f"{url}/readyz").json()["tiers"]
            assert ("static" in tiers) == (name == "static-on"), tiers
        yield urls


@pytest.fixture(scope="module")
def queries(clinc_queries: list[str]) -> list[str]:
    return clinc_queries[:2000]


@pytest.mark.parametrize("server", list(SERVERS))
def test_round_trip(benchmark: BenchmarkFixture, served: dict[str, str], queries: list[str], server: str) -> None:
    texts = itertools.cycle(queries)
    with httpx.Client(base_url=served[server]) as client:
        response = benchmark(lambda: client.post("/v1/classify", json={"text": next(texts)}))
    assert response.status_code == 200


@pytest.mark.parametrize("server", list(SERVERS))
def test_in_process_classify(benchmark: BenchmarkFixture, index_folder: Path, queries: list[str],
                             server: str) -> None:
    # The same default index, threads as `router serve` picks them on this machine, cache off.
    threads = min(os.cpu_count() or 1, 4)
    local = Router.load(index_folder, encoder=EncoderConfig(threads=threads, cache_size=0),
                        static=SERVERS[server] == "on")
    texts = itertools.cycle(queries)
    decision = benchmark(lambda: local.classify(next(texts)))
    assert decision.latency_us["total"] > 0


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _wrk(wrk: str, script: Path, url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"{url}/v1/classify"], capture_output=True, text=True, check=True).stdout
    found = {
        "requests": re.search(r"(\d+) requests in ([\d.]+)(\w+)", out),
        "rps": re.search(r"Requests/sec:\s+([\d.]+)", out),
        "p50": re.search(r"^\s+50%\s+(\S+)", out, re.M),
        "p99": re.search(r"^\s+99%\s+(\S+)", out, re.M),
    }
    missing = [k for k, m in found.items() if m is None]
    assert not missing, f"wrk output lacks {missing}:\n{out}"
    requests, duration, unit = found["requests"].groups()  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return {"requests": float(requests), "seconds": _ms(duration + unit) / 1e3,
            "rps": float(found["rps"].group(1)),  # type: ignore[union-attr]
            "p50_ms": _ms(found["p50"].group(1)), "p99_ms": _ms(found["p99"].group(1)),  # type: ignore[union-attr]
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "timeouts": float(timeouts.group(1)) if timeouts else 0.0}


def test_load_wrk_static_on_vs_off(served: dict[str, str], tmp_path: Path) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    script = HERE / "queries.lua"  # reads queries.txt beside it, checked here against the split
    assert (HERE / "queries.txt").read_text() == write_queries(tmp_path / "queries.txt").read_text()
    print()
    for connections in CONNECTIONS:
        for url in served.values():
            _wrk(wrk, script, url, connections, WARMUP_SECONDS)
        segments: dict[str, list[dict[str, float]]] = {name: [] for name in served}
        for name in ("static-on", "static-off", "static-off", "static-on"):
            run = _wrk(wrk, script, served[name], connections, SECONDS)
            segments[name].append(run)
            print(f"wrk c={connections:>2} {name:>10} segment: {run['rps']:8.1f} requests/s  "
                  f"p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  non-2xx {run['non2xx']:.0f}  "
                  f"timeouts {run['timeouts']:.0f}")
        total: dict[str, dict[str, float]] = {}
        for name, runs in segments.items():
            total[name] = {"rps": sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs),
                           "p50_ms": sum(r["p50_ms"] for r in runs) / len(runs),
                           "p99_ms": sum(r["p99_ms"] for r in runs) / len(runs)}
            print(f"wrk c={connections:>2} {name:>10} ({len(runs)} x {SECONDS} s): {total[name]['rps']:8.1f} "
                  f"requests/s  p50 {total[name]['p50_ms']:7.1f} ms  p99 {total[name]['p99_ms']:7.1f} ms "
                  "(p50/p99: mean of the segments)")
        on, off = total["static-on"], total["static-off"]
        print(f"wrk c={connections:>2} ratio on/off: requests/s {on['rps'] / off['rps']:.2f}  "
              f"p50 {on['p50_ms'] / off['p50_ms']:.2f}  p99 {on['p99_ms'] / off['p99_ms']:.2f}")
        assert all(r["non2xx"] == 0 for runs in segments.values() for r in runs)
