"""The service layer: a Router behind micro-batching, readiness, and drain state. No HTTP here.

The service classifies only through the Router's own ``aclassify`` and ``aclassify_many``; it
plugs its micro-batcher in as the Router's compute runner, so that the compute tiers (the
encoder) run on one thread, in fair jobs shared between requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import Any

from router._decision import Decision
from router._router import Router
from router.service._batcher import MicroBatcher
from router.service._config import ServeConfig
from router.service._metrics import Metrics
from router.tiers import Query, Tier

log = logging.getLogger("router.service")

Job = tuple[Tier, Query]  # a compute tier and one of its pending queries


def _encoder_thread() -> None:
    # FAISS searches on the encoder thread run on that thread alone (OpenMP's thread count is per
    # calling thread). A batch split into small jobs searches once per job, and each search would
    # gather an OpenMP team that, next to ONNX Runtime's threads on a busy machine, waits for a
    # descheduled member: with 64-token jobs that raised a batch's CPU per text from 5.6 to 8.7 ms.
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a core dependency
        return
    faiss.omp_set_num_threads(1)


def _tokens(job: Job) -> int:
    """What a query costs the encoder: its tokens (the static tier has tokenised it), else its
    characters plus the two special tokens, a bound on its tokens."""
    query = job[1]
    return len(query.ids) if query.ids is not None else len(query.text) + 2


def _settle(jobs: Sequence[Job]) -> list[None]:
    """One encoder job: each compute tier settles its own queries (consecutive: a request's come together)."""
    for tier, group in groupby(jobs, key=lambda job: job[0]):
        tier.settle([query for _, query in group])
    return [None] * len(jobs)


class ClassifierService:
    def __init__(self, router: Router, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        # One thread runs the encoder: ONNX Runtime is given its own threads, and batches queue here.
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder", initializer=_encoder_thread)
        # Only queries the inline tiers (rules, static) left pending are micro-batched to the encoder,
        # in jobs of at most batch_max texts and batch_max_tokens, shared fairly between requests.
        self.batcher: MicroBatcher[Job, None] = MicroBatcher(
            _settle, config.batch_window_ms / 1000.0, config.batch_max, self._encoder,
            expected=lambda: self.in_flight, observe=self.metrics.batch_size.observe,
            cost=_tokens, max_cost=config.batch_max_tokens)
        self.router = router.with_compute(self._batched)
        self.in_flight = 0  # requests inside the server under max_in_flight, kept by the Guard middleware
        self.dispatch_in_flight = 0  # the dispatcher's, under max_dispatch_in_flight (probes are in neither)
        self.encoder_warm = False
        self.draining = False
        # The Guard's deadline for a path, with the limits it comes from, where a route needs its own
        # (the dispatch routes set it: dispatch/_serving.py); None: request_timeout_s.
        self.deadline_for: Callable[[str], tuple[float, str] | None] = lambda path: None

    async def _batched(self, tier: Tier, queries: list[Query]) -> None:
        # Not one encoder job for a batch: bounded ones that take turns with other requests'.
        await self.batcher.submit_many([(tier, q) for q in queries])

    async def _on_encoder_thread(self, tier: Tier, queries: list[Query]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._encoder, tier.settle, queries)

    async def start(self) -> None:
        # Tier 2's pooled connections live on this loop, from here to stop(). The warm-up runs on the
        # encoder thread but outside the batcher (and its metrics); it also warms tier 2 (loads its model).
        await self.router.aopen()
        await self.router.with_compute(self._on_encoder_thread).awarm()
        self.encoder_warm = True
        self.batcher.start()

    async def stop(self) -> None:
        self.draining = True
        await self.batcher.stop()
        self._encoder.shutdown(wait=True)
        await self.router.aclose()

    # -- readiness ---------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        escalator = self.router.escalator
        llm: dict[str, Any] = {"configured": escalator is not None}
        ok = self.encoder_warm and not self.draining
        if escalator is not None:
            llm["status"] = escalator.status
            if escalator.enabled:
                llm["reachable"] = await escalator.ping()
                ok = ok and any(llm["reachable"].values())
        return ok, {"index": self.router.artifact.manifest.name, "encoder_warm": self.encoder_warm,
                    "draining": self.draining, "tiers": self.router.chain.names, "llm": llm}

    # -- classification ----------------------------------------------------------------------------
    # A text is checked (Router) before it joins a micro-batch: a bad one fails its own request, not its batch.
    async def classify_one(self, text: str) -> Decision:
        decision = await self.router.aclassify(text)
        self.metrics.record([decision])
        return decision

    async def classify_many(self, texts: Sequence[str]) -> list[Decision]:
        decisions = await self.router.aclassify_many(texts)
        self.metrics.record(decisions)
        return decisions
