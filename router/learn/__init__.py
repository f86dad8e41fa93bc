"""Learning from feedback and escalations: corrections and confident tier-2 answers become examples.

Feedback (``Router.learn``, ``POST /v1/feedback``, the review queue) is checked (``_guard.py``), appended
to a durable log (``_log.py``: a JSON-lines file beside the index, or a Redis stream shared by replicas),
then learned off the request path (``_learner.py``): the new example vectors join the vector index and
both heads are refitted from their current weights (``_apply.py``). Precision is re-checked on held-out
rows that were never trained on (``_check.py``) before the new state is swapped in, in one assignment.
``router build --compact`` folds the log into a new index version (``_compact.py``).

Only the config and the log entry are imported here: ``router._config`` needs them, and the rest
imports the Router.
"""

from importlib import import_module
from typing import Any

from router.learn._config import LearningConfig
from router.learn._entry import LogEntry, digest, normalise

_LAZY = {
    "Learner": "router.learn._learner", "LearnResult": "router.learn._learner",
    "ApplyReport": "router.learn._learner", "ReviewItem": "router.learn._learner",
    "LearnLog": "router.learn._log", "LEARN_LOGS": "router.learn._log", "build_log": "router.learn._log",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'router.learn' has no attribute {name!r}")


__all__ = ["LearningConfig", "LogEntry", "normalise", "digest", "Learner", "LearnResult", "ApplyReport",
           "ReviewItem", "LearnLog", "LEARN_LOGS", "build_log"]
