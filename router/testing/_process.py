"""Start `router serve` (or any server) as a real process on a free port, for tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``router serve --port <free> *args`` in a child process; usable as a context manager.

    ``start`` returns once ``GET /readyz`` answers 200 (or raises if the process dies or
    ``ready_timeout_s`` passes). Output goes to ``stdout`` (a pipe) only when ``capture`` is set.
    """

    def __init__(self, *args: str, capture: bool = False, ready_timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.capture = capture
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._last_output = ""

    def start(self) -> ServeProcess:
        # Not captured: output goes to a file (an unread pipe would block the server), shown on failure.
        self._log = None if self.capture else tempfile.TemporaryFile()
        out = subprocess.PIPE if self.capture else self._log
        self.proc = subprocess.Popen([sys.executable, "-m", "router._cli", "serve", "--port", str(self.port),
                                      *self.args], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()  # the process is reaped first, so everything it printed is in the log
                raise RuntimeError(f"router serve {' '.join(self.args)} did not become ready: {self._last_output}")
            time.sleep(0.1)

    def output(self) -> str:
        """What the process printed so far (when not captured)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._last_output = self.output()[-2000:]  # kept: stop() closes the log a failed start reports
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
