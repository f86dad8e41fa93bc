"""Loopback stand-ins for backends we cannot run here, for tests and benchmarks (stdlib only).

``FakeVLLM`` is a real HTTP server on 127.0.0.1 that speaks vLLM's chat-completions protocol
strictly, with fault injection. ``ServeProcess`` runs `router serve` as a child process on a
free port. Nothing here is imported by the router itself.
"""

from router.testing.process import ServeProcess, free_port
from router.testing.vllm_server import FakeVLLM

__all__ = ["FakeVLLM", "ServeProcess", "free_port"]
