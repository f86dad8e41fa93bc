"""The learner's view of its log: every entry folded in log order, and what is to be trained or held out.

Two replicas may log contradicting items at the same moment: the first in the log wins, unless the later
one is a person's override, which supersedes it. An entry for an intent the index cannot learn (a rebuild
dropped it, a replica serves another intent set, a hand edit) is skipped with a warning and counted, never
allowed to stop the load or the learning of every later entry.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from router.learn._entry import LogEntry, normalise
from router.learn._guard import FeedbackGuard, Known

log = logging.getLogger("router.learn")


class Ledger:
    def __init__(self, guard: FeedbackGuard, learnable: Collection[str], max_pending_review: int) -> None:
        self.guard = guard
        self.learnable = frozenset(learnable)
        self.max_pending_review = max_pending_review
        self.built: Mapping[str, Known] = dict(guard.labels)  # the labels of the index's own examples
        self.entries: dict[str, LogEntry] = {}  # every learn entry taken, by id
        self.order: list[str] = []  # their ids, in log order (superseded ones removed)
        self.by_text: dict[str, str] = {}  # normalised text -> the learn entry that defines it
        self.folded: set[str] = set()  # entries already in the index (its learned.jsonl)
        self.reviews: dict[str, LogEntry] = {}  # pending review, oldest first
        self.skipped = 0
        self.generation = 0  # bumped by every change to what is trained or held out

    def fold_in(self, entries: list[LogEntry]) -> None:
        """The index's own learned entries (``learned.jsonl``): their rows are in the index already."""
        for entry in entries:
            self.folded.add(entry.id)
            self.take(entry)
        self.built = dict(self.guard.labels)  # an override of a folded entry masks its row as a built one's

    def take(self, entry: LogEntry) -> None:
        if entry.op == "review":
            if entry.id not in self.reviews and entry.id not in self.entries:
                self.reviews[entry.id] = entry
                while len(self.reviews) > self.max_pending_review:
                    self.reviews.pop(next(iter(self.reviews)))
            return
        if entry.review_id is not None:
            self.reviews.pop(entry.review_id, None)
        if entry.op == "reject" or entry.id in self.entries:
            return
        if not entry.out_of_scope and entry.intent not in self.learnable:
            self.skipped += 1
            log.warning("router: learned entry %s names intent %r, which this index cannot learn (not one of its "
                        "intents with examples: rebuilt without it?): skipped", entry.id, entry.intent)
            return
        key = normalise(entry.text)
        earlier = self.by_text.get(key)
        if earlier is not None:
            if self.entries[earlier].label == entry.label and not entry.override:
                return
            if not entry.override:
                self.skipped += 1
                log.warning("router: learned entry %s (%r -> %s) contradicts entry %s (%s), logged first: skipped",
                            entry.id, entry.text[:60], entry.label, earlier, self.entries[earlier].label)
                return
            self.order.remove(earlier)  # superseded by a person's override
        elif key in self.built and self.built[key].label != entry.label and not entry.override:
            self.skipped += 1
            log.warning("router: learned entry %s (%r -> %s) contradicts %s %s: skipped", entry.id,
                        entry.text[:60], entry.label, self.built[key].where, self.built[key].label)
            return
        self.entries[entry.id] = entry
        self.order.append(entry.id)
        self.by_text[key] = entry.id
        self.guard.record(entry)
        self.generation += 1

    def split(self) -> tuple[list[LogEntry], list[LogEntry]]:
        """(trained, held out) learn entries, in log order."""
        entries = [self.entries[i] for i in self.order]
        return [e for e in entries if not e.heldout], [e for e in entries if e.heldout]
