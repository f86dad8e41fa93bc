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
The ``Deadline`` and its slots live with the chain (``router/providers/_deadline.py``); the start-up
check is here. The HTTP service applies ``request_timeout_s + dispatch_timeout_s`` to the dispatch routes (the
first term covers what runs outside the dispatcher, such as classification), so its request
timeout never fires in the middle of a chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.dispatch._config import ModelRef
from router.errors import ConfigError

# The least time worth giving one model of a chain at the start of a dispatch (checked at start-up).
MIN_SLOT_S = 1.0


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
