"""Held-out evidence for calibration, in any vector space (the transformer's or the static table's).

With a validation split the head is trained on every example and scored on the split. Without
one, k heads are trained on stratified folds and each scores its own left-out fold (plus a share
of the out-of-scope examples). The fold assignment is fixed by a seed, so the rows of two vector
spaces line up and the static and transformer tiers can be calibrated jointly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router._head import LinearHead
from router._scoring import acceptance_score, class_max_similarity

TrainFn = Callable[[np.ndarray, np.ndarray], LinearHead]


@dataclass
class Evidence:
    best: np.ndarray  # the head's best class per held-out query
    score: np.ndarray  # acceptance score: top probability × similarity to that class's nearest example
    top_similarity: np.ndarray  # similarity to the nearest example of the best class
    nearest: np.ndarray  # similarity to the nearest example of any class
    truth: np.ndarray  # true class, -1 for out-of-scope

    @property
    def correct(self) -> np.ndarray:
        result: np.ndarray = self.best == self.truth
        return result

    @property
    def is_oos(self) -> np.ndarray:
        result: np.ndarray = self.truth < 0
        return result


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def group_by_class(vectors: np.ndarray, classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by class (stable) and the offsets of each class's block."""
    order = np.argsort(classes, kind="stable")
    counts = np.bincount(classes, minlength=n_classes)
    return np.ascontiguousarray(vectors[order]), np.concatenate([[0], np.cumsum(counts)])


def score_queries(head: LinearHead, examples: np.ndarray, offsets: np.ndarray, queries: np.ndarray,
                  truth: np.ndarray) -> Evidence:
    probs = head.probabilities(queries)
    best = probs.argmax(axis=1)
    sims = queries @ examples.T
    per_class = class_max_similarity(sims, offsets)
    rows = np.arange(len(queries))
    top = per_class[rows, best]
    return Evidence(best, acceptance_score(probs[rows, best], top), top, sims.max(axis=1), truth)


def heldout_evidence(train: TrainFn, vectors: np.ndarray, classes: np.ndarray, n_classes: int,
                     oos_vectors: np.ndarray, validation: tuple[np.ndarray, np.ndarray] | None,
                     folds: int, on_fold: Callable[[], None] | None = None) -> Evidence:
    """``validation`` is (vectors, true classes with -1 for out-of-scope), or None to cross-fit
    (``on_fold`` is then called after each fold: a progress bar's tick)."""
    if validation is not None:
        head = train(vectors, classes)
        examples, offsets = group_by_class(vectors, classes, n_classes)
        return score_queries(head, examples, offsets, *validation)
    fold = stratified_folds(classes, folds)
    oos_fold = np.arange(len(oos_vectors)) % folds
    parts = []
    for f in range(folds):
        keep = fold != f
        head = train(vectors[keep], classes[keep])
        examples, offsets = group_by_class(vectors[keep], classes[keep], n_classes)
        held = np.vstack([vectors[~keep], oos_vectors[oos_fold == f]])
        truth = np.concatenate([classes[~keep], np.full(int((oos_fold == f).sum()), -1)])
        parts.append(score_queries(head, examples, offsets, held, truth))
        if on_fold is not None:
            on_fold()
    return Evidence(*(np.concatenate([getattr(p, k) for p in parts])
                      for k in ("best", "score", "top_similarity", "nearest", "truth")))


HELDOUT_FILE = "heldout.npz"


@dataclass
class HeldoutSet:
    """The calibration split as the build scored it, kept in the index (``heldout.npz``): learning re-checks
    precision on it after each refit (router/learn/), minus any row that has since been learned from.

    Rows: the validation split plus the out-of-scope training examples it was calibrated with."""

    vectors: np.ndarray  # the transformer's
    static_vectors: np.ndarray | None  # the static table's, when the index has that tier
    truth: np.ndarray  # class index, -1 for out of scope
    digests: np.ndarray  # router.learn digest() of each row's text

    def save(self, folder: Path) -> None:
        arrays = {"vectors": self.vectors, "truth": self.truth, "digests": self.digests}
        if self.static_vectors is not None:
            arrays["static_vectors"] = self.static_vectors
        np.savez(folder / HELDOUT_FILE, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, folder: Path) -> HeldoutSet:
        with np.load(folder / HELDOUT_FILE) as data:
            static = np.ascontiguousarray(data["static_vectors"]) if "static_vectors" in data.files else None
            return cls(np.ascontiguousarray(data["vectors"]), static, data["truth"], data["digests"])
