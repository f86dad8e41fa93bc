"""Tier-2 fixtures: the strict loopback vLLM server, and routers over the mini index with a chain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router.llm import LLMConfig
from router.testing import FakeVLLM

# Queries the mini index escalates (tier 1 unsure, not out of scope); checked in test_pipeline.
ESCALATED = ["what about my money", "how much", "my stuff", "can you check something for me", "clock",
             "tell me about the account and the rain"]


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM().start()
    yield server
    server.stop()


@pytest.fixture
def vllm_backend(vllm: FakeVLLM) -> dict[str, Any]:
    return {"backend": "vllm", "url": vllm.url, "model": vllm.model, "timeout_s": 1.0}


@pytest.fixture
def make_router(mini_index: Path) -> Iterator[Callable[..., Router]]:
    routers: list[Router] = []

    def make(*backends: dict[str, Any], **llm: Any) -> Router:
        config = LLMConfig.model_validate({"backends": list(backends), "gate": "on", **llm})
        router = Router.load(mini_index, llm=config)
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


def ping(router: Router) -> dict[str, bool]:
    """Tier 2's readiness probe from sync code, on a loop of its own (its connections closed there)."""
    escalator = router.escalator
    assert escalator is not None

    async def probe() -> dict[str, bool]:
        try:
            return await escalator.ping()
        finally:
            await escalator.http.aclose()

    return asyncio.run(probe())


class BrokenProvider:
    """A custom provider whose bug raises a non-router exception: still only a degraded Decision."""

    name = "custom"

    async def complete(self, model: str, request: Any, timeout_s: float) -> Any:
        raise ZeroDivisionError("bug in a custom backend")

    async def ping(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None
