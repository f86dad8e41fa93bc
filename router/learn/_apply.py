"""A learned state: the index as built plus the learned examples, with both heads refitted.

The built example vectors stay where they are: learned in-scope vectors join each intent's block of
the example matrix (for the nearest-example similarities) and the top layer of a ``LayeredIndex`` (for
the out-of-scope floor's search), so nothing of the base is copied into FAISS again. Each head is
refitted from its current weights, full batch over every example, a learned one weighing
``learned_weight``: a few dozen epochs, seconds on 15,000 examples, never on the request path.
Learned out-of-scope examples become their own block: a query nearer to one of them than to its
best intent's examples is out of scope (and, for a head trained with a reject class, that class
learns them too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router._artifact import IndexArtifact
from router._head import LinearHead, train_head
from router.encoders import Encoder, token_encoder
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry, normalise
from router.learn._guard import Known
from router.static._model import StaticModel
from router.vectors import LayeredIndex, VectorIndex


def _classes(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


@dataclass
class Grouped:
    """Example rows grouped by class (each class: its base rows, then its learned ones in log order)."""

    rows: np.ndarray
    offsets: np.ndarray
    classes: np.ndarray  # each row's class
    learned: np.ndarray  # each row: a learned one (True) or a base one


def _grouped(base: np.ndarray, base_offsets: np.ndarray, extra: np.ndarray, extra_classes: np.ndarray) -> Grouped:
    n_classes = len(base_offsets) - 1
    classes = np.concatenate([_classes(base_offsets), extra_classes]).astype(np.int64)
    learned = np.concatenate([np.zeros(len(base), dtype=bool), np.ones(len(extra), dtype=bool)])
    rows = np.vstack([base, extra]) if len(extra) else base
    order = np.argsort(classes, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(classes, minlength=n_classes))])
    return Grouped(np.ascontiguousarray(rows[order]), offsets, classes[order], learned[order])


class Refitter:
    """Encodes each learned text once, and builds learned states from the base artifact."""

    def __init__(self, base: IndexArtifact, encoder: Encoder, config: LearningConfig) -> None:
        self.base = base
        self.encoder = encoder
        self.config = config
        self._tokens = token_encoder(encoder) if base.static is not None else None
        self._vectors: dict[str, np.ndarray] = {}  # entry id -> the transformer's vector
        self._static: dict[str, np.ndarray] = {}  # entry id -> the static table's vector
        self._class = {name: i for i, name in enumerate(base.head_intents)}

    def encode(self, entries: Sequence[LogEntry]) -> None:
        todo = [e for e in entries if e.id not in self._vectors]
        if not todo:
            return
        texts = [e.text for e in todo]
        if self._tokens is not None and self.base.static is not None:
            ids = self._tokens.token_ids(texts)
            vectors = self._tokens.encode_ids(ids)
            static = self.base.static.table.embed(ids)
            for entry, row in zip(todo, static, strict=True):
                self._static[entry.id] = row
        else:
            vectors = self.encoder.encode(texts)
        for entry, row in zip(todo, vectors, strict=True):
            self._vectors[entry.id] = row

    def vectors(self, entries: Sequence[LogEntry], static: bool = False) -> np.ndarray:
        table = self._static if static else self._vectors
        dim = (self.base.static.examples.shape[1] if static and self.base.static is not None
               else self.base.examples.shape[1])
        if not entries:
            return np.zeros((0, dim), dtype=np.float32)
        return np.vstack([table[e.id] for e in entries]).astype(np.float32)

    def class_of(self, entry: LogEntry) -> int:
        return -1 if entry.out_of_scope or entry.intent is None else self._class[entry.intent]

    def masked(self, entries: Sequence[LogEntry], built: Mapping[str, Known]) -> np.ndarray | None:
        """Base example rows a person's override took away: the built (or folded) example of the old label,
        found by its vector (the same text encodes to the same row)."""
        base = self.base
        mask = None
        for entry in entries:
            known = built.get(normalise(entry.text))
            if not entry.override or known is None or known.label == entry.label or known.label not in self._class:
                continue
            cls = self._class[known.label]
            lo, hi = int(base.offsets[cls]), int(base.offsets[cls + 1])
            self.encode([entry])
            rows = np.flatnonzero(base.examples[lo:hi] @ self._vectors[entry.id] > 0.9999) + lo
            if len(rows):
                mask = np.zeros(len(base.examples), dtype=bool) if mask is None else mask
                mask[rows] = True
        return mask

    def state(self, current: IndexArtifact, trained: Sequence[LogEntry], masked: np.ndarray | None = None
              ) -> IndexArtifact:
        """The base plus ``trained`` (learn entries, in log order, not held out), heads refitted from
        ``current``'s. ``masked``: base example rows an override took away (they no longer train or match)."""
        self.encode(trained)
        base = self.base
        in_scope = [e for e in trained if not e.out_of_scope]
        oos = [e for e in trained if e.out_of_scope]
        learned_classes = np.array([self.class_of(e) for e in in_scope], dtype=np.int64)
        keep = np.ones(len(base.examples), dtype=bool) if masked is None else ~masked
        base_rows, base_offsets = _kept(base.examples, base.offsets, keep)
        grouped = _grouped(base_rows, base_offsets, self.vectors(in_scope), learned_classes)
        oos_vectors = self.vectors(oos)
        head = self._refit(current.head, grouped, oos_vectors)
        # A masked base row stays in the built FAISS index: it only moves the out-of-scope floor's nearest
        # similarity, and an override keeps its text in scope either way.
        vectors: VectorIndex = LayeredIndex(_base_index(base.vectors), self.vectors(in_scope))
        static = None
        if base.static is not None and current.static is not None:
            s_rows, s_offsets = _kept(base.static.examples, base.static.offsets, keep)
            s_grouped = _grouped(s_rows, s_offsets, self.vectors(in_scope, static=True), learned_classes)
            static = StaticModel(base.static.table, self._refit(current.static.head, s_grouped, None),
                                 s_grouped.rows, s_grouped.offsets, self.vectors(oos, static=True) if oos else None)
        return dataclasses.replace(
            base, head=head, examples=grouped.rows, offsets=grouped.offsets, vectors=vectors, static=static,
            oos_examples=oos_vectors if len(oos_vectors) else None)

    def _refit(self, head: LinearHead, grouped: Grouped, oos: np.ndarray | None) -> LinearHead:
        """Warm-started from ``head``; a learned row weighs ``learned_weight``. A head with a reject class
        (a fine-tuned one) also learns the out-of-scope examples as that class."""
        c = self.config
        x, y, learned = grouped.rows, grouped.classes, grouped.learned
        if head.reject and oos is not None and len(oos):
            x = np.vstack([x, oos])
            y = np.concatenate([y, np.full(len(oos), head.n_classes)])
            learned = np.concatenate([learned, np.ones(len(oos), dtype=bool)])
        weight = np.where(learned, c.learned_weight, 1.0)
        return train_head(x, y, int(head.bias.shape[0]), l2=self.base.config.head.l2, epochs=c.refit_epochs,
                          learning_rate=c.refit_lr, init=head, sample_weight=weight)


def _kept(rows: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if keep.all():
        return rows, offsets
    classes = _classes(offsets)[keep]
    counts = np.bincount(classes, minlength=len(offsets) - 1)
    return np.ascontiguousarray(rows[keep]), np.concatenate([[0], np.cumsum(counts)])


def _base_index(index: VectorIndex) -> VectorIndex:
    """The built index under a learned state's top layer (a state is always built from the base's)."""
    return index.base if isinstance(index, LayeredIndex) else index
