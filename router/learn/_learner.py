"""The Learner: takes feedback, keeps it in the log, learns it off the request path, swaps the result in.

One per served Router. ``submit`` checks an item (``_guard.py``) and appends it to the log; ``apply``
reads what the log holds that is not served yet (this process's items, and with a shared log other
replicas' too), refits (``_apply.py``), re-checks precision on held-out rows (``_check.py``) and installs
the new state in the Router with one assignment: a classify call in flight keeps the state it started on.
The log is replayed in full when the Router loads, so a restart serves what was learned before it.

Threads: ``submit`` may be called from any thread (the service calls it off its event loop); ``apply``
runs one at a time, in the caller's thread (``Router.learn``) or in the Learner's worker (``_worker.py``).
The log's entries, in order, are the ledger's (``_ledger.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from router._artifact import read_learned_lines
from router._decision import TIER_LLM, Decision
from router._intents import OOS
from router.errors import (
    FeedbackConflict,
    FeedbackNotAllowed,
    FeedbackRateLimited,
    InputError,
    LearningError,
    ReviewError,
)
from router.learn._apply import Refitter
from router.learn._check import check, check_rows
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry, digest, normalise
from router.learn._guard import FeedbackGuard
from router.learn._ledger import Ledger
from router.learn._worker import Worker

if TYPE_CHECKING:
    from router._router import Router
    from router.learn._log import LearnLog

log = logging.getLogger("router.learn")

Status = Literal["queued", "held_out", "learned", "refused", "duplicate"]


@dataclass
class LearnResult:
    """One feedback item: ``queued`` (logged, to be learned), ``held_out`` (logged, kept for the precision
    check), ``learned`` (now served), ``refused`` (logged, but the precision check refused the state that
    would have served it), ``duplicate`` (already an example with that label: nothing logged)."""

    id: str
    status: Status
    intent: str | None
    out_of_scope: bool
    source: str
    decision_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ApplyReport:
    """One refit, check and swap (or not: ``reason`` says why)."""

    n_new: int
    n_learned: int
    n_heldout: int
    n_out_of_scope: int
    swapped: bool
    reason: str
    seconds: float
    check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReviewItem:
    id: str
    text: str
    intent: str | None
    out_of_scope: bool
    confidence: float | None
    decision_id: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, entry: LogEntry) -> ReviewItem:
        return cls(entry.id, entry.text, entry.intent, entry.out_of_scope, entry.confidence, entry.decision_id,
                   entry.at)


def in_reservoir(text: str, share: float) -> bool:
    """Held out by a hash of the normalised text: the same on every replica, and on every restart."""
    return share > 0 and int(digest(text), 16) % 10_000 < share * 10_000


class Learner:
    def __init__(self, router: Router, config: LearningConfig, learn_log: LearnLog,
                 protected: Collection[str] = ()) -> None:
        self.router = router
        self.config = config
        self.log = learn_log
        base = router.artifact
        self._base = base
        self._refitter = Refitter(base, router.encoder, config)
        self.guard = FeedbackGuard(base.intents, base.head_intents, router.limits.max_text_chars, protected)
        self.ledger = Ledger(self.guard, base.head_intents, config.max_pending_review)
        self._target = base.manifest.calibration.target_precision
        self._oos_prior = base.config.calibration.oos_prior
        self._lock = threading.RLock()  # the ledger
        self._submit_lock = threading.Lock()  # check-then-append, one item at a time
        self._apply_lock = threading.Lock()
        self._applied = threading.Condition()
        self._attempted = -1  # the ledger generation of the last apply that refitted (or found nothing to do)
        self._served: frozenset[str] = frozenset()
        self._offers: deque[tuple[str, Decision]] = deque()
        self._worker = Worker(self.apply, config.apply_delay_s)
        self._logged = 0  # entries this learner appended ...
        self._learned_upto = 0  # ... of which an apply has read this many
        self.applies = 0
        self.refused = 0
        self.dropped_offers = 0
        self.last_apply: ApplyReport | None = None
        # Called with each report of an apply that refitted (swapped or refused): the service's metrics.
        self.on_apply: list[Callable[[ApplyReport], None]] = []
        folded = [LogEntry.model_validate_json(line) for line in read_learned_lines(base).splitlines() if line.strip()]
        self.ledger.fold_in(folded)
        # Folded in-scope entries are rows of the index: served already. Folded out-of-scope ones are not arrays
        # of the index, so the first apply (below) learns them again.
        self._served = frozenset(e.id for e in folded if e.id in self.ledger.entries and not e.out_of_scope
                                 and not e.heldout)
        if not any(e.out_of_scope for e in folded):
            self._attempted = self.ledger.generation
        with self._lock:
            for entry in self.log.read_all():
                self.ledger.take(entry)
        if self.ledger.generation != self._attempted:
            self.apply()

    # -- feedback in ---------------------------------------------------------------------------------
    def submit(self, text: object, intent: object = None, *, out_of_scope: object = False, source: object = "human",
               override: object = False, decision_id: str | None = None, by: str | None = None) -> LearnResult:
        """Check one feedback item and append it to the log (durable when this returns). Raises InputError,
        UnknownIntent, FeedbackConflict, FeedbackNotAllowed or FeedbackRateLimited; nothing is logged then."""
        self._feedback_on()
        return self._submit(text, intent, out_of_scope, source, override, decision_id, by, None)

    def _feedback_on(self) -> None:
        if not self.config.feedback:
            raise FeedbackNotAllowed("feedback is off for this router (learning.feedback: false; "
                                     "router serve --feedback on)")

    def _submit(self, text: object, intent: object, out_of_scope: object, source: object, override: object,
                decision_id: str | None, by: str | None, confidence: float | None,
                review_id: str | None = None) -> LearnResult:
        with self._submit_lock:
            label = self.guard.check(text, intent, out_of_scope, source, override)
            assert isinstance(text, str) and (source == "human" or source == "llm")
            oos = label == OOS
            if self.guard.duplicate(text, label) and review_id is None:
                return LearnResult("", "duplicate", None if oos else label, oos, source, decision_id)
            self._check_room(1)
            if review_id is None:
                self._admit(source, 1)
            heldout = not override and in_reservoir(text, self.config.reservoir_share)
            entry = LogEntry(op="learn", text=text, intent=None if oos else label, out_of_scope=oos,
                             source=source, heldout=heldout, override=bool(override), decision_id=decision_id,
                             confidence=confidence, review_id=review_id, by=by)
            self._append([entry])
        return LearnResult(entry.id, "held_out" if heldout else "queued", entry.intent, oos, source, decision_id)

    def _append(self, entries: list[LogEntry]) -> None:
        """Log ``entries`` (under the submit lock) and let the guard know them: a contradicting item after
        them is refused at once, before any apply has read them back."""
        self.log.append(entries)
        self._logged += len(entries)
        for entry in entries:
            if entry.op == "learn":
                self.guard.record(entry)
        self._worker.wake()

    def _admit(self, source: str, n: int) -> None:
        for _ in range(n):
            wait = self.log.admit(source, self.config.max_per_minute)
            if wait > 0:
                raise FeedbackRateLimited(source, self.config.max_per_minute, wait)

    def _check_room(self, n: int) -> None:
        # Entries read by an apply, plus this process's logged since: a burst between applies counts too.
        ledger = self.ledger
        unfolded = len(ledger.entries) - len(ledger.folded) + self._logged - self._learned_upto
        if unfolded + n > self.config.max_learned:
            raise FeedbackNotAllowed(f"learning.max_learned={self.config.max_learned:,} learned examples are "
                                     "waiting in the log: fold them into the index with "
                                     "`router build --compact`, then reload")

    def submit_many(self, items: Sequence[tuple[str, str | None]], source: str = "human") -> list[LearnResult]:
        """Check every ``(text, intent)`` pair (intent None: out of scope), against the index and each other,
        then log them all in one append: either every item is taken or none is."""
        self._feedback_on()
        with self._submit_lock:
            seen: dict[str, str] = {}
            entries: list[LogEntry] = []
            results: list[LearnResult] = []
            for text, intent in items:
                label = self.guard.check(text, intent, intent is None, source, False)
                assert source == "human" or source == "llm"
                key = normalise(text)
                if seen.get(key, label) != label:
                    raise FeedbackConflict(text, seen[key], label, "in this batch")
                oos = label == OOS
                if key in seen or self.guard.duplicate(text, label):
                    results.append(LearnResult("", "duplicate", None if oos else label, oos, source))
                    continue
                seen[key] = label
                heldout = in_reservoir(text, self.config.reservoir_share)
                entries.append(LogEntry(op="learn", text=text, intent=None if oos else label, out_of_scope=oos,
                                        source=source, heldout=heldout))
                results.append(LearnResult(entries[-1].id, "held_out" if heldout else "queued",
                                           None if oos else label, oos, source))
            self._check_room(len(entries))
            self._admit(source, len(entries))
            self._append(entries)
        return results

    @property
    def watching(self) -> bool:
        """Whether tier 2's answers are offered here (``mode`` review or auto)."""
        return self.config.mode != "off"

    def offer(self, text: str, decision: Decision) -> None:
        """A Decision the router made: a confident tier-2 answer is queued for learning (``auto``) or review
        (``review``). Never blocks and never raises: the worker logs it."""
        if self.config.mode == "off" or decision.tier != TIER_LLM or decision.degraded:
            return
        if decision.confidence < self.config.min_llm_confidence or not (decision.accepted or decision.out_of_scope):
            return
        if len(self._offers) >= self.config.max_pending_review:  # the worker is far behind: counted, not queued
            self.dropped_offers += 1
            return
        self._offers.append((text, decision))
        self._worker.start()
        self._worker.wake()

    def _flush_offers(self) -> None:
        # An offer leaves the queue only once it is logged (or dropped): ``wait_applied`` sees it until then.
        while self._offers:
            text, d = self._offers[0]
            intent = None if d.out_of_scope else d.intent
            try:
                if self.config.mode == "auto":
                    self._submit(text, intent, d.out_of_scope, "llm", False, d.id, None, d.confidence)
                else:
                    self._queue_review(text, intent, d)
            except (LearningError, InputError) as exc:
                self.dropped_offers += 1
                log.info("router: tier-2 answer for %r not learned: %s", text[:60], exc)
            finally:
                self._offers.popleft()

    # -- review ------------------------------------------------------------------------------------
    def _queue_review(self, text: str, intent: str | None, d: Decision) -> None:
        with self._submit_lock:
            label = self.guard.check(text, intent, d.out_of_scope, "llm", False)
            if self.guard.duplicate(text, label):
                return
            key = normalise(text)
            with self._lock:
                if any(normalise(r.text) == key for r in self.ledger.reviews.values()):
                    return  # already waiting for a person
            entry = LogEntry(op="review", text=text, intent=intent, out_of_scope=d.out_of_scope, source="llm",
                             decision_id=d.id, confidence=d.confidence)
            self._append([entry])
            with self._lock:
                self.ledger.take(entry)

    def pending_review(self) -> list[ReviewItem]:
        with self._lock:
            return [ReviewItem.of(e) for e in self.ledger.reviews.values()]

    def _pop_review(self, review_id: str) -> LogEntry:
        with self._lock:
            entry = self.ledger.reviews.pop(review_id, None)
        if entry is None:
            raise ReviewError(f"review id {review_id!r:.60} is unknown, or already approved or rejected "
                              "(GET /v1/review lists the pending ones)")
        return entry

    def approve(self, review_id: str, by: str | None = None) -> LearnResult:
        """A person confirms a tier-2 answer: it is learned as ``source="human"``. Decided once: an approve and
        a reject of the same id cannot both succeed."""
        with self._submit_lock:
            item = self._pop_review(review_id)
        try:
            return self._submit(item.text, item.intent, item.out_of_scope, "human", False, item.decision_id, by,
                                item.confidence, review_id=review_id)
        except BaseException:
            with self._lock:  # not learned (a conflict since): still waiting for a decision
                self.ledger.reviews[review_id] = item
            raise

    def reject(self, review_id: str, by: str | None = None) -> ReviewItem:
        with self._submit_lock:
            item = self._pop_review(review_id)
            self._append([LogEntry(op="reject", review_id=review_id, by=by, source="human")])
        return ReviewItem.of(item)

    # -- learning ------------------------------------------------------------------------------------
    def _split(self) -> tuple[list[LogEntry], list[LogEntry]]:
        with self._lock:
            return self.ledger.split()

    def apply(self) -> ApplyReport:
        """Learn what the log holds that is not served yet: refit, check, swap. One at a time. An error in the
        refit leaves the batch to be tried again by the next apply (and is raised here)."""
        try:
            with self._apply_lock:
                return self._apply()
        finally:
            with self._applied:
                self._applied.notify_all()

    def _apply(self) -> ApplyReport:
        started = time.perf_counter()
        self._flush_offers()
        upto = self._logged
        new = self.log.read_new()
        with self._lock:
            for entry in new:
                self.ledger.take(entry)
            generation = self.ledger.generation
        if generation == self._attempted:  # the idle poll's path: O(1)
            self._learned_upto = upto
            return self._report(len(new), False, "nothing new to learn", started)
        trained, heldout = self._split()
        trained_ids = frozenset(e.id for e in trained)
        if trained_ids == self._served:
            # Only held-out items are new: nothing to train on, and the serving state holds every trained item.
            # A refit would move the heads for nothing (each one starts a fresh optimiser).
            self._attempted, self._learned_upto = generation, upto
            return self._report(len(new), False, "only held-out items are new: the serving state is unchanged",
                                started)
        serving = self.router.artifact
        # Folded in-scope entries are rows of the index already; folded out-of-scope ones are not.
        to_add = [e for e in trained if e.id not in self.ledger.folded or e.out_of_scope]
        candidate = self._refitter.state(serving, to_add, self._refitter.masked(to_add, self.ledger.built))
        rows, from_split = check_rows(self._base, self._refitter, trained, heldout, self.config.reservoir_share)
        result = check(candidate, serving, rows, from_split, self._target, self._oos_prior, self.config.min_check)
        if result.passed:
            self.router._install(candidate)
            self._served = trained_ids
        else:
            self.refused += 1
            log.error("router: learned state refused, still serving the previous one: %s", result.reason)
        self._attempted, self._learned_upto = generation, upto  # only now: a refit that raised is tried again
        self.applies += 1
        report = self._report(len(new), result.passed, result.reason, started, result.figures or None)
        self.last_apply = report
        for callback in self.on_apply:
            callback(report)
        return report

    def _report(self, n_new: int, swapped: bool, reason: str, started: float,
                figures: dict[str, Any] | None = None) -> ApplyReport:
        trained, heldout = self._split()
        return ApplyReport(n_new, len(trained), len(heldout), sum(e.out_of_scope for e in trained), swapped, reason,
                           round(time.perf_counter() - started, 3), figures)

    def wait_applied(self, timeout: float | None = None) -> ApplyReport | None:
        """Until everything logged so far is learned or refused (the worker's apply, or one here when no
        worker runs). Returns the last report, or None at the timeout."""
        if not self._worker.running:
            return self.apply()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._applied:
            while self._offers or self._learned_upto < self._logged:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._worker.wake()
                self._applied.wait(timeout=0.5 if left is None else min(left, 0.5))
        if self.last_apply is not None:
            return self.last_apply
        return self._report(0, False, "nothing new to learn", time.perf_counter())

    # -- the worker ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Apply in a background thread (``_worker.py``): after a burst of feedback, and every second to pick
        up other replicas' items from a shared log."""
        self._worker.start()

    def wake(self) -> None:
        self._worker.wake()

    def close(self) -> None:
        self._worker.close()
        self.log.close()

    # -- reports -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        trained, heldout = self._split()
        with self._lock:
            pending, skipped, folded = len(self.ledger.reviews), self.ledger.skipped, len(self.ledger.folded)
        return {
            "mode": self.config.mode, "feedback": self.config.feedback, "log": self.log.describe(),
            "n_learned": len(trained), "n_heldout": len(heldout),
            "n_out_of_scope": sum(e.out_of_scope for e in trained),
            "n_folded": folded, "n_pending_review": pending, "n_skipped": skipped,
            "n_waiting": self._logged - self._learned_upto + len(self._offers),
            "n_unserved": len({e.id for e in trained} - self._served),
            "applies": self.applies, "refused": self.refused, "dropped_offers": self.dropped_offers,
            "last_apply": None if self.last_apply is None else self.last_apply.to_dict(),
        }

    def served(self, entry_id: str) -> bool:
        return entry_id in self._served

    def folding(self) -> tuple[list[LogEntry], list[LogEntry]]:
        """What a compaction folds into the index: the trained entries the serving state holds (and every one
        folded before: its row is in the index even when the state serving now was refused), and the held out."""
        trained, heldout = self._split()
        folded = self.ledger.folded
        return [e for e in trained if e.id in self._served or e.id in folded], heldout
