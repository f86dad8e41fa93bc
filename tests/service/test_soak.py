"""10,000 mixed requests against a real `router serve` process (``-m slow``).

Valid single and batch requests, malformed JSON, oversize bodies, invalid fields, and slow
clients (a body sent in pieces with pauses, or abandoned half-way). Afterwards the server is
healthy, its memory flat, and every request got exactly one answer: its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.datasets import load_dataset
from router.testing import ServeProcess

pytestmark = pytest.mark.slow

N = 10_000
CONCURRENCY = 32


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _slow_client(port: int, body: bytes, abandon: bool) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    if abandon:
        writer.close()
        return "abandoned"
    writer.write(body[len(body) // 2 :])
    await writer.drain()
    status = (await reader.readline()).split()[1].decode()
    writer.close()
    return status


async def _drive(port: int, texts: list[str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/classify"
    rng = random.Random(7)
    outcome: dict[str, Any] = {"sent": 0, "answers": {}, "statuses": {}, "mismatched": 0}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(N):
        queue.put_nowait(i)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(i: int) -> None:
            kind = rng.random()
            sid = f"req-{i}"
            if kind < 0.65:
                r = await client.post(url, json={"text": texts[i % len(texts)], "session_id": sid})
                status = str(r.status_code)
                if r.status_code == 200:
                    got = r.json()["session_id"]
                    outcome["answers"][sid] = outcome["answers"].get(sid, 0) + 1
                    outcome["mismatched"] += got != sid
            elif kind < 0.70:
                batch = [texts[(i + k) % len(texts)] for k in range(8)]
                r = await client.post(url, json={"texts": batch, "session_id": sid})
                status = str(r.status_code)
                if r.status_code == 200:
                    outcome["answers"][sid] = outcome["answers"].get(sid, 0) + 1
                    outcome["mismatched"] += len(r.json()["decisions"]) != 8 or r.json()["session_id"] != sid
            elif kind < 0.80:
                r = await client.post(url, content=b'{"text": "broken', headers={"content-type": "application/json"})
                status = str(r.status_code)
            elif kind < 0.85:
                r = await client.post(url, content=orjson.dumps({"text": "x" * 2_000_000}),
                                      headers={"content-type": "application/json"})
                status = str(r.status_code)
            elif kind < 0.90:
                r = await client.post(url, json={"text": "x" * 2500})
                status = str(r.status_code)
            elif kind < 0.95:
                r = await client.post(url, json={"txt": "hello", "top_k": -1})
                status = str(r.status_code)
            else:
                status = await _slow_client(port, orjson.dumps({"text": texts[i % len(texts)]}), abandon=kind > 0.975)
            outcome["statuses"][status] = outcome["statuses"].get(status, 0) + 1
            outcome["sent"] += 1

        async def worker() -> None:
            while not queue.empty():
                await one(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcome


def test_ten_thousand_mixed_requests(mini_index: Path) -> None:
    with ServeProcess("--index", str(mini_index)) as server:
        assert server.proc is not None
        pid = server.proc.pid
        texts = load_dataset("clinc150").test.texts
        asyncio.run(_drive(server.port, texts))  # warm-up: fills the query cache and allocator pools
        before = _rss_kib(pid)
        started = time.monotonic()
        outcome = asyncio.run(_drive(server.port, texts))
        seconds = time.monotonic() - started
        after = _rss_kib(pid)
        print(f"\nsoak: {N} requests in {seconds:.1f} s; statuses {outcome['statuses']}; "
              f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB")
        assert outcome["sent"] == N
        assert outcome["mismatched"] == 0 and set(outcome["answers"].values()) == {1}  # each answered once, its own
        assert set(outcome["statuses"]) <= {"200", "413", "422", "abandoned"}, outcome["statuses"]
        assert after - before < 30 * 1024, f"RSS grew {before} -> {after} KiB"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert server.proc.poll() is None
