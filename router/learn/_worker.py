"""The learner's background thread: learns a burst of feedback in one refit, and tails a shared log.

It waits for a wake-up (an item was logged), then for ``apply_delay_s`` of quiet (each new item re-arms
it, up to ``max_delay_factor`` times the delay, so a long burst is still learned while it lasts), then
applies. Without wake-ups it applies once a second, to pick up what other replicas logged. The thread
runs at a lower CPU priority (Linux: nice is per thread), and the refit's BLAS calls run on that thread
alone (``threadpoolctl``), so a refit takes the cores the request threads leave idle.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("router.learn")

MAX_DELAY_FACTOR = 8  # a burst that never pauses is learned at least every 8 delays
JOIN_TIMEOUT_S = 120.0  # close() waits this long for a refit under way (CLINC150: seconds)


def _lower_priority() -> None:
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:  # not permitted here: the refit runs at normal priority
            pass


class Worker:
    def __init__(self, apply: Callable[[], object], delay_s: float) -> None:
        self._apply = apply
        self.delay_s = delay_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="router-learn", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        _lower_priority()
        poll = max(1.0, self.delay_s)
        while not self._stop.is_set():
            if self._wake.wait(timeout=poll):
                self._debounce()
            if self._stop.is_set():
                break
            self._wake.clear()
            try:
                with _one_blas_thread():
                    self._apply()
            except Exception:  # the worker outlives one bad apply: logged, tried again on the next item
                log.exception("router: learning failed; the serving state is unchanged")

    def _debounce(self) -> None:
        deadline = time.monotonic() + self.delay_s * MAX_DELAY_FACTOR
        while not self._stop.is_set():
            self._wake.clear()
            quiet = min(self.delay_s, deadline - time.monotonic())
            if quiet <= 0 or not self._wake.wait(timeout=quiet):
                return

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=JOIN_TIMEOUT_S)


def _one_blas_thread() -> Any:
    """BLAS on one thread while the worker refits. OpenBLAS's limit is the process's: a request's small
    products (one query against the head) never used more than one thread anyway."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
