"""Fit tier 1's thresholds on held-out data, so accepted answers reach a target precision.

Acceptance score: the head's top probability times the similarity of the query to
the nearest example of that intent. The accept threshold is the lowest score at
which the (out-of-scope-weighted) precision of everything above it has a Wilson
lower bound (z standard deviations, default 1) at or over the target: a margin for
the noise of a few thousand validation queries. Out-of-scope validation queries
are weighted up to an expected share (``oos_prior``), because a validation split
rarely has the production share of them (CLINC150: 3% in validation, 18% in test).

The out-of-scope floor: a query whose nearest known example is less similar than
a low quantile of in-scope held-out queries is out of scope, not escalated.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import ConfigDict

from router._strict import Strict


class Calibration(Strict):
    """Fitted thresholds plus the figures they reached on the held-out split."""

    # accept_threshold is inf when no threshold reaches the target; JSON's null would not load back.
    model_config = ConfigDict(ser_json_inf_nan="constants")
    accept_threshold: float
    oos_similarity_floor: float
    target_precision: float
    fitted: bool
    n_heldout: int
    n_heldout_oos: int
    coverage: float | None = None
    precision: float | None = None
    oos_recall: float | None = None
    note: str = ""


def _wilson_lower(p: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    if z <= 0:
        return p
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * np.sqrt(np.clip(p * (1 - p) / n + z2 / (4 * n * n), 0, None))
    lower: np.ndarray = (centre - spread) / (1 + z2 / n)
    return lower


def fit_calibration(
    scores: np.ndarray,
    correct: np.ndarray,
    is_oos: np.ndarray,
    nearest_similarity: np.ndarray,
    target_precision: float = 0.97,
    oos_prior: float = 0.2,
    z: float = 1.0,
    oos_floor_quantile: float = 0.01,
    floor: float | None = None,
) -> Calibration:
    """``scores``: acceptance score per held-out query; ``correct``: the head's best guess is right
    (always False for out-of-scope queries; a float is an expected correctness); ``nearest_similarity``:
    to the nearest known example.
    ``floor`` fixes the out-of-scope floor instead of taking it from the in-scope quantile (the
    joint fit gives queries an earlier tier accepted an infinite score and similarity)."""
    n_oos = int(is_oos.sum())
    n_in = len(scores) - n_oos
    if n_in == 0:
        raise ValueError("calibration needs in-scope held-out queries")
    weights = np.ones(len(scores))
    if n_oos:
        weights[is_oos] = oos_prior / (1 - oos_prior) * n_in / n_oos
    order = np.argsort(-scores, kind="stable")
    w = weights[order]
    cum_w = np.cumsum(w)
    precision = np.cumsum(w * correct[order]) / cum_w
    effective_n = cum_w**2 / np.cumsum(w * w)
    lower = _wilson_lower(precision, effective_n, z)
    ok = np.flatnonzero(lower >= target_precision)
    if floor is None:
        floor = float(np.quantile(nearest_similarity[~is_oos], oos_floor_quantile))
    if len(ok) == 0:
        threshold = math.inf
        note = f"no threshold reaches precision {target_precision}; tier 1 escalates everything"
    else:
        threshold = float(scores[order][ok[-1]])
        note = ""
    accepted = (scores >= threshold) & (nearest_similarity >= floor)
    figures_precision = (
        float((weights * correct)[accepted].sum() / weights[accepted].sum()) if accepted.any() else None
    )
    return Calibration(
        accept_threshold=threshold,
        oos_similarity_floor=floor,
        target_precision=target_precision,
        fitted=True,
        n_heldout=len(scores),
        n_heldout_oos=n_oos,
        coverage=float(accepted[~is_oos].mean()),
        precision=figures_precision,
        oos_recall=float(1 - accepted[is_oos].mean()) if n_oos else None,
        note=note,
    )


def unfitted_calibration(threshold: float, target_precision: float, reason: str) -> Calibration:
    return Calibration(
        accept_threshold=threshold,
        oos_similarity_floor=-1.0,
        target_precision=target_precision,
        fitted=False,
        n_heldout=0,
        n_heldout_oos=0,
        note=reason,
    )
