"""The precision check a learned state must pass before it serves: rows it was never trained on.

Rows: the build's calibration split (``heldout.npz``) minus every row whose text has since been learned
from, plus the held-out reservoir of the feedback (``reservoir_share`` of it, chosen by a hash of the
text, never trained on). A reservoir row counts ``1 / reservoir_share`` times: it stands for the feedback
items that were trained on, which left the split. Out-of-scope rows are weighted up to ``oos_prior``, as the
calibration does (router/_calibration.py). The pipeline is replayed as it serves: the static tier with its
thresholds, then tier 1b with its own, learned out-of-scope examples included; the thresholds stay those
the build fitted.

A state is refused when its precision is under the target AND under the serving state's on the same
rows: learning may not bring precision below the target, nor lower it further when the rows (a hard
reservoir) already put the serving state below. Without a calibration split (a cross-fitted build) the
rows are the reservoir alone, and a check with fewer than ``min_check`` accepted answers passes as
unpowered, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router._artifact import IndexArtifact, load_heldout
from router._head import LinearHead
from router._heldout import score_queries
from router.learn._apply import Refitter
from router.learn._entry import LogEntry, digest

_CHUNK = 256  # rows scored at once: a chunk's similarities to 15,000 examples are 15 MB


@dataclass
class Rows:
    vectors: np.ndarray
    static_vectors: np.ndarray | None
    truth: np.ndarray  # class, -1 out of scope
    weight: np.ndarray


def _block_scores(head: LinearHead, examples: np.ndarray, offsets: np.ndarray, oos: np.ndarray | None,
                  x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: best class, acceptance score, similarity to that class's nearest example, to the nearest
    example of any class, and to the nearest learned out-of-scope example (-inf without any)."""
    # The build's own held-out scoring (in float64, as tier 1b scores a query), plus the learned out-of-scope rule.
    e = score_queries(head, examples, offsets, x.astype(np.float64), np.full(len(x), -1))
    oos_near = (x @ oos.T).max(axis=1) if oos is not None and len(oos) else np.full(len(x), -np.inf)
    return e.best, e.score, e.top_similarity, e.nearest, oos_near


def predict(state: IndexArtifact, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """What the pipeline (static tier, then tier 1b) answers for each row: (accepted, predicted class)."""
    accepted = np.zeros(len(rows.truth), dtype=bool)
    predicted = np.full(len(rows.truth), -1)
    cal = state.manifest.calibration
    static_cal = state.manifest.static.calibration if state.manifest.static is not None else None
    for lo in range(0, len(rows.truth), _CHUNK):
        hi = min(lo + _CHUNK, len(rows.truth))
        done = np.zeros(hi - lo, dtype=bool)
        if state.static is not None and static_cal is not None and rows.static_vectors is not None:
            s = state.static
            best, score, top, _, oos_near = _block_scores(s.head, s.examples, s.offsets, s.oos_examples,
                                                          rows.static_vectors[lo:hi])
            done = (score >= static_cal.accept_threshold) & (top >= static_cal.oos_similarity_floor) & (oos_near <= top)
            accepted[lo:hi] = done
            predicted[lo:hi] = np.where(done, best, -1)
        best, score, top, nearest, oos_near = _block_scores(state.head, state.examples, state.offsets,
                                                            state.oos_examples, rows.vectors[lo:hi])
        out = (nearest < cal.oos_similarity_floor) | (oos_near > top)
        take = ~done & ~out & (score >= cal.accept_threshold)
        accepted[lo:hi] |= take
        predicted[lo:hi] = np.where(take, best, predicted[lo:hi])
    return accepted, predicted


def figures(state: IndexArtifact, rows: Rows, oos_prior: float) -> dict[str, Any]:
    accepted, predicted = predict(state, rows)
    is_oos = rows.truth < 0
    weight = rows.weight.astype(np.float64).copy()
    n_in, n_oos = float(weight[~is_oos].sum()), float(weight[is_oos].sum())
    if n_oos and n_in:
        weight[is_oos] *= oos_prior / (1 - oos_prior) * n_in / n_oos
    correct = accepted & (predicted == rows.truth)
    taken = float(weight[accepted].sum())
    return {
        "precision": None if not taken else round(float(weight[correct].sum()) / taken, 6),
        "coverage": None if not n_in else round(float(weight[accepted & ~is_oos].sum()) / n_in, 6),
        "oos_recall": None if not n_oos else round(1 - float(weight[accepted & is_oos].sum() / weight[is_oos].sum()),
                                                   6),
        "accepted": int(accepted.sum()),
        "rows": len(rows.truth),
    }


def check_rows(base: IndexArtifact, refitter: Refitter, trained: Sequence[LogEntry], heldout: Sequence[LogEntry],
               reservoir_share: float) -> tuple[Rows | None, bool]:
    """The rows to check on: the calibration split minus every learned text, plus the reservoir (each of its
    rows standing for 1/reservoir_share feedback items). Also whether the split is part of them."""
    split = load_heldout(base)
    parts: list[Rows] = []
    with_static = base.static is not None
    if split is not None:
        learned = {digest(e.text) for e in (*trained, *heldout)}
        keep = np.array([d not in learned for d in split.digests.tolist()], dtype=bool)
        static = split.static_vectors[keep] if with_static and split.static_vectors is not None else None
        parts.append(Rows(split.vectors[keep], static, split.truth[keep], np.ones(int(keep.sum()))))
    if heldout:
        refitter.encode(heldout)
        truth = np.array([refitter.class_of(e) for e in heldout])
        parts.append(Rows(refitter.vectors(heldout), refitter.vectors(heldout, static=True) if with_static else None,
                          truth, np.full(len(heldout), 1.0 / (reservoir_share or 1.0))))
    if not parts:
        return None, False
    statics = [p.static_vectors for p in parts]
    static_rows = np.vstack([s for s in statics if s is not None]) if all(s is not None for s in statics) else None
    return Rows(np.vstack([p.vectors for p in parts]), static_rows, np.concatenate([p.truth for p in parts]),
                np.concatenate([p.weight for p in parts])), split is not None


@dataclass
class CheckResult:
    passed: bool
    reason: str
    figures: dict[str, Any]


def check(candidate: IndexArtifact, serving: IndexArtifact, rows: Rows | None, from_split: bool, target: float,
          oos_prior: float, min_check: int) -> CheckResult:
    """``from_split``: the rows include the build's calibration split (else: the reservoir alone)."""
    if rows is None or not len(rows.truth):
        return CheckResult(True, "unchecked: no held-out rows yet (no calibration split in the index, and no "
                                 "feedback held out so far)", {})
    new, old = figures(candidate, rows, oos_prior), figures(serving, rows, oos_prior)
    result = {"rows": new["rows"], "from_split": from_split, "target": target, "learned": new, "serving": old}
    if new["accepted"] < min_check:
        return CheckResult(True, f"unpowered: {new['accepted']} accepted held-out answers, fewer than "
                                 f"learning.min_check={min_check}", result)
    precision, before = new["precision"] or 0.0, old["precision"]
    if precision < target and (before is None or precision < before):
        return CheckResult(False, f"held-out precision would fall to {precision:.4f}, under the target {target} "
                                  f"(serving: {before if before is None else round(before, 4)}) on {new['rows']} rows",
                           result)
    return CheckResult(True, f"held-out precision {precision:.4f} (target {target}, serving "
                             f"{before if before is None else round(before, 4)}) on {new['rows']} rows", result)
