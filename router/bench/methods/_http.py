"""Tiers 0-1 behind the HTTP service: ``router serve`` in its own process, one POST per query.

The latency is the client's round trip (httpx, keep-alive) on the same machine: what an agent
calling ``/v1/classify`` waits for, against the in-process figure of tiers 0-1.
"""

from __future__ import annotations

import time

import httpx

from router._decision import Decision
from router.bench.methods._base import MethodContext, Outcome
from router.bench.methods._tiered import outcome_of, shared_index
from router.testing._process import ServeProcess


class HTTPTiered:
    def __init__(self, ctx: MethodContext, sample: int | None) -> None:
        self.ctx = ctx
        self.sample = sample
        self.name = "tiered-router, tiers 0-1, over HTTP"
        self.notes: list[str] = []
        self.server: ServeProcess | None = None
        self.client: httpx.Client | None = None

    def build(self) -> float:
        folder, build_seconds = shared_index(self.ctx)
        started = time.perf_counter()
        self.server = ServeProcess("--index", str(folder), "--encoder-cache-size", "0",
                                   "--encoder-threads", str(self.ctx.encoder.threads)).start()
        self.client = httpx.Client(base_url=self.server.url, timeout=30.0)
        self.notes.append(f"`router serve` in a child process, started and ready in "
                          f"{time.perf_counter() - started:.1f} s; latency is the client's round trip")
        return build_seconds + time.perf_counter() - started

    def classify(self, text: str) -> Outcome:
        assert self.client is not None, "build() first"
        response = self.client.post("/v1/classify", json={"text": text})
        response.raise_for_status()
        return outcome_of(Decision.from_dict(response.json()["decisions"][0]))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()


def over_http(ctx: MethodContext, sample: int | None) -> HTTPTiered:
    return HTTPTiered(ctx, sample)
