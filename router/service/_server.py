"""`router serve`: uvicorn with a draining shutdown.

On SIGTERM or SIGINT, readiness goes false at once (``/readyz`` answers 503) while requests
are still served. After ``drain_delay_s`` uvicorn stops accepting connections, and waits up to
``shutdown_grace_s`` for the requests in flight. A second signal skips the delay. A stop by
signal is the normal end of a server: ``serve`` returns (exit code 0), with no traceback.

``--workers N`` (N > 1) runs N such servers in worker processes on one socket, under the
supervisor in ``_workers.py``; ``--workers 1`` is this one process, with no supervisor.
"""

from __future__ import annotations

import resource
import socket
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from router._router import Router
from router._telemetry import TracingMiddleware, configure_from_serve_config
from router.dispatch import Dispatcher, SkillRegistry, load_registry
from router.service._app import create_app
from router.service._config import ServeConfig
from router.service._connections import guarded_protocol
from router.service._service import ClassifierService, load_router
from router.service._state import model_routing
from router.service.dispatch._observe import ObservedSink

BACKLOG = 2048  # pending connections the listening socket holds (the --workers supervisor binds it likewise)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: ClassifierService, drain_delay_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_delay_s = drain_delay_s
        # Called once the server is warm and accepting: a worker of --workers N tells its supervisor.
        self.on_started: Callable[[], None] | None = None
        self._drain_timer: threading.Timer | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining or self.drain_delay_s == 0:
            if self._drain_timer is not None:  # a second signal: the delay is over
                self._drain_timer.cancel()
            super().handle_exit(sig, frame)
            return
        self.service.draining = True
        # A daemon: a timer still waiting must not hold the process at its exit after a second signal.
        self._drain_timer = threading.Timer(self.drain_delay_s, super().handle_exit, (sig, frame))
        self._drain_timer.daemon = True
        self._drain_timer.start()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal once it has shut down, which turns a Ctrl-C into a
        # KeyboardInterrupt traceback and a SIGTERM into exit 143. Here the signal is the request
        # to stop, and it has been honoured: forget it, so that serve() returns normally.
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def build_server(config: ServeConfig, router: Router | None = None,
                 dispatcher: Dispatcher | None = None) -> DrainingServer:
    if dispatcher is None and (config.skills or config.proxy):
        # Refuses (ConfigError, naming both values) a model-routing file whose dispatch_timeout_s cannot hold a
        # skill's handler_timeout_s and its models: Dispatcher.check_deadlines, router/dispatch/_deadline.py.
        routing = model_routing(config)
        # --proxy alone: a dispatcher with no skills, for the chat stage's chain, budgets and trace.
        skills = load_registry(config.skills) if config.skills else SkillRegistry()
        # Its trace records also count in /metrics (dispatch/_observe.py: create_app attaches the metrics).
        dispatcher = Dispatcher(routing, skills, sink=ObservedSink.for_routing(routing))
    if router is None:
        router = load_router(config)  # the same load as a reload's (service.py)
    service = ClassifierService(router, config)
    app = create_app(service, dispatcher)
    if configure_from_serve_config(config):  # spans on in this process (router/_telemetry.py): one per request too
        app.add_middleware(TracingMiddleware)
    # httptools with the header timeout and size cap uvicorn lacks (connections.py); the idle
    # keep-alive timeout is uvicorn's own. No limit_concurrency: it counts idle connections and
    # would answer the probes 503, which the Guard's per-route caps never do.
    protocol = guarded_protocol(config.header_timeout_s, config.max_header_bytes,
                                lambda limit: service.metrics.rejected.labels(limit).inc())
    uv = uvicorn.Config(app, host=config.host, port=config.port, loop="uvloop", http=protocol,
                        lifespan="on", access_log=False, log_level="warning",
                        timeout_keep_alive=config.keep_alive_timeout_s,
                        timeout_graceful_shutdown=config.shutdown_grace_s, backlog=BACKLOG)
    return DrainingServer(uv, service, config.drain_delay_s)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the new soft limit.

    Each connection holds a file descriptor, and a soft limit of 1,024 (still a common default)
    is spent by a thousand idle clients before their timeouts close them. Go's net/http does the
    same at start; the hard limit, set by the administrator, still holds.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. over the kernel's nr_open: keep what we have
            pass
    return soft


def serve(config: ServeConfig) -> None:
    raise_open_files_limit()
    if config.workers > 1:
        from router.service._workers import serve_workers

        serve_workers(config)
        return
    server = build_server(config)
    print(banner(config, config.host, config.port), flush=True)
    server.run()


def banner(config: ServeConfig, host: str, port: int) -> str:
    workers = f" with {config.workers} workers" if config.workers > 1 else ""
    proxy = ", /v1/chat/completions, /v1/messages, GET /v1/models" if config.proxy else ""
    return (f"router: serving index {config.index!r} on http://{host}:{port}{workers} "
            f"(POST /v1/classify{', /v1/dispatch' if config.skills else ''}{proxy}, GET /healthz /readyz /metrics "
            "/openapi.json)")
