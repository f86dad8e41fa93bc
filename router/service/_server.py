"""`router serve`: uvicorn with a draining shutdown.

On SIGTERM or SIGINT, readiness goes false at once (``/readyz`` answers 503) while requests
are still served. After ``drain_delay_s`` uvicorn stops accepting connections, and waits up to
``shutdown_grace_s`` for the requests in flight. A second signal skips the delay. A stop by
signal is the normal end of a server: ``serve`` returns (exit code 0), with no traceback.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from router._config import EncoderConfig
from router._router import OpenedIndex, Router
from router.dispatch import Dispatcher, load_model_routing, load_registry
from router.service._app import create_app
from router.service._config import ServeConfig
from router.service._connections import guarded_protocol
from router.service._service import ClassifierService


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: ClassifierService, drain_delay_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_delay_s = drain_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining or self.drain_delay_s == 0:
            super().handle_exit(sig, frame)
            return
        self.service.draining = True
        threading.Timer(self.drain_delay_s, super().handle_exit, (sig, frame)).start()

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
    if dispatcher is None and config.skills:
        # Refuses (ConfigError, naming both values) a model-routing file whose dispatch_timeout_s cannot hold a
        # skill's handler_timeout_s and its models: Dispatcher.check_deadlines, router/dispatch/_deadline.py.
        dispatcher = Dispatcher(load_model_routing(config.model_routing), load_registry(config.skills))
    if router is None:
        # Opened once: the serving encoder settings come from the config.json the load then uses.
        opened = OpenedIndex.open(config.index, config.index_dir, static=config.static is not False)
        router = Router.load(opened, encoder=_serving_encoder(config, opened.config.encoder), static=config.static)
    service = ClassifierService(router, config)
    app = create_app(service, dispatcher)
    # httptools with the header timeout and size cap uvicorn lacks (connections.py); the idle
    # keep-alive timeout is uvicorn's own. No limit_concurrency: it counts idle connections and
    # would answer the probes 503, which the Guard's per-route caps never do.
    protocol = guarded_protocol(config.header_timeout_s, config.max_header_bytes,
                                lambda limit: service.metrics.rejected.labels(limit).inc())
    uv = uvicorn.Config(app, host=config.host, port=config.port, loop="uvloop", http=protocol,
                        lifespan="on", access_log=False, log_level="warning",
                        timeout_keep_alive=config.keep_alive_timeout_s,
                        timeout_graceful_shutdown=config.shutdown_grace_s, backlog=2048)
    return DrainingServer(uv, service, config.drain_delay_s)


def _serving_encoder(config: ServeConfig, built: EncoderConfig) -> EncoderConfig:
    """The index's own encoder settings with the serving thread count and cache size."""
    update: dict[str, int] = {"threads": config.encoder_threads or min(os.cpu_count() or 1, 4)}
    if config.encoder_cache_size is not None:
        update["cache_size"] = config.encoder_cache_size
    return built.model_copy(update=update)


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
    server = build_server(config)
    print(f"router: serving index {config.index!r} on http://{config.host}:{config.port} "
          f"(POST /v1/classify{', /v1/dispatch' if config.skills else ''}, GET /healthz /readyz /metrics "
          "/openapi.json)", flush=True)
    server.run()
