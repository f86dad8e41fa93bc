"""One time budget per dispatch: its model calls, retry waits and handler all fit in ``dispatch_timeout_s``.

The choice: the chain is cut to fit the budget, rather than the budget grown to fit the chain. The
worst case of a chain (every model, every retry, every Retry-After wait) is many minutes with the
shipped model-routing file, which no client waits for; a fixed budget is what a client can plan on.

How a dispatch (``POST /v1/dispatch``) or an approval (``.../approve``) spends its budget, from its start:

- The handler keeps its whole ``handler_timeout_s``: it is reserved until the handler has run.
- The rest is shared among the models still ahead, in proportion to their ``timeout_s``: the
  current stage's chain from the model being tried, then the later stage's chain (formatting,
  after the handler). A model's share is its *slot*. Its attempts and its retry waits all happen
  within the slot, each attempt bounded by ``min(timeout_s, what is left of the slot)``.
- So when everything fits, each attempt gets its full ``timeout_s`` and retries use the slack.
  When it does not, attempts are cut, and a retry whose wait would eat into the next model's share
  is not made: the fallback is always tried. A slot's unused time goes to the models after it.
- An extraction re-ask is not planned for: it runs in what is left.

A configuration where, at the start of a dispatch, some model's slot would be under ``MIN_SLOT_S``
(or under its own ``timeout_s`` if that is smaller) is refused by ``check`` with a ``ConfigError``.
The HTTP service applies ``request_timeout_s + dispatch_timeout_s`` to the dispatch routes (the
first term covers what runs outside the dispatcher, such as classification), so its request
timeout never fires in the middle of a chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from router.dispatch.config import ModelRef
from router.errors import ConfigError

# The least time worth giving one model of a chain at the start of a dispatch (checked at start-up).
MIN_SLOT_S = 1.0
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
    later: list[ModelRef] = field(default_factory=list)
    end: float = field(init=False)

    def __post_init__(self) -> None:
        self.end = _now() + self.seconds

    def left(self) -> float:
        return self.end - _now()

    def handler_done(self) -> None:
        """The handler has run: its reserve is free, and the later stage (formatting) is now the current one."""
        self.handler_s = 0.0
        self.later = []

    def slot(self, ahead: Sequence[ModelRef]) -> Slot:
        """The slot of ``ahead[0]``; ``ahead`` is the current chain from that model on."""
        refs = [*ahead, *self.later]
        available = self.left() - self.handler_s
        share = available * ahead[0].timeout_s / sum(r.timeout_s for r in refs)
        return Slot(_now() + share)


def check(seconds: float, handler_s: float, refs: Sequence[ModelRef], where: str) -> None:
    """Refuse a plan (a handler and the models of a dispatch) that cannot fit in ``seconds``.

    ``refs`` are all the models the plan may call, in order; ``where`` names the skill and route.
    """
    handler = f"handler_timeout_s={handler_s:g}" if handler_s else ""
    if not refs:
        if handler_s >= seconds:
            raise ConfigError(f"dispatch_timeout_s={seconds:g} is too short for {where}: it must hold {handler}; "
                              "raise dispatch_timeout_s or lower handler_timeout_s")
        return
    total = sum(r.timeout_s for r in refs)
    # The budget each model needs for its share to reach its floor, min(MIN_SLOT_S, its timeout_s).
    needed = handler_s + min(total, max(min(MIN_SLOT_S, r.timeout_s) * total / r.timeout_s for r in refs))
    if seconds >= needed:
        return
    models = ", ".join(f"{r.key} timeout_s={r.timeout_s:g}" for r in refs)
    parts = " plus " if handler else ""
    raise ConfigError(
        f"dispatch_timeout_s={seconds:g} is too short for {where}: it must hold {handler}{parts}"
        f"at least {MIN_SLOT_S:g}s for each model it may call ({models}), shared in proportion to their "
        f"timeout_s; it needs at least {needed:.3g}s. Raise dispatch_timeout_s"
        + (", or lower handler_timeout_s or the models' timeout_s" if handler else ", or lower the models' timeout_s"))
