"""`router serve --workers N`: N worker processes serving one port, under a small supervisor.

Hand-written rather than uvicorn's own ``Multiprocess`` supervisor: that one restarts every worker on
SIGHUP, and SIGHUP is our hot-reload signal (each worker swaps its index in place, its connections and
requests in flight untouched). So the parent here binds the socket once (SO_REUSEADDR, backlog 2048),
spawns N processes (the ``spawn`` start method: a fresh interpreter, none of the parent's threads),
and each runs the one-process server (``build_server``: the guarded protocol, the draining
shutdown, uvloop) on that socket. The parent

- forwards SIGTERM and SIGINT, the draining stop, to every worker (a second signal forwards again:
  the workers skip the rest of the drain delay), and SIGHUP, reload, to every worker that is serving
  (none once they stop: each ignores SIGHUP from its shutdown on);
- restarts a worker that dies unexpectedly, after a backoff that doubles with each failure in a row
  (0.5 s up to 30 s; reset once a worker has served ``STABLE_S``), each restart on stderr, so a crash
  loop is visible and slow, not a busy loop;
- stops everything with an error if a worker cannot start the first time (a bad index, a bad model-
  routing file): the same failure would only repeat;
- returns (exit 0) once every worker has stopped after a signal.

Workers sit in their own process group, so a Ctrl-C on the terminal reaches the parent only and each
worker gets exactly the signals forwarded to it (from its spawn to its setpgid it holds the terminal's
signals, then drops any that came); a worker whose parent is gone (SIGKILL) stops itself.

What is per worker: the micro-batcher, the encoder and its threads (``encoder_threads`` defaults to
each worker's share of the cores), tier 2's connections, the dispatcher's connections. What is shared:
the port, and the dispatcher's budgets, approvals and breakers only through a shared state
(``--state redis://...``); with the memory state dispatch is refused (``check_shared_state``).

Metrics: prometheus_client's multiprocess mode. Each worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (a temporary folder made here, unless it is set), and ``/metrics`` on any
worker answers every worker's counters and histograms summed; a gauge has one series per worker
(a ``pid`` label). The files of a dead worker's gauges are removed when it dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from router._settings import environ, export
from router.errors import ConfigError, RouterError
from router.service._config import ServeConfig
from router.service._metrics import Metrics
from router.service._server import BACKLOG, DrainingServer, banner, build_server
from router.service._state import model_routing

BACKOFF_S = 0.5  # the first restart's delay; doubled with each failure in a row
MAX_BACKOFF_S = 30.0
STABLE_S = 30.0  # a worker that served this long before it died starts a new count of failures
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP
# What a terminal sends its foreground process group (Ctrl-C, a hang-up), which a new worker is in until
# its setpgid: held from its spawn to then (``terminal_signals_held``, ``own_process_group``).
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGHUP})


def _say(message: str) -> None:
    print(f"router: {message}", file=sys.stderr, flush=True)


def check_shared_state(config: ServeConfig) -> None:
    """Refuse (``ConfigError``) ``--workers`` above 1 with dispatch or the proxy on and the memory state: each
    worker would keep budgets, approvals and breakers of its own."""
    if config.workers == 1 or not (config.skills or config.proxy):
        return
    if model_routing(config).state.scheme != "memory":
        return
    source = "--state" if config.state is not None else "the model-routing file's state.url (memory by default)"
    n = config.workers
    on = f"dispatch is on (--skills {config.skills})" if config.skills else "the proxy is on (--proxy)"
    raise ConfigError(
        f"--workers {n} is refused with the memory state ({source}) while {on}: each worker process would keep "
        "its own budgets, approvals and breakers, so every "
        f"spend cap would become {n}x the cap, an approval id made by one worker would be unknown to the "
        "others, and a provider that is down would be found out by each worker again. Share them in Redis: "
        "--state redis://127.0.0.1:6379/0 (or `state: {url: redis://...}` in the model-routing file), or serve "
        "dispatch and the proxy with --workers 1")


def bind_socket(config: ServeConfig) -> socket.socket:
    """The one listening socket the workers share; a port already taken is an error here, before any worker."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {config.host!r} --port {config.port}: cannot listen there: "
                          f"{exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


# -- in the worker process ---------------------------------------------------------------------------
def run_worker(config: ServeConfig, sock: socket.socket, number: int, ready: Connection) -> None:
    """A worker's whole life: build the server, say when it is serving, serve until told to stop."""
    own_process_group()
    try:
        server = build_server(config)
    except RouterError as exc:
        _say(f"error: worker {number}: {exc}")
        sys.exit(1)
    if environ(METRICS_DIR):
        count_across_workers(server.service.metrics)

    def started() -> None:
        ready.send(os.getpid())
        ready.close()

    server.on_started = started
    threading.Thread(target=_stop_with_parent, args=(server,), name="supervisor-watch", daemon=True).start()
    server.run(sockets=[sock])


def own_process_group() -> None:
    """Leave the terminal's process group, so that its signals come from the supervisor alone. The worker
    has held the terminal's signals since its spawn (``terminal_signals_held``): one that came before this
    point was meant for the supervisor, which got it too. It is dropped (setting SIG_IGN discards a pending
    signal), then the signals are taken again with their handlers as they were."""
    os.setpgid(0, 0)
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in TERMINAL_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINAL_SIGNALS)
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def terminal_signals_held() -> Iterator[None]:
    """Block the terminal's signals in the supervisor while it spawns a worker. The child inherits the mask
    (not the pending signals), so a Ctrl-C on the terminal between its start and its setpgid stays pending
    there instead of interrupting its imports with a KeyboardInterrupt traceback (``own_process_group``
    drops it); the supervisor's own copy of it is delivered when the block is lifted."""
    # A spawn first starts multiprocessing's resource tracker, and CPython unblocks SIGINT after starting it
    # (whatever the mask was): started before the block, so that nothing lifts it under us.
    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def count_across_workers(metrics: Metrics) -> None:
    """Render every worker's samples: prometheus_client's multiprocess collector over the files of
    ``PROMETHEUS_MULTIPROC_DIR`` replaces the worker's own registry in what ``/metrics`` answers (the
    metrics were made in multiprocess mode, the variable being set before prometheus_client loaded)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    metrics.registry = registry


def _stop_with_parent(server: DrainingServer) -> None:
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - always set under the spawn start method
        return
    parent.join()
    _say(f"worker pid {os.getpid()}: the supervisor is gone; stopping")
    server.handle_exit(signal.SIGTERM, None)


# -- in the supervisor -------------------------------------------------------------------------------
@dataclass
class _Worker:
    number: int
    process: BaseProcess | None = None
    pid: int = 0
    ready_pipe: Connection | None = None
    ready: bool = False
    ever_ready: bool = False  # a process of this slot has served: a failure now is a crash, not a bad start
    ready_at: float = 0.0
    failures: int = 0  # in a row, for the backoff
    restart_at: float | None = None


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Keeps ``config.workers`` worker processes serving ``sock``; ``run`` returns when they have stopped."""

    def __init__(self, config: ServeConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self.context = multiprocessing.get_context("spawn")
        self.workers = [_Worker(i + 1) for i in range(config.workers)]
        self.stopping = False
        self.failure: str | None = None
        self.restarts = 0
        self._signals: deque[int] = deque()
        self._metrics_dir: str | None = None
        self._own_metrics_dir = False  # made here, so removed here

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Start the workers, watch them until they have stopped after a signal. Raises ``RouterError``
        when a worker could not start (its own error is on stderr above)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # The handlers only queue the signal; the loop, woken by the wake-up fd, forwards it.
        previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (*STOP_SIGNALS, RELOAD_SIGNAL)}
        try:
            self._metrics_dir = self._prepare_metrics_dir()
            for worker in self.workers:
                self._start(worker)
            self._watch(wake_r)
        finally:
            self._stop_all(signal.SIGTERM)  # only on an unexpected error: the workers are gone by now
            for worker in self.workers:
                if worker.process is not None:
                    worker.process.join()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            self._remove_metrics_dir()
        if self.failure is not None:
            raise RouterError(f"{self.failure}; the other workers were stopped")

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def _watch(self, wake: socket.socket) -> None:
        while True:
            now = time.monotonic()
            due = [w.restart_at for w in self.workers if w.restart_at is not None]
            handles: list[Any] = [wake]
            handles += [w.process.sentinel for w in self.workers if w.process is not None]
            handles += [w.ready_pipe for w in self.workers if w.ready_pipe is not None]
            woken = wait(handles, max(0.0, min(due) - now) if due else None)
            with contextlib.suppress(OSError):
                while wake.recv(512):
                    pass
            while self._signals:
                self._forward(self._signals.popleft())
            for worker in self.workers:
                if worker.ready_pipe is not None and worker.ready_pipe in woken:
                    self._read_ready(worker)
            for worker in self.workers:
                if worker.process is not None and worker.process.exitcode is not None:
                    self._reap(worker)
            if self.stopping and all(w.process is None for w in self.workers):
                return
            now = time.monotonic()
            for worker in self.workers:
                if not self.stopping and worker.restart_at is not None and worker.restart_at <= now:
                    worker.restart_at = None
                    self._start(worker)

    # -- workers -----------------------------------------------------------------------------------
    def _start(self, worker: _Worker) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=run_worker, args=(self.config, self.sock, worker.number, writer),
                                       name=f"router-worker-{worker.number}")
        with terminal_signals_held():
            process.start()
        writer.close()  # the worker holds the only writer: its death reads as EOF here
        worker.process, worker.pid, worker.ready_pipe, worker.ready = process, process.pid or 0, reader, False

    def _read_ready(self, worker: _Worker) -> None:
        assert worker.ready_pipe is not None
        try:
            worker.ready_pipe.recv()
        except (EOFError, OSError):  # died before it was serving: its sentinel says so too
            pass
        else:
            worker.ready, worker.ever_ready, worker.ready_at = True, True, time.monotonic()
            if worker.failures and not self.stopping:
                _say(f"worker {worker.number} (pid {worker.pid}) is serving again")
            if not self.stopping and all(w.ready for w in self.workers) and not self.restarts:
                _say(f"{len(self.workers)} workers serving (pids {', '.join(str(w.pid) for w in self.workers)})")
        worker.ready_pipe.close()
        worker.ready_pipe = None

    def _reap(self, worker: _Worker) -> None:
        assert worker.process is not None
        code, pid, was_ready = worker.process.exitcode, worker.pid, worker.ready
        worker.process.close()
        worker.process, worker.ready = None, False
        if worker.ready_pipe is not None:
            worker.ready_pipe.close()
            worker.ready_pipe = None
        self._forget_gauges(pid)
        if self.stopping:
            if code not in (0, *(-s for s in STOP_SIGNALS)):
                _say(f"worker {worker.number} (pid {pid}) {describe_exit(code)} while stopping")
            return
        if not worker.ever_ready:
            self.failure = f"worker {worker.number} (pid {pid}) {describe_exit(code)} before it was serving"
            self._stop_all(signal.SIGTERM)
            return
        stable = was_ready and time.monotonic() - worker.ready_at >= STABLE_S
        worker.failures = 1 if stable else worker.failures + 1
        delay = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (worker.failures - 1))
        worker.restart_at = time.monotonic() + delay
        self.restarts += 1
        _say(f"worker {worker.number} (pid {pid}) {describe_exit(code)}; starting a new one in {delay:g}s "
             f"(failure {worker.failures} in a row)")

    def _forward(self, sig: int) -> None:
        if sig in STOP_SIGNALS:
            if not self.stopping:
                _say(f"{signal.Signals(sig).name}: stopping {len(self.workers)} workers (draining)")
            self.stopping = True
            self._stop_all(sig)
        elif not self.stopping:  # a reload while the workers stop has nothing to do, and would only be refused
            for worker in self.workers:
                if worker.process is not None and worker.ready:
                    self._kill(worker, sig)

    def _stop_all(self, sig: int) -> None:
        """``sig`` to every worker that is serving; SIGTERM to one still starting (it has nothing to drain,
        and a SIGINT there would end in a KeyboardInterrupt traceback)."""
        self.stopping = True
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None:
                self._kill(worker, sig if worker.ready else signal.SIGTERM)

    @staticmethod
    def _kill(worker: _Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    # -- metrics files -----------------------------------------------------------------------------
    def _prepare_metrics_dir(self) -> str:
        """Where the workers' metrics go: ``PROMETHEUS_MULTIPROC_DIR`` when set, its old files removed (the
        library's rule: they would add a previous run's counts), else a temporary folder of our own."""
        given = environ(METRICS_DIR)
        if given:
            try:
                Path(given).mkdir(parents=True, exist_ok=True)
                for stale in Path(given).glob("*.db"):
                    stale.unlink()
            except OSError as exc:
                raise ConfigError(f"{METRICS_DIR}={given!r}: cannot hold the workers' metrics files there: "
                                  f"{exc.strerror or exc}") from exc
            return given
        path = tempfile.mkdtemp(prefix="router-metrics-")
        export(METRICS_DIR, path)  # inherited by every worker spawned from now on
        self._own_metrics_dir = True
        return path

    def _remove_metrics_dir(self) -> None:
        if self._own_metrics_dir and self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            export(METRICS_DIR, None)

    def _forget_gauges(self, pid: int) -> None:
        """A dead worker's gauges (in flight, the index serving) no longer describe anything: drop them.
        Its counters and histograms stay, so that the sums never go down."""
        if not self._metrics_dir:
            return
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        for path in Path(self._metrics_dir).glob(f"gauge_all_{pid}.db"):
            path.unlink(missing_ok=True)


def serve_workers(config: ServeConfig) -> None:
    """``router serve --workers N`` (N > 1): refuse a per-worker state, bind, supervise until stopped."""
    check_shared_state(config)
    sock = bind_socket(config)
    host, port = sock.getsockname()[:2]
    print(banner(config, str(host), int(port)), flush=True)
    try:
        Supervisor(config, sock).run()
    finally:
        sock.close()
