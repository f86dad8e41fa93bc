"""The report's PNGs (matplotlib, from the ``[bench]`` extra, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.errors import ConfigError

TIER_ORDER = ["rules", "static", "embedding", "escalated", "out_of_scope", "llm", "degraded", "semantic-router"]
TIER_COLOURS = dict(zip(TIER_ORDER, ["#8c564b", "#17becf", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f",
                                     "#9467bd"], strict=True))
# Tier 2 mixes tier 1's acceptance score with the LLM's label probability: no one ordering, so no curve.
NO_CURVE = {"tier2"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("the report's plots need matplotlib: pip install -e '.[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt: Any, results: dict[str, Any], height: float = 5.5) -> tuple[Any, list[Any]]:
    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), height), squeeze=False)
    return fig, list(axes[0])


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def coverage_accuracy(plt: Any, results: dict[str, Any], path: Path) -> None:
    fig, axes = _panels(plt, results)
    for ax, (name, dataset) in zip(axes, results["datasets"].items(), strict=True):
        for run in dataset["runs"]:
            point = run["operating_point"]
            if run["key"] in NO_CURVE:
                line = ax.plot([], [], "o", label=f"{run['method']} (its rule only)")
            else:
                # Over HTTP the decisions are the in-process ones: dashed, so both lines show.
                style = "--" if run["key"] == "tiers01-http" else "-"
                line = ax.plot(run["curve"]["coverage"], run["curve"]["accuracy"], style, label=run["method"], lw=1.4)
            if point["accuracy"] is not None:
                ax.plot([point["coverage"]], [point["accuracy"]], "o", color=line[0].get_color(), ms=7)
        ax.set_title(f"{name}: accuracy of the answered queries")
        ax.set_xlabel("share of all test queries answered (most confident first); dot = the method's own rule")
        ax.set_ylabel("accuracy of those answered")
        ax.set_xlim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    _save(plt, fig, path)


def latency_per_tier(plt: Any, results: dict[str, Any], path: Path) -> None:
    fig, axes = _panels(plt, results)
    for ax, (name, dataset) in zip(axes, results["datasets"].items(), strict=True):
        groups: dict[str, list[float]] = {}
        # Tier 2's run when present (it has every tier), else tiers 0-1's.
        ours = sorted((r for r in dataset["runs"] if r["key"] in ("tier2", "tiers01")),
                      key=lambda r: r["key"] != "tier2")
        for run in ours[:1]:
            for record in run["records"]:
                groups.setdefault(f"tier: {record.outcome.tier}", []).append(record.latency_us / 1000.0)
        for run in dataset["runs"]:
            if run["key"] not in ("tier2", "tiers01"):
                groups[run["method"]] = [r.latency_us / 1000.0 for r in run["records"]]
        ordered = sorted(groups, key=lambda g: (not g.startswith("tier"), TIER_ORDER.index(g[6:])
                                                if g[6:] in TIER_ORDER else 99, g))
        ax.boxplot([groups[g] for g in ordered], orientation="horizontal", whis=(1, 99), showfliers=False)
        ax.set_yticks(range(1, len(ordered) + 1), [f"{g} (n={len(groups[g])})" for g in ordered], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ms per query, log scale (box: quartiles; whiskers: p1-p99)")
        ax.set_title(f"{name}: latency per tier")
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
        ax.set_yticks(range(len(runs)), [r["method"] for r in runs], fontsize=8)
        ax.set_xlim(0, 1.35)
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
