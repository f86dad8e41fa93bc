"""The learned-examples log: what the router learned, kept so that a restart (or another worker) replays it.

``LEARN_LOGS`` maps a backend name to a factory: ``file`` (JSON lines beside the index, the default),
``redis`` (a stream shared by every replica that names the same Redis, ``_redis_log.py``) and ``memory``
(a list, for tests). ``build_log`` picks one from the learning config and the shared-state config.

The file log is written by several processes at once (``router serve --workers N``, ``router build
--compact``), so every change is made under ``flock(LOCK_EX)`` on the log itself:

- ``append``: one ``write`` of all the lines, then ``fsync``; the entries are durable when it returns.
- A crash mid-write loses at most what was being written and never corrupts the log: it can only leave a
  last line without its newline (the one write was cut short), which is dropped on read and truncated away
  (under the lock) before the next write. A whole line (it ends in its newline) is never dropped nor
  truncated, wherever it is, the last included: if it is not a valid entry, reading raises
  ``LearnLogError`` naming ``path:line`` and the field. A line that is JSON but not a ``LogEntry`` (a field
  this version does not know) may have been written by a newer tiered-router, and was acknowledged to
  whoever sent it: truncating it would lose it.
- ``fold`` rewrites the file without the folded entries (temporary file, fsync, rename, fsync of the
  folder). A writer that waited for the lock on the old file sees that the path now names another inode
  and reopens it, so no append is lost to the rename.
- ``read_new`` tails by byte offset, holding the file it read open (its inode cannot be reused while held):
  when the path names another file (a fold, here or in another process) it reads the new one whole and
  returns the entries it has not seen.

``admit`` (the ``learning.max_per_minute`` limit) is a sliding window in this process: with the file
log each worker counts its own feedback (N workers take up to N x the limit). The redis log counts in
Redis, for every replica at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import ValidationError

from router._registry import Registry
from router.errors import LearnLogError
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry

if TYPE_CHECKING:
    from router.state import StateConfig

log = logging.getLogger("router.learn")

_CHUNK = 1 << 16  # bytes read at a time when looking backwards for the last line


@runtime_checkable
class LearnLog(Protocol):
    """Where learned examples are kept. Every backend keeps the entries in the order they were appended
    and lets any number of readers (processes, replicas) tail it."""

    name: str

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Add ``entries`` at the end, all or none; durable when it returns."""

    def read_all(self) -> list[LogEntry]:
        """Every entry from the start, in order; moves this reader's cursor to the end."""

    def read_new(self) -> list[LogEntry]:
        """The entries appended since this reader's cursor, by any writer (this one included), in order."""

    def admit(self, source: str, limit: int, window_s: float = 60.0) -> float:
        """0.0 when one more item of ``source`` fits in ``limit`` per ``window_s`` (it is counted); else the
        seconds until one more would (nothing is counted)."""

    def fold(self, ids: Collection[str]) -> int:
        """Remove the entries with these ids (folded into a new index by ``router build --compact``); how many
        were removed."""

    def describe(self) -> dict[str, Any]:
        """``backend``, where it lives (never a password) and ``entries`` (as of this reader's last read)."""

    def close(self) -> None:
        """Let go of what it holds open; the log itself stays."""


class SlidingWindow:
    """``admit`` in one process: the times of the items taken per source in the last ``window_s``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._taken: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, source: str, limit: int, window_s: float = 60.0) -> float:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"admit: limit={limit} and window_s={window_s} must be positive")
        with self._lock:
            now = self._clock()
            taken = self._taken.setdefault(source, deque())
            while taken and taken[0] <= now - window_s:
                taken.popleft()
            while len(taken) > limit:  # a lower limit than the last call's: forget the oldest
                taken.popleft()
            if len(taken) < limit:
                taken.append(now)
                return 0.0
            return max(taken[0] + window_s - now, 1e-3)


class MemoryLog:
    """A list in this process, for tests: nothing survives the process, nothing is shared."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries: list[LogEntry] = []
        self._cursor = 0
        self._window = SlidingWindow(clock)
        self._lock = threading.Lock()

    def append(self, entries: Sequence[LogEntry]) -> None:
        with self._lock:
            self.entries.extend(entries)

    def read_all(self) -> list[LogEntry]:
        with self._lock:
            self._cursor = len(self.entries)
            return list(self.entries)

    def read_new(self) -> list[LogEntry]:
        with self._lock:
            new = self.entries[self._cursor:]
            self._cursor = len(self.entries)
            return new

    def admit(self, source: str, limit: int, window_s: float = 60.0) -> float:
        return self._window.admit(source, limit, window_s)

    def fold(self, ids: Collection[str]) -> int:
        drop = set(ids)
        with self._lock:
            before = len(self.entries)
            self._cursor -= sum(entry.id in drop for entry in self.entries[:self._cursor])
            self.entries = [entry for entry in self.entries if entry.id not in drop]
            return before - len(self.entries)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "entries": len(self.entries)}

    def close(self) -> None:
        pass


def entry_error(where: str, exc: ValidationError) -> str:
    """Why the stored entry at ``where`` (``path:line``, ``key:stream-id``) does not load, naming the fields."""
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return (f"{where}: not JSON ({errors[0]['msg']}): the log is corrupt (no crash mid-write leaves a whole "
                "entry that is not JSON); restore it from a backup, or remove that entry knowingly")
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(part) for part in err["loc"])
        parts.append(f"{loc + ': ' if loc else ''}{err['msg']}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return (f"{where}: not a valid log entry: {'; '.join(parts)}{more}. It was written whole, so it is left as it "
            "is: the log may have been written by a newer version of tiered-router (run that version, or "
            "upgrade this one), or edited by hand")


class FileLog:
    """JSON lines at ``path`` (one ``LogEntry`` each, ``exclude_defaults``), shared by every process that
    names the same path. ``clock``: ``admit``'s (monotonic)."""

    name = "file"

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._window = SlidingWindow(clock)
        self._lock = threading.Lock()  # this object's cursor; writers are serialised by flock
        self._fd: int | None = None    # the file the cursor is in, held open: its inode cannot be reused
        self._offset = 0               # bytes of whole, valid lines read
        self._lines = 0                # lines before the offset (for error messages)
        self._seen: set[str] = set()   # ids of the entries before the offset

    # -- writing -----------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, create: bool) -> Iterator[int]:
        """The file at the path, open read-write and locked; after the lock is taken, it is checked to be
        still the file at the path (a fold renames another over it) or opened again."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError as exc:
                if not create:
                    raise  # nothing to lock: the caller says what that means
                raise LearnLogError(f"learning.log {self.path}: cannot create it: {exc}") from exc
            except OSError as exc:
                raise LearnLogError(f"learning.log {self.path}: cannot open for writing: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(self.path)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # replaced while we waited: take the new one
        try:
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _repair(self, fd: int) -> None:
        """Under the lock: truncate a torn last line (one without its newline) left by a writer that died
        mid-write, so that the next append starts on a line of its own. A whole line is never touched, valid
        or not: the one write of an append ends in a newline, so a crash cannot leave a whole line that is not
        an entry, and one that does not load (a newer version's entry, say) is the reader's error to report."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start, pos = 0, size  # the torn line starts after the last newline
        while pos > 0:
            lo = max(0, pos - _CHUNK)
            newline = os.pread(fd, pos - lo, lo).rfind(b"\n")
            if newline >= 0:
                start = lo + newline + 1
                break
            pos = lo
        log.warning("learning log %s: dropped a torn last line (%d bytes at offset %d): a write cut short by a "
                    "crash", self.path, size - start, start)
        os.ftruncate(fd, start)
        os.fsync(fd)

    def append(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        data = "".join(entry.model_dump_json(exclude_defaults=True) + "\n" for entry in entries).encode()
        with self._locked(create=True) as fd:
            try:
                self._repair(fd)
                size = os.fstat(fd).st_size
            except OSError as exc:
                raise LearnLogError(f"learning.log {self.path}: cannot append: {exc}") from exc
            try:
                view = memoryview(data)
                while view:  # one write; the loop only for a short write (a signal, a huge batch)
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                try:  # all or none: take back a partial write (disk full) now, under the lock
                    os.ftruncate(fd, size)
                except OSError:
                    pass  # the next writer's repair drops the torn line
                raise LearnLogError(f"learning.log {self.path}: cannot append: {exc}") from exc
            if size == 0:
                self._sync_folder()  # a new file: its name is made durable too

    def _sync_folder(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fold(self, ids: Collection[str]) -> int:
        drop = set(ids)
        if not drop:
            return 0
        try:
            with self._locked(create=False) as fd:
                self._repair(fd)
                held = os.fstat(fd)
                data = os.pread(fd, held.st_size, 0)
                keep: list[bytes] = []
                removed = 0
                for entry, line in self._lines_of(data, 0):
                    if entry is not None and entry.id in drop:
                        removed += 1
                    else:
                        keep.append(line)
                if removed:
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
                    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, held.st_mode & 0o777)
                    try:
                        try:
                            view = memoryview(b"".join(keep))
                            while view:
                                view = view[os.write(out, view):]
                            os.fsync(out)
                        finally:
                            os.close(out)
                        os.replace(tmp, self.path)
                    except BaseException:
                        tmp.unlink(missing_ok=True)  # the log is untouched
                        raise
                    self._sync_folder()
                return removed
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise LearnLogError(f"learning.log {self.path}: cannot fold: {exc}") from exc

    # -- reading -----------------------------------------------------------------------------------------
    def _lines_of(self, data: bytes, first_line: int) -> Iterator[tuple[LogEntry | None, bytes]]:
        """(entry, raw line with its newline) per whole line of ``data`` (None for a blank line), stopping
        before a last line without its newline (torn, or still being written); a whole line that is not an
        entry, the last included, raises ``LearnLogError`` naming ``path:line``."""
        pos, number, size = 0, first_line, len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            if newline < 0:
                return  # the last line, without its newline: a write in progress or cut short
            number += 1
            line = data[pos:newline]
            entry = None
            if line.strip():
                try:
                    entry = LogEntry.model_validate_json(line)
                except ValidationError as exc:
                    raise LearnLogError(entry_error(f"{self.path}:{number}", exc)) from None
            yield entry, data[pos:newline + 1]
            pos = newline + 1

    def _scan(self, fd: int, offset: int, first_line: int) -> tuple[list[LogEntry], int, int, bool]:
        """The entries of the whole lines from ``offset`` to the end: (entries, new offset, new line count,
        whether a torn or unfinished last line follows)."""
        size = os.fstat(fd).st_size
        data = os.pread(fd, max(0, size - offset), offset) if size > offset else b""
        entries: list[LogEntry] = []
        used = lines = 0
        for entry, line in self._lines_of(data, first_line):
            if entry is not None:
                entries.append(entry)
            used += len(line)
            lines += 1
        return entries, offset + used, first_line + lines, used < len(data)

    def _read(self, from_start: bool) -> list[LogEntry]:
        """Read from the cursor (or the start); a torn tail is repaired under the lock, then read again."""
        for attempt in (0, 1):
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._reset(None)
                return []
            except OSError as exc:
                raise LearnLogError(f"learning.log {self.path}: cannot read: {exc}") from exc
            try:
                opened = os.fstat(fd)
                held = os.fstat(self._fd) if self._fd is not None else None
                same = (held is not None and (held.st_dev, held.st_ino) == (opened.st_dev, opened.st_ino)
                        and opened.st_size >= self._offset)
                if from_start or not same:
                    # The start, or another file at the path (a fold): read it whole and keep the unseen.
                    entries, offset, lines, torn = self._scan(fd, 0, 0)
                    new = entries if from_start else [e for e in entries if e.id not in self._seen]
                    seen = {entry.id for entry in entries}
                else:
                    new, offset, lines, torn = self._scan(fd, self._offset, self._lines)
                    seen = self._seen | {entry.id for entry in new}
            except OSError as exc:
                os.close(fd)
                raise LearnLogError(f"learning.log {self.path}: cannot read: {exc}") from exc
            except BaseException:
                os.close(fd)
                raise
            if torn and attempt == 0:
                os.close(fd)
                self._repair_now()  # a writer mid-write finishes first; a dead one's line is dropped
                continue
            self._reset(fd)
            self._offset, self._lines, self._seen = offset, lines, seen
            return new
        raise AssertionError("unreachable")

    def _repair_now(self) -> None:
        try:
            with self._locked(create=False) as fd:
                self._repair(fd)
        except (LearnLogError, FileNotFoundError):
            pass  # gone, or cannot write here (read-only): the torn line is only dropped, not truncated

    def _reset(self, fd: int | None) -> None:
        if self._fd is not None and self._fd != fd:
            os.close(self._fd)
        self._fd = fd
        if fd is None:
            self._offset, self._lines, self._seen = 0, 0, set()

    def read_all(self) -> list[LogEntry]:
        with self._lock:
            return self._read(from_start=True)

    def read_new(self) -> list[LogEntry]:
        with self._lock:
            return self._read(from_start=False)

    def admit(self, source: str, limit: int, window_s: float = 60.0) -> float:
        return self._window.admit(source, limit, window_s)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": self.name, "path": str(self.path), "entries": len(self._seen),
                    "bytes": self._offset, "rate_limit": "per process"}

    def close(self) -> None:
        with self._lock:
            self._reset(None)

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:  # not closed: let the descriptor go with the object
            try:
                os.close(fd)
            except OSError:
                pass


LogFactory = Callable[[LearningConfig, Path, "StateConfig | None"], LearnLog]


def _file(config: LearningConfig, index_path: Path, state: StateConfig | None) -> LearnLog:
    return FileLog(Path(config.log).expanduser() if config.log else Path(f"{index_path}.learned.jsonl"))


def _memory(config: LearningConfig, index_path: Path, state: StateConfig | None) -> LearnLog:
    return MemoryLog()


def _redis(config: LearningConfig, index_path: Path, state: StateConfig | None) -> LearnLog:
    from router.learn._redis_log import RedisLog

    if state is None or state.scheme not in ("redis", "rediss"):
        raise LearnLogError("the redis learning log needs a redis:// state (router serve --state redis://...)")
    return RedisLog(state, index_path.name)


LEARN_LOGS: Registry[LogFactory] = Registry("learning log backend", "learning.log", {
    "file": _file,
    "memory": _memory,
    "redis": _redis,
})


def build_log(config: LearningConfig, index_path: str | os.PathLike[str],
              state: StateConfig | None = None) -> LearnLog:
    """The log of the index at ``index_path`` (its name path, e.g. ``indexes/default``): in Redis when
    ``state`` is a ``redis://`` state (shared by every replica), else the file ``config.log`` or
    ``<index_path>.learned.jsonl``."""
    path = Path(index_path)
    backend = "redis" if state is not None and state.scheme in ("redis", "rediss") else "file"
    return LEARN_LOGS.get(backend)(config, path, state)
