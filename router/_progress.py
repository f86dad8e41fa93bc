"""Progress of long work (build stages, the tier-2 gate, eval, bench compare) on stderr, with tqdm.

Long operations take a ``Progress`` and open one named *stage* per step, with a bar where there
is a count (examples encoded, tokens distilled, epochs, folds, queries)::

    progress = make_progress(not args.quiet)  # bars only when stderr is a terminal
    with progress.stage("encode examples", total=len(texts), unit="text") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

``Progress`` itself is the disabled implementation: every call is a no-op, so code that reports
progress never checks whether it is on. ``make_progress`` returns the tqdm-backed one only when
progress is requested and the stream (stderr by default) is a terminal. Nothing is ever written
to stdout, which carries the commands' JSON. Stages are sequential, not nested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Bar:
    """One stage's counter. This base class is the disabled one: it ignores everything."""

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""

    def update_to(self, done: int) -> None:
        """``done`` units done in all."""

    def note(self, text: str) -> None:
        """A short status shown after the bar (e.g. the current dataset)."""


class Progress:
    """Reports the stages of long work. This base class is the disabled (quiet) one."""

    enabled = False

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Iterator[Bar]:
        """A named step; with ``total``, a bar counting ``unit``s up to it."""
        yield _NO_BAR

    def iterate(self, items: Iterable[T], name: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
        """``items``, counted on a stage's bar (``total`` defaults to ``len(items)`` where it has one)."""
        if total is None and isinstance(items, Sized):
            total = len(items)
        with self.stage(name, total, unit) as bar:
            for item in items:
                yield item
                bar.update()

    def line(self, text: str) -> None:
        """A message on its own line (above any open bar)."""


_NO_BAR = Bar()
QUIET = Progress()


class _Tqdm(tqdm):  # type: ignore[misc]  # tqdm ships no type hints: it is Any to mypy
    monitor_interval = 0  # no monitor thread: bars live in one thread, for seconds to minutes


class _TqdmBar(Bar):
    def __init__(self, bar: _Tqdm) -> None:
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def update_to(self, done: int) -> None:
        self._bar.update(done - self._bar.n)

    def note(self, text: str) -> None:
        self._bar.set_postfix_str(text)


def _shape(stream: TextIO) -> tuple[int | None, int | None]:
    """The terminal's (columns, lines), or Nones where the stream has no size (tqdm then leaves
    lines unbounded). A terminal that reports 0 x 0 (a pty nobody sized) gets 80 x 24: from 0 x 0
    tqdm would print empty lines."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None, None
    return size.columns or 80, size.lines or 24


class TqdmProgress(Progress):
    """Bars on ``stream`` (a terminal): one line per stage, left in place when the stage ends."""

    enabled = True

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "it") -> Iterator[Bar]:
        # A stage without a count shows its name and, once done, how long it took.
        fmt = None if total is not None else "{desc} [{elapsed}]"
        columns, lines = _shape(self.stream)  # per stage: the terminal may have been resized
        bar = _Tqdm(total=total, desc=name, unit=unit, file=self.stream, leave=True, mininterval=0.2,
                    bar_format=fmt, ncols=columns, nrows=lines)
        try:
            yield _TqdmBar(bar)
        finally:
            bar.close()

    def line(self, text: str) -> None:
        tqdm.write(text, file=self.stream)


def make_progress(requested: bool | Progress | None = True, stream: TextIO | None = None) -> Progress:
    """The facility for ``requested``: a ``Progress`` is returned as it is; True gives bars on
    ``stream`` (default: ``sys.stderr`` as it is now) only when that is a terminal; False or None
    give the quiet one."""
    if isinstance(requested, Progress):
        return requested
    if not requested:
        return QUIET
    out = sys.stderr if stream is None else stream
    try:
        interactive = out is not None and out.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        interactive = False
    return TqdmProgress(out) if interactive else QUIET
