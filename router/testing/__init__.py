"""Loopback stand-ins for backends we cannot run here, for tests and benchmarks (stdlib only).

``FakeVLLM`` speaks vLLM's chat-completions protocol; ``FakeOpenAI``, ``FakeAnthropic`` and
``FakeGemini`` speak the premium providers' APIs, tools and streaming included. Each is a real HTTP
server on 127.0.0.1 that checks requests strictly and injects faults (``FAULTS``). ``ServeProcess``
runs `router serve` as a child process on a free port; ``RedisServer`` a real redis-server. Nothing here
is imported by the router itself.
"""

from router.testing._loopback import FAULTS, SOAK_FAULTS, LoopbackServer
from router.testing._process import ServeProcess, free_port
from router.testing._providers import FakeAnthropic, FakeGemini, FakeOpenAI
from router.testing._redis import RedisServer, redis_server_path
from router.testing._vllm_server import FakeVLLM

__all__ = [
    "FAULTS",
    "SOAK_FAULTS",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeVLLM",
    "LoopbackServer",
    "RedisServer",
    "ServeProcess",
    "free_port",
    "redis_server_path",
]
