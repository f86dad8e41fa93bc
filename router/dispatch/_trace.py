"""Trace records of every provider call and every skill step, and the sinks that keep them.

One JSON object per line. ``kind: "call"`` records are provider attempts (skill, stage, provider,
model, attempt, status, latency, tokens, cost, fallback, breaker state, budget left, and
``timeout_s``, the attempt's bound once the dispatch's deadline has cut it); ``status: "deadline"``
is a model not tried for lack of time, ``status: "timeout"`` with ``usage_estimated`` an attempt
cancelled once sent, metered at its reservation. ``kind: "skill"`` records are dispatch outcomes;
``handler`` says how the handler ended once entered (ok, error, timeout, cancelled), and
``status: "timeout"`` is a step cut when the dispatcher closed. API keys are never part of a record.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson

from router._registry import Registry
from router.dispatch._config import TraceConfig
from router.errors import ConfigError


class TraceSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps the newest ``maxlen`` records in memory: tests, and a process without a trace file."""

    def __init__(self, maxlen: int = 200_000) -> None:
        self.records: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        return None


class JsonlSink:
    """Appends one line per record; each line is written whole, so a crash loses at most one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab", buffering=0)
        except OSError as exc:
            raise ConfigError(f"trace.path {str(path)!r} cannot be opened for appending: {exc.strerror}") from exc
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _jsonl(config: TraceConfig) -> TraceSink:
    return JsonlSink(config.path)


def _memory(config: TraceConfig) -> TraceSink:
    return MemorySink()


TRACE_SINKS: Registry[Callable[[TraceConfig], TraceSink]] = Registry(
    "trace sink", "trace.sink", {"jsonl": _jsonl, "memory": _memory})


def build_sink(config: TraceConfig) -> TraceSink:
    return TRACE_SINKS.get(config.sink)(config)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with Path(path).open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


def session_totals(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per session, from call records: attempts, metered calls (answered, or timed out once sent and
    metered at their reservation, as the ledger counts them), tokens and cost (exact)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") != "call":
            continue
        t = out.setdefault(r["session"], {"attempts": 0, "calls": 0, "tokens": 0, "cost_usd": Decimal(0)})
        t["attempts"] += 1
        if r["status"] == "ok" or r.get("tokens", 0) > 0:
            t["calls"] += 1
        t["tokens"] += r.get("tokens", 0)
        t["cost_usd"] += Decimal(str(r.get("cost_usd", 0)))
    return out
