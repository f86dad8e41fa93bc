"""``/readyz``'s ``state``: the dispatcher's backend and whether it answers; never what readiness hangs on."""

from __future__ import annotations

import pytest

from router import Router
from router.service import ServeConfig
from router.service._service import ClassifierService
from router.state import MemoryState, RedisState, StateConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_readiness_reports_the_state_and_whether_it_answers(mini_router: Router) -> None:
    service = ClassifierService(mini_router, ServeConfig())
    try:
        _, detail = await service.readiness()
        assert "state" not in detail  # no dispatcher, no state
        service.state = MemoryState()
        _, detail = await service.readiness()
        assert detail["state"] == {"backend": "memory", "url": "memory", "prefix": "router:", "reachable": True}
        down = RedisState(StateConfig(url="redis://127.0.0.1:1/0", prefix="x:", timeout_s=0.2))
        service.state = down
        _, detail = await service.readiness()
        assert detail["state"] == {"backend": "redis", "url": "redis://127.0.0.1:1/0", "prefix": "x:", "outbox": 0,
                                   "outbox_overdue": 0, "reachable": False}
        await down.aclose()
    finally:
        await service.stop()
