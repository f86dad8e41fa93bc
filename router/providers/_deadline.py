"""A time budget shared by the models of a chain: each model runs within its *slot*.

The dispatcher gives each dispatch one ``Deadline`` (``dispatch_timeout_s``); the chain asks it for
the slot of the model it is about to try. How the budget is shared, and the start-up check that a
plan fits it, are described in ``router/dispatch/_deadline.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.providers._chain import Target

# An attempt with less than this left in its slot is not sent: it could not be answered in time.
MIN_ATTEMPT_S = 0.1


def _now() -> float:
    # The loop's clock, the one asyncio.timeout uses.
    return asyncio.get_running_loop().time()


@dataclass
class Slot:
    """One model's share of a dispatch's time; ``end`` on the event loop's clock."""

    end: float

    def left(self) -> float:
        return self.end - _now()

    def fits(self, wait_s: float) -> bool:
        """Whether a retry after ``wait_s`` still leaves an attempt its minimum in this slot."""
        return wait_s + MIN_ATTEMPT_S <= self.left()


@dataclass
class Deadline:
    """The time left to one dispatch or approval. Create it on the loop that runs the dispatch.

    ``handler_s`` is reserved while the handler is still ahead; ``later`` lists the models of a
    later stage (formatting), which keep their share while an earlier stage runs.
    """

    seconds: float
    handler_s: float = 0.0
    later: Sequence[Target] = field(default_factory=list)
    end: float = field(init=False)

    def __post_init__(self) -> None:
        self.end = _now() + self.seconds

    def left(self) -> float:
        return self.end - _now()

    def handler_done(self) -> None:
        """The handler has run: its reserve is free, and the later stage (formatting) is now the current one."""
        self.handler_s = 0.0
        self.later = []

    def slot(self, ahead: Sequence[Target]) -> Slot:
        """The slot of ``ahead[0]``; ``ahead`` is the current chain from that model on."""
        refs = [*ahead, *self.later]
        available = self.left() - self.handler_s
        share = available * ahead[0].timeout_s / sum(r.timeout_s for r in refs)
        return Slot(_now() + share)
