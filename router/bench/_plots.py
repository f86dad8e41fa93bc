"""The report's PNGs (matplotlib, from the ``[bench]`` extra, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from router.errors import MissingDependency

TIER_ORDER = ["rules", "static", "embedding", "escalated", "out_of_scope", "llm", "degraded", "semantic-router"]
TIER_COLOURS = dict(zip(TIER_ORDER, ["#8c564b", "#17becf", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f",
                                     "#9467bd"], strict=True))
# Tier 2 mixes tier 1's acceptance score with the LLM's label probability: no one ordering, so no curve.
NO_CURVE = {"tier2"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependency("the report's plots need matplotlib, from the [bench] extra: "
                                "pip install 'tiered-router[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt: Any, results: dict[str, Any], height: float = 5.5) -> tuple[Any, list[Any]]:
    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), height), squeeze=False)
    return fig, list(axes[0])


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def sample_size(run: dict[str, Any], dataset: dict[str, Any]) -> int | None:
    """The run's sample size when it answered a sample of the test split (the LLM methods), else None."""
    n = int(run["summary"]["n"])
    return n if n < int(dataset["n_test"]) else None


def method_label(run: dict[str, Any], dataset: dict[str, Any]) -> str:
    """The method's name, with its sample size when it saw only a sample: "LLM every turn (sample n=40)"."""
    n = sample_size(run, dataset)
    return run["method"] if n is None else f"{run['method']} (sample n={n})"


# Curve points resting on fewer answered queries are too noisy to set the zoom (one wrong query
# in the first five is 80%); they still show on the full-scale strip.
MIN_ANSWERED = 100
# Coincident curves stay visible: the later one is drawn on top in another dash and marker.
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def zoom_limits(points: list[tuple[float, float, int]]) -> tuple[float, float] | None:
    """The y-range where the curves are, from ``(coverage, accuracy, n)`` points; None when too few answers.

    Only points on at least ``MIN_ANSWERED`` answered queries count; the range is padded by a tenth
    of its span (at least 0.01) and kept inside [0, 1] plus the padding above, so 1.0 shows.
    """
    ys = [y for x, y, n in points if x * n >= MIN_ANSWERED]
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    pad = max(0.1 * (hi - lo), 0.01)
    return max(0.0, lo - pad), min(1.0, hi) + pad / 2


def _same_curve(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return (len(a["coverage"]) == len(b["coverage"]) and bool(np.allclose(a["coverage"], b["coverage"]))
            and bool(np.allclose(a["accuracy"], b["accuracy"])))


def _coverage_series(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """What each run draws: label, style, curve (None for a dot only) and operating point."""
    series: list[dict[str, Any]] = []
    for i, run in enumerate(dataset["runs"]):
        label = method_label(run, dataset)
        curve = None if run["key"] in NO_CURVE else run["curve"]
        same = [s for s in series if curve is not None and s["curve"] is not None and _same_curve(s["curve"], curve)]
        twin = same[0] if same else None
        if run["key"] in NO_CURVE:
            n = sample_size(run, dataset)
            label = f"{run['method']} (its rule only{'' if n is None else f'; sample n={n}'})"
        depth = len(same)  # 0 for the first of coincident curves, then 1, 2...
        if twin is not None:
            label = f"{label}; same curve as {twin['run']['method']}"
        series.append({"run": run, "label": label, "curve": curve, "depth": depth, "twin": twin,
                       "n": int(run["summary"]["n"]), "point": run["operating_point"],
                       "style": LINESTYLES[depth % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
                       "z": 2 + depth})
    return series


def _draw_coverage(ax: Any, series: list[dict[str, Any]], legend: bool) -> None:
    for s in series:
        kw = {"label": s["label"] if legend else None, "marker": s["marker"]}
        if s["curve"] is None:
            line = ax.plot([], [], ls="none", ms=7, **kw)
        else:
            xs, ys = s["curve"]["coverage"], s["curve"]["accuracy"]
            step = max(1, len(xs) // 8)
            # Markers of coincident curves land on different points, so both show.
            line = ax.plot(xs, ys, ls=s["style"], lw=1.6 if s["depth"] == 0 else 1.4, ms=5, zorder=s["z"],
                           markevery=(min(len(xs) - 1, (s["depth"] * step) // 2 + step // 4), step), **kw)
        point = s["point"]
        if point["accuracy"] is not None:
            # A twin's dot sits inside the first one's: the larger one is drawn first.
            ax.plot([point["coverage"]], [point["accuracy"]], s["marker"], color=line[0].get_color(),
                    ms=11 - 4 * min(s["depth"], 1), mec="black", mew=0.6, zorder=10 + s["z"])


def coverage_accuracy_figure(plt: Any, results: dict[str, Any]) -> Any:
    """Per dataset: a panel zoomed to where the curves are and, when some points fall outside it,
    a full-scale strip below with the zoom shaded."""
    datasets = list(results["datasets"].items())
    series = {name: _coverage_series(d) for name, d in datasets}
    zooms = {}
    outside = {}
    for name, _ in datasets:
        points = [(x, y, s["n"]) for s in series[name] if s["curve"] is not None
                  for x, y in zip(s["curve"]["coverage"], s["curve"]["accuracy"], strict=True)]
        points += [(s["point"]["coverage"], s["point"]["accuracy"], s["n"]) for s in series[name]
                   if s["point"]["accuracy"] is not None]
        zooms[name] = zoom = zoom_limits(points)
        outside[name] = zoom is not None and any(not zoom[0] <= y <= zoom[1] for _, y, _ in points)
    strip = any(outside.values())
    fig = plt.figure(figsize=(6.5 * len(datasets), 8.0 if strip else 6.0))
    grid = fig.add_gridspec(2 if strip else 1, len(datasets), height_ratios=[3, 1.2] if strip else [1])
    for col, (name, _) in enumerate(datasets):
        ax = fig.add_subplot(grid[0, col])
        _draw_coverage(ax, series[name], legend=not outside[name])
        zoom = zooms[name]
        if zoom is None:
            ax.set_ylim(-0.02, 1.02)
        else:
            ax.set_ylim(*zoom)
        ax.set_title(f"{name}: accuracy of the answered queries")
        ax.set_ylabel("accuracy of those answered" + ("" if zoom is None else " (zoomed)"))
        ax.set_xlim(0, 1.01)
        ax.grid(alpha=0.3)
        bottom = ax
        if outside[name]:
            assert zoom is not None
            bottom = fig.add_subplot(grid[1, col], sharex=ax)
            _draw_coverage(bottom, series[name], legend=True)
            bottom.axhspan(*zoom, color="grey", alpha=0.15, lw=0)
            bottom.set_ylim(-0.03, 1.05)
            bottom.set_ylabel("full scale")
            bottom.set_title(f"full scale; shaded: the zoom above (points on {MIN_ANSWERED}+ answered queries)",
                             fontsize=8)
            bottom.grid(alpha=0.3)
            ax.tick_params(labelbottom=False)
        bottom.set_xlabel("share of all test queries answered (most confident first); large marker = the "
                          "method's own rule", fontsize=9)
        # Below the panels, one method a line: the labels are long, and the PNG is cut to fit them.
        bottom.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.3 if outside[name] else -0.12))
    return fig


def coverage_accuracy(plt: Any, results: dict[str, Any], path: Path) -> None:
    _save(plt, coverage_accuracy_figure(plt, results), path)


def latency_per_tier(plt: Any, results: dict[str, Any], path: Path) -> None:
    fig, axes = _panels(plt, results)
    for ax, (name, dataset) in zip(axes, results["datasets"].items(), strict=True):
        tiers: dict[str, list[float]] = {}
        # Tier 2's run when present (it has every tier), else tiers 0-1's.
        ours = sorted((r for r in dataset["runs"] if r["key"] in ("tier2", "tiers01")),
                      key=lambda r: r["key"] != "tier2")
        source = ""
        for run in ours[:1]:
            for record in run["records"]:
                tiers.setdefault(record.outcome.tier, []).append(record.latency_us / 1000.0)
            source = method_label(run, dataset)
        rows = [(f"tier: {t} (n={len(tiers[t])})", tiers[t])
                for t in sorted(tiers, key=lambda t: (TIER_ORDER.index(t) if t in TIER_ORDER else 99, t))]
        others = sorted((r for r in dataset["runs"] if r["key"] not in ("tier2", "tiers01")), key=lambda r: r["method"])
        for run in others:
            label = method_label(run, dataset)
            rows.append((label if sample_size(run, dataset) else f"{label} (n={len(run['records'])})",
                         [r.latency_us / 1000.0 for r in run["records"]]))
        ax.boxplot([values for _, values in rows], orientation="horizontal", whis=(1, 99), showfliers=False)
        ax.set_yticks(range(1, len(rows) + 1), [label for label, _ in rows], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ms per query, log scale (box: quartiles; whiskers: p1-p99)")
        ax.set_title(f"{name}: latency per tier" + (f"\ntier rows from: {source}" if source else ""))
        ax.grid(alpha=0.3, axis="x")
    _save(plt, fig, path)


def escalation(plt: Any, results: dict[str, Any], path: Path) -> None:
    fig, axes = _panels(plt, results)
    for ax, (name, dataset) in zip(axes, results["datasets"].items(), strict=True):
        runs = dataset["runs"]
        left = [0.0] * len(runs)
        for tier in TIER_ORDER:
            shares = [r["summary"]["tier_share"].get(tier, 0.0) for r in runs]
            if any(shares):
                ax.barh(range(len(runs)), shares, left=left, label=tier, color=TIER_COLOURS[tier])
                left = [a + b for a, b in zip(left, shares, strict=True)]
        for i, run in enumerate(runs):
            ax.text(1.01, i, f"{run['summary']['llm_calls_per_100']:.0f} LLM calls /100", va="center", fontsize=8)
        ax.set_yticks(range(len(runs)), [method_label(r, dataset) for r in runs], fontsize=8)
        ax.set_xlim(0, 1.5)  # room for the LLM calls on the right
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_xlabel("share of test queries, by the tier that answered")
        ax.set_title(f"{name}: escalation")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
    _save(plt, fig, path)


def scaling(plt: Any, results: dict[str, Any], path: Path) -> None:
    rows = results["scaling"]["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind, label in (("flat", "exact (flat)"), ("hnsw", "HNSW"), ("candidate_scan", "top-5 candidate scan")):
        mine = [r for r in rows if r["kind"] == kind]
        left.plot([r["n"] for r in mine], [r["search_p50_us"] for r in mine], "o-", label=label)
        if kind != "candidate_scan":
            right.plot([r["n"] for r in mine], [r["build_s"] for r in mine], "o-", label=label)
    left.axvline(results["scaling"]["auto_hnsw_from"], color="grey", ls="--", label="auto switches to HNSW")
    for ax, ylabel in ((left, "search p50, µs"), (right, "build, s")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("examples in the index")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def write_plots(results: dict[str, Any], folder: Path) -> None:
    plt = _pyplot()
    coverage_accuracy(plt, results, folder / "coverage_accuracy.png")
    latency_per_tier(plt, results, folder / "latency_per_tier.png")
    escalation(plt, results, folder / "escalation.png")
    if "scaling" in results:
        scaling(plt, results, folder / "scaling.png")
