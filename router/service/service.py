"""The service layer: a Router behind micro-batching, readiness, and drain state. No HTTP here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router.decision import Decision
from router.router import Router
from router.service.batcher import MicroBatcher
from router.service.config import ServeConfig
from router.service.metrics import Metrics
from router.tiers import COMPUTE, INLINE, IO, Query
from router.validation import check_batch, check_text

log = logging.getLogger("router.service")


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


def _tokens(query: Query) -> int:
    """What a query costs the encoder: its tokens (the static tier has tokenised it), else its
    characters plus the two special tokens, a bound on its tokens."""
    return len(query.ids) if query.ids is not None else len(query.text) + 2


class ClassifierService:
    def __init__(self, router: Router, config: ServeConfig) -> None:
        self.router = router
        self.chain = router.chain
        self.config = config
        self.metrics = Metrics()
        # One thread runs the encoder: ONNX Runtime is given its own threads, and batches queue here.
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder", initializer=_encoder_thread)
        # Only queries the inline tiers (rules, static) left pending are micro-batched to the encoder,
        # in jobs of at most batch_max texts and batch_max_tokens, shared fairly between requests.
        self.batcher: MicroBatcher[Query, None] = MicroBatcher(
            self._compute, config.batch_window_ms / 1000.0, config.batch_max, self._encoder,
            expected=lambda: self.in_flight, observe=self.metrics.batch_size.observe,
            cost=_tokens, max_cost=config.batch_max_tokens)
        self.in_flight = 0  # requests inside the server under max_in_flight, kept by the Guard middleware
        self.dispatch_in_flight = 0  # the dispatcher's, under max_dispatch_in_flight (probes are in neither)
        self.encoder_warm = False
        self.draining = False
        # The Guard's deadline for a path, with the limits it comes from, where a route needs its own
        # (the dispatch routes set it: dispatch_routes.py); None: request_timeout_s.
        self.deadline_for: Callable[[str], tuple[float, str] | None] = lambda path: None

    def _compute(self, queries: Sequence[Query]) -> list[None]:
        self.chain.run(list(queries), kinds=COMPUTE)
        return [None] * len(queries)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._encoder, self._compute, self.chain.start(["warm up the encoder"]))
        self.encoder_warm = True
        if self.router.tier2 is not None:
            await asyncio.to_thread(self.router.tier2.warm)
        self.batcher.start()

    async def stop(self) -> None:
        self.draining = True
        await self.batcher.stop()
        self._encoder.shutdown(wait=True)
        await asyncio.to_thread(self.router.close)

    # -- readiness ---------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        escalator = self.router.escalator
        llm: dict[str, Any] = {"configured": escalator is not None}
        ok = self.encoder_warm and not self.draining
        if escalator is not None:
            llm["status"] = escalator.status
            if escalator.enabled:
                llm["reachable"] = await asyncio.to_thread(escalator.ping)
                ok = ok and any(llm["reachable"].values())
        return ok, {"index": self.router.artifact.manifest.name, "encoder_warm": self.encoder_warm,
                    "draining": self.draining, "tiers": self.chain.names, "llm": llm}

    # -- classification ----------------------------------------------------------------------------
    async def classify_one(self, text: str) -> Decision:
        # Checked before it joins a micro-batch: a bad text must fail its own request, not its batch's.
        queries = self.chain.start([check_text(text, self.router.limits.max_text_chars)])
        # Rules and the static table cost tens of µs: on the event loop, cheaper than any thread hop.
        # A query they settle never waits for the encoder thread or a micro-batch window.
        self.chain.run(queries, kinds=INLINE)
        if not queries[0].done:
            await self.batcher.submit(queries[0])
        if not queries[0].done:
            await self.chain.arun(queries, kinds=IO)
        return self.chain.finish(queries)[0]

    async def classify_many(self, texts: list[str]) -> list[Decision]:
        limits = self.router.limits
        queries = self.chain.start(check_batch(texts, limits.max_batch, limits.max_text_chars))
        # A whole batch's inline tiers can take milliseconds: off the loop, but not on the encoder thread.
        await asyncio.to_thread(self.chain.run, queries, INLINE)
        pending = [q for q in queries if not q.done]
        if pending:  # not one encoder job: bounded ones that take turns with other requests'
            await self.batcher.submit_many(pending)
        await self.chain.arun(queries, kinds=IO)
        return self.chain.finish(queries)
