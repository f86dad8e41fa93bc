"""The service layer: a Router behind micro-batching, readiness, and drain state. No HTTP here."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router.decision import Decision
from router.router import Router
from router.service.batcher import MicroBatcher
from router.service.config import ServeConfig
from router.service.metrics import Metrics
from router.validation import check_text

log = logging.getLogger("router.service")


class ClassifierService:
    def __init__(self, router: Router, config: ServeConfig) -> None:
        self.router = router
        self.config = config
        self.metrics = Metrics()
        # One thread runs the encoder: ONNX Runtime is given its own threads, and batches queue here.
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self.batcher: MicroBatcher[Decision] = MicroBatcher(
            router.classify_batch_fast, config.batch_window_ms / 1000.0, config.batch_max, self._encoder,
            expected=lambda: self.in_flight, observe=self.metrics.batch_size.observe)
        self.in_flight = 0  # requests inside the server, kept by the Guard middleware
        self.encoder_warm = False
        self.draining = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._encoder, self.router.classify_batch_fast, ["warm up the encoder"])
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
                    "draining": self.draining, "llm": llm}

    # -- classification ----------------------------------------------------------------------------
    async def classify_one(self, text: str) -> Decision:
        # Checked before it joins a micro-batch: a bad text must fail its own request, not its batch's.
        check_text(text, self.router.limits.max_text_chars)
        decision = await self.batcher.submit(text)
        if decision.escalate:
            return (await self.router.aescalate([text], [decision]))[0]
        return decision

    async def classify_many(self, texts: list[str]) -> list[Decision]:
        # classify_batch_fast checks the batch itself (InputError -> 422); no second pass here.
        loop = asyncio.get_running_loop()
        self.metrics.batch_size.observe(len(texts))
        decisions = await loop.run_in_executor(self._encoder, self.router.classify_batch_fast, texts)
        return await self.router.aescalate(texts, decisions)
