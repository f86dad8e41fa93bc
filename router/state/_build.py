"""``STATES``: the state backends by URL scheme, and ``build_state``. Each factory imports its
backend on first use, so naming ``memory`` never loads redis-py."""

from __future__ import annotations

import time
from collections.abc import Callable

from router._registry import Registry
from router.state._config import StateConfig, StateLimits
from router.state._protocol import State

StateFactory = Callable[[StateConfig, StateLimits, Callable[[], float]], State]


def _memory(config: StateConfig, limits: StateLimits, clock: Callable[[], float]) -> State:
    from router.state._memory import MemoryState

    return MemoryState(limits, config, clock)


def _redis(config: StateConfig, limits: StateLimits, clock: Callable[[], float]) -> State:
    from router.state._redis import RedisState

    return RedisState(config, limits)  # Redis's own TIME is the clock of every replica


STATES: Registry[StateFactory] = Registry("state backend", "state.url", {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
})


def build_state(config: StateConfig | None = None, limits: StateLimits | None = None,
                clock: Callable[[], float] = time.monotonic) -> State:
    """The backend ``config.url`` names (default: memory), enforcing ``limits`` (default: the shipped
    ones; a Dispatcher passes its model-routing file's). ``clock``: the memory backend's."""
    config = config if config is not None else StateConfig()
    return STATES.get(config.scheme)(config, limits if limits is not None else StateLimits(), clock)
