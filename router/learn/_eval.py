"""``router eval NAME --learn-from val``: does learning from a reviewer's corrections pay, and at what cost?

The protocol, on a scratch index built as ``router eval`` builds it:

1. **Before.** The test split is evaluated on the index as built: its report is ``before``.
2. **The stream.** The validation split goes through the router one query at a time, as traffic would
   (tiers 0-1, and tier 2 too when it is configured). Each query the router escalated, or answered
   wrongly, is fed back with its gold label as a reviewer would (``source="human"``; the label ``oos``, or a
   label that is not one of the index's intents, as out of scope). Wrong means: accepted as another
   intent, declared out of scope when it is in scope, or accepted as an intent when it is out of scope.
   Learning happens as the stream goes: a refit every ``batch`` (200) fed-back items and one at its end,
   so later queries meet what earlier ones taught. Feedback that contradicts an example (the same text
   with another label) or repeats one is counted (``feedback``), not fatal.
3. **After.** The test split is evaluated again: the usual keys at the top level, ``before`` beside them.

The test split is never fed back: it measures whether what was learned generalises to queries the
router has not seen. A share of the feedback (``learning.reservoir_share``, chosen by a hash of the text)
is held out, never trained on: each refit is swapped in only if precision on it and on the calibration
split (less the texts learned) stays at the target (``learn_check`` has the last check's figures). The
thresholds are not refitted: they stay those the build calibrated.

Keys added to the report: ``before`` (the evaluation keys, measured before any learning);
``escalation_rate`` (test, after; ``before`` has its own: the share of test queries tier 1 escalated);
``stream_escalation_rate`` (the same over the stream, as it went, learning included); ``n_stream``;
``stream_wrong`` (stream queries answered wrongly, not escalated); ``n_fed_back`` and ``feedback`` (the
fed-back items by outcome: queued, held_out, duplicate, conflict, invalid); ``n_learned`` (examples
trained on), ``n_heldout``, ``n_unserved`` (learned but not served: the last check refused them);
``learn_seconds`` (time in refit, check and swap, the encoding of the fed-back texts included);
``learn_applies``; ``learn_check`` (the last refit's ``swapped``, ``reason`` and ``check`` figures).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from router._decision import Decision
from router._evaluation import evaluate
from router._intents import OOS, Labelled, read_labelled
from router._progress import Progress, make_progress
from router.errors import ConfigError, FeedbackConflict, InputError, LearningError, UnknownIntent
from router.learn._config import LearningConfig
from router.llm._gate import was_escalated

if TYPE_CHECKING:
    from router._router import Router, Tiers
    from router.learn._learner import Learner

BATCH = 200  # fed-back items learned in one refit while the stream goes


def scratch_learning(config: LearningConfig, log: str | Path) -> LearningConfig:
    """The learning config of ``router eval``'s scratch index: the index config's own (its reservoir, refit
    and check settings are what is measured), with explicit feedback on, tier 2's answers not learned (the
    reviewer settles escalations), no rate limit to speak of, and the log at ``log`` (a scratch file)."""
    return config.model_copy(update={"mode": "off", "feedback": True, "log": str(log),
                                     "max_per_minute": 1_000_000,
                                     "max_learned": max(config.max_learned, 1_000_000)})


def learn_stream(spec: str, dataset: str | None = None, val: str | None = None) -> Labelled:
    """What ``--learn-from`` names: ``val``, the validation split (the ``--val`` file, else the dataset's), or
    the path of a labelled JSONL/CSV file."""
    if spec != "val":
        return read_labelled(spec)
    if val is not None:
        return read_labelled(val)
    if dataset is None:
        raise ConfigError("--learn-from val needs a validation split: a dataset that has one (clinc150), or "
                          "--val FILE; or give --learn-from a labelled JSONL/CSV file")
    from router.datasets import load_dataset

    split = load_dataset(dataset).val
    if split is None:
        raise ConfigError(f"--learn-from val: dataset {dataset!r} has no validation split; give --learn-from "
                          "a labelled JSONL/CSV file instead")
    return split


def is_wrong(decision: Decision, gold: str) -> bool:
    """Answered, and wrongly: accepted as another intent (an out-of-scope query accepted as any intent), or
    declared out of scope when it is in scope. An escalated query is not answered."""
    if decision.accepted:
        return decision.intent != gold
    return decision.out_of_scope and gold != OOS


def _feed(learner: Learner, text: str, gold: str, decision_id: str) -> str:
    """One item fed back as a reviewer would; its outcome. Refusals a reviewer meets (a contradiction, a
    text over the limits) are counted; a learner that takes no feedback at all raises."""
    oos = gold == OOS
    try:
        result = learner.submit(text, None if oos else gold, out_of_scope=oos, source="human",
                                decision_id=decision_id)
    except FeedbackConflict:
        return "conflict"
    except UnknownIntent:  # the gold labels are mapped onto the index's intents first: not expected
        return "invalid"
    except LearningError:
        raise  # feedback off, rate limited, max_learned: the eval cannot measure learning
    except InputError:
        return "invalid"
    return result.status


def learn_from(router: Router, stream: Labelled, test: Labelled, progress: bool | Progress = False,
               batch: int = BATCH, feed: Literal["missed", "all"] = "missed") -> dict[str, Any]:
    """The protocol of the module docstring on a loaded ``router`` whose learning is on (``Router.load(...,
    learning=LearningConfig(...))``): the test report after learning from ``stream``, with ``before`` and
    the learning keys. ``router`` keeps what it learned (in its log too). ``feed="all"`` feeds back every
    stream query, the right ones too: the ceiling of what the stream can teach (``--learn-feed all``)."""
    learner = router.learning
    if learner is None:
        raise LearningError("learning from a stream needs a Router loaded with learning on: "
                            "Router.load(..., learning=LearningConfig(...)), not learning='off'")
    if not learner.config.feedback:
        raise LearningError("learning from a stream needs learning.feedback: true (it feeds the escalated and "
                            "wrong queries back)")
    if batch < 1:
        raise ConfigError(f"batch={batch}: learn every 1 or more fed-back items")
    show = make_progress(progress)
    before = evaluate(router, test, show)
    before["escalation_rate"] = escalation_rate(before)

    known = set(router.artifact.intents.names)
    tiers: Tiers = "all" if router.tier2 is not None else "local"
    outcomes: Counter[str] = Counter()
    escalated = wrong = waiting = applies = 0
    seconds = 0.0

    def learn() -> None:
        nonlocal seconds, applies, waiting
        started = time.perf_counter()
        learner.apply()
        seconds += time.perf_counter() - started
        applies += 1
        waiting = 0

    pairs = list(zip(stream.texts, stream.labels, strict=True))
    for text, label in show.iterate(pairs, "learn from the stream", unit="query"):
        gold = label if label in known else OOS
        decision = router.classify(text, tiers=tiers)
        if was_escalated(decision):
            escalated += 1
        elif is_wrong(decision, gold):
            wrong += 1
        elif feed == "missed":
            continue
        outcome = _feed(learner, text, gold, decision.id)
        outcomes[outcome] += 1
        if outcome in ("queued", "held_out"):
            waiting += 1
            if waiting >= batch:
                learn()
    if waiting:
        learn()

    result = evaluate(router, test, show)
    result["escalation_rate"] = escalation_rate(result)
    stats = learner.stats()
    last = learner.last_apply
    result.update({
        "before": before,
        "n_stream": len(stream),
        "learn_feed": feed,
        "stream_escalation_rate": round(escalated / len(stream), 4) if len(stream) else None,
        "stream_wrong": wrong,
        "n_fed_back": sum(outcomes.values()),
        "feedback": dict(sorted(outcomes.items())),
        "n_learned": stats["n_learned"],
        "n_heldout": stats["n_heldout"],
        "n_unserved": stats["n_unserved"],
        "learn_seconds": round(seconds, 3),
        "learn_applies": applies,
        "learn_check": None if last is None else {"swapped": last.swapped, "reason": last.reason,
                                                  "check": last.check},
    })
    return result


def escalation_rate(report: dict[str, Any]) -> float:
    """The share of test queries tier 1 escalated: tier 2's own figure when it ran (settled or degraded),
    else the escalated share (the same thing without tier 2)."""
    rate = report.get("escalation_rate")
    return float(rate) if rate is not None else float(report["tier_share"]["escalated"])
