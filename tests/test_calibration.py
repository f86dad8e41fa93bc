import math

import numpy as np
import pytest

from router._calibration import Calibration, fit_calibration


def synthetic(n: int = 2000, n_oos: int = 100, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=n + n_oos)
    # Higher score, more often right; out-of-scope queries score low and are never right.
    correct = np.concatenate([rng.uniform(size=n) < 0.6 + 0.4 * scores[:n], np.zeros(n_oos, bool)])
    scores[n:] *= 0.5
    is_oos = np.arange(n + n_oos) >= n
    nearest = np.where(is_oos, rng.uniform(0.1, 0.5, n + n_oos), rng.uniform(0.4, 1.0, n + n_oos))
    return scores, correct, is_oos, nearest


def accepted_precision(cal, scores, correct):  # type: ignore[no-untyped-def]
    accepted = scores >= cal.accept_threshold
    return correct[accepted].mean()


def test_threshold_reaches_target_precision() -> None:
    s, c, o, near = synthetic()
    cal = fit_calibration(s, c, o, near, target_precision=0.9, oos_prior=0.0, z=0.0)
    # With a zero prior, out-of-scope queries weigh nothing: precision over in-scope queries.
    assert accepted_precision(cal, s[~o], c[~o]) >= 0.9
    assert cal.precision is not None and cal.precision >= 0.9
    # The lowest such threshold: one step lower breaks the target or accepts nothing more.
    assert 0 < cal.coverage < 1


def test_confidence_margin_raises_the_threshold() -> None:
    s, c, o, near = synthetic()
    loose = fit_calibration(s, c, o, near, target_precision=0.9, z=0.0)
    strict = fit_calibration(s, c, o, near, target_precision=0.9, z=2.0)
    assert strict.accept_threshold > loose.accept_threshold


def test_oos_prior_weights_out_of_scope_queries_up() -> None:
    s, c, o, near = synthetic()
    rare = fit_calibration(s, c, o, near, target_precision=0.9, oos_prior=0.0, z=0.0)
    common = fit_calibration(s, c, o, near, target_precision=0.9, oos_prior=0.4, z=0.0)
    assert common.accept_threshold >= rare.accept_threshold
    assert common.oos_recall is not None and common.oos_recall >= rare.oos_recall  # type: ignore[operator]


def test_unreachable_target_accepts_nothing() -> None:
    s, c, o, near = synthetic()
    c[:] = False
    cal = fit_calibration(s, c, o, near, target_precision=0.97)
    assert math.isinf(cal.accept_threshold) and "escalates everything" in cal.note


def test_an_unreachable_threshold_survives_the_manifest_round_trip() -> None:
    # A tiny intent set can miss the target: the index must still load (JSON null did not).
    cal = fit_calibration(np.array([0.9, 0.8]), np.array([True, False]), np.array([False, False]),
                          np.array([0.9, 0.9]), target_precision=0.99)
    assert cal.accept_threshold == math.inf
    assert Calibration.model_validate_json(cal.model_dump_json()).accept_threshold == math.inf


def test_oos_floor_is_a_low_quantile_of_in_scope_similarity() -> None:
    s, c, o, near = synthetic()
    cal = fit_calibration(s, c, o, near, oos_floor_quantile=0.05)
    assert cal.oos_similarity_floor == pytest.approx(np.quantile(near[~o], 0.05))


def test_needs_in_scope_queries() -> None:
    with pytest.raises(ValueError, match="in-scope"):
        fit_calibration(np.ones(3), np.zeros(3, bool), np.ones(3, bool), np.ones(3))
