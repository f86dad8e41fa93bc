"""The coverage-accuracy plot: every method visible, sampled methods labelled, the y-axis zoomed from the data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from router.bench._plots import MIN_ANSWERED, _pyplot, coverage_accuracy_figure, method_label, zoom_limits

N_TEST = 2000


def _run(key: str, method: str, accuracy: np.ndarray, n: int = N_TEST, point: float = 0.8) -> dict[str, Any]:
    coverage = np.linspace(1 / len(accuracy), 1.0, len(accuracy))
    return {"key": key, "method": method, "summary": {"n": n},
            "curve": {"coverage": coverage.tolist(), "accuracy": accuracy.tolist()},
            "operating_point": {"coverage": point, "accuracy": float(np.interp(point, coverage, accuracy))}}


def _results(shift: float = 0.0, llm: bool = True) -> dict[str, Any]:
    """Tiers 0-1 from 0.98 down to 0.90, the same over HTTP, semantic-router lower; a 40-query LLM near 0.1.

    Every curve starts with a noisy head (its first query wrong) that must not set the zoom.
    """
    ours = np.linspace(0.98, 0.90, 200) + shift
    theirs = np.linspace(0.96, 0.85, 200) + shift
    ours[0] = theirs[0] = 0.0
    runs = [_run("tiers01", "tiers 0-1", ours), _run("tiers01-http", "tiers 0-1, over HTTP", ours),
            _run("semantic-router", "semantic-router", theirs, point=1.0),
            {**_run("tier2", "tiers 0-1 + tier 2", ours, n=1000, point=0.9),
             "operating_point": {"coverage": 0.9, "accuracy": 0.88 + shift}}]
    if llm:
        runs.append(_run("llm-every-turn", "LLM every turn", np.linspace(1.0, 0.1, 40), n=40, point=1.0))
    return {"datasets": {"clinc150": {"n_test": N_TEST, "runs": runs}}}


@pytest.fixture
def plt() -> Iterator[Any]:
    pyplot = _pyplot()
    yield pyplot
    pyplot.close("all")


def _legend(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _zoomed(fig: Any) -> Any:
    return next(ax for ax in fig.axes if ax.get_title().endswith("accuracy of the answered queries"))


def test_sampled_methods_carry_their_sample_size_in_the_legend(plt: Any) -> None:
    labels = _legend(coverage_accuracy_figure(plt, _results()))
    assert "LLM every turn (sample n=40)" in labels
    assert "tiers 0-1 + tier 2 (its rule only; sample n=1000)" in labels
    assert "tiers 0-1" in labels and "semantic-router" in labels  # the whole test split: no sample note
    dataset = _results()["datasets"]["clinc150"]
    assert [method_label(r, dataset) for r in dataset["runs"]][-1] == "LLM every turn (sample n=40)"


def test_coincident_curves_are_both_drawn_and_the_legend_says_so(plt: Any) -> None:
    fig = coverage_accuracy_figure(plt, _results())
    assert "tiers 0-1, over HTTP; same curve as tiers 0-1" in _legend(fig)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    first, twin = lines["tiers 0-1"], lines["tiers 0-1, over HTTP; same curve as tiers 0-1"]
    # The later one is on top, in another dash and marker, so the first shows through.
    assert twin.get_zorder() > first.get_zorder()
    assert twin.get_linestyle() != first.get_linestyle() and twin.get_marker() != first.get_marker()


def test_the_y_axis_is_zoomed_to_where_the_curves_are(plt: Any) -> None:
    low, high = _zoomed(coverage_accuracy_figure(plt, _results())).get_ylim()
    # The lowest well-supported point is semantic-router's 0.85; the highest tiers 0-1's 0.98.
    assert 0.8 < low < 0.85 and 0.98 < high <= 1.01
    # The limits follow the data: the same curves 0.05 lower, the zoom 0.05 lower.
    shifted = _zoomed(coverage_accuracy_figure(plt, _results(shift=-0.05))).get_ylim()
    assert shifted == pytest.approx((low - 0.05, high - 0.05))


def test_what_falls_outside_the_zoom_shows_on_a_full_scale_strip(plt: Any) -> None:
    fig = coverage_accuracy_figure(plt, _results())
    strip = next(ax for ax in fig.axes if ax.get_title().startswith("full scale"))
    low, high = strip.get_ylim()
    assert low < 0.0 and high > 1.0
    assert "LLM every turn (sample n=40)" in [t.get_text() for t in strip.get_legend().get_texts()]


def test_zoom_limits_ignore_points_on_few_answers() -> None:
    # One query answered wrong (accuracy 0) and a 40-query sample do not widen the range.
    assert zoom_limits([(1 / N_TEST, 0.0, N_TEST), (0.5, 0.95, N_TEST), (1.0, 0.9, N_TEST), (1.0, 0.1, 40)]) \
        == pytest.approx((0.89, 0.955))
    assert zoom_limits([(1.0, 0.5, MIN_ANSWERED - 1)]) is None
