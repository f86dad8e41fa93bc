"""The report: ``report.md`` (tables and notes), ``results.json``, ``queries.jsonl.gz`` and the plots."""

from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from router.bench._plots import write_plots

# Every query's outcome, one JSON object a line: what each figure in the report is computed from.
QUERIES = "queries.jsonl.gz"

TABLE_HEAD = ("| method | queries | accuracy (95% CI) | coverage | accepted accuracy | OOS recall | p50 ms | "
              "p99 ms | LLM calls /100 | build s | $/1k, LLM remote | $/1k, LLM self-hosted |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|")

DEFINITIONS = """\
- **accuracy**: in-scope test queries whose top-1 intent is right, at full coverage (the method's
  abstention ignored), with its 95% Wilson interval.
- **coverage**: in-scope queries the method accepted, i.e. acted on an intent without escalating or
  declaring the query out of scope.
- **accepted accuracy**: accepted queries whose intent is right; an out-of-scope query accepted
  counts as wrong.
- **OOS recall**: out-of-scope queries not accepted (BANKING77 has none).
- **p50/p99**: one `classify` call, one query at a time, in this process (encoder on one thread,
  its query cache off). A sampled method's figures are over its sample.
- **LLM calls /100**: calls to the LLM per 100 queries.
- **build**: what a user waits for before the first query: for tiered-router encoding the
  examples, training the head and fitting thresholds (and for tier 2 loading and warming the
  model; for the fine-tuned row, fine-tuning the encoder and exporting it to ONNX first); for
  semantic-router constructing the `IndexedRouter` (it encodes every utterance) and `fit`; for the
  LLM every turn loading the model and processing its prompt prefix once."""


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _usd(x: float) -> str:
    """Two significant digits, however small: $0.000056, $0.41."""
    if x <= 0:
        return "$0"
    return f"${x:.{max(2, 1 - math.floor(math.log10(x)))}f}"


def _row(run: dict[str, Any]) -> str:
    s = run["summary"]
    lo, hi = s["accuracy_ci95"]
    accuracy = "—" if s["accuracy"] is None else f"{_pct(s['accuracy'])} ({100 * lo:.1f}-{100 * hi:.1f})"
    cells = [run["method"], f"{s['n']:,}", accuracy, _pct(s["coverage"]), _pct(s["accepted_accuracy"]),
             _pct(s["oos_recall"]), _num(s["latency_p50_ms"]), _num(s["latency_p99_ms"]),
             _num(s["llm_calls_per_100"], 1), _num(run["build_s"], 1), _usd(s["usd_per_1k_remote_llm"]),
             _usd(s["usd_per_1k_self_hosted"])]
    return "| " + " | ".join(cells) + " |"


def _skipped_row(skip: dict[str, Any]) -> str:
    return "| " + " | ".join([skip["method"], "skipped (see the note below)", *["—"] * 10]) + " |"


def results_table(dataset: dict[str, Any]) -> str:
    skipped = dataset.get("skipped", [])  # absent from runs written before rows could be skipped
    return "\n".join([TABLE_HEAD, *(_row(r) for r in dataset["runs"]), *(_skipped_row(s) for s in skipped)])


def _tier_line(run: dict[str, Any]) -> str:
    tiers = run["summary"]["tier_share"].items()
    shares = ", ".join(f"{tier.replace('_', ' ')} {_pct(share)}" for tier, share in tiers)
    return f"- Which tier answered, *{run['method']}*: {shares}."


def _paired_lines(dataset: dict[str, Any]) -> list[str]:
    runs = {r["method"]: r for r in dataset["runs"]}
    lines = [_tier_line(r) for r in dataset["runs"]
             if r["key"] in ("tiers01", "tiers01-finetuned", "tiers01-static-off", "tier2")]
    for p in dataset["paired"]:
        ref, own = p["reference"], runs[p["method"]]["summary"]
        lines.append(f"- On the same {p['n']:,} queries as *{p['method']}*, tiers 0-1 scored accuracy "
                     f"{_pct(ref['accuracy'])} (vs {_pct(own['accuracy'])}), coverage {_pct(ref['coverage'])} "
                     f"(vs {_pct(own['coverage'])}), accepted accuracy {_pct(ref['accepted_accuracy'])} "
                     f"(vs {_pct(own['accepted_accuracy'])}), OOS recall {_pct(ref['oos_recall'])} "
                     f"(vs {_pct(own['oos_recall'])}).")
    return lines


def _scaling_section(scaling: dict[str, Any]) -> list[str]:
    rows = scaling["rows"]
    lines = ["## Scaling: exact vs HNSW", "",
             f"Synthetic clustered unit vectors, 384 dimensions, 150 clusters; HNSW M={scaling['hnsw']['m']}, "
             f"efConstruction={scaling['hnsw']['ef_construction']}, efSearch={scaling['hnsw']['ef_search']}; "
             "one query at a time, k=10.", "",
             "| examples | index | build s | index MB | search p50 µs | search p99 µs | recall@10 | "
             "nearest-similarity error |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "candidate_scan":
            continue
        lines.append(f"| {r['n']:,} | {r['kind']} | {r['build_s']:.2f} | {r['index_mb']:.1f} | "
                     f"{r['search_p50_us']:.0f} | {r['search_p99_us']:.0f} | "
                     f"{_num(r.get('recall_at_k'), 3)} | {_num(r.get('nearest_sim_error'), 4)} |")
    lines += ["", "The router also scores each of its top-5 candidate intents against that intent's nearest "
              "example (an exact scan of the intent's examples, the same for both index kinds), and keeps the "
              "examples in memory for it:", "",
              "| examples | candidate scan p50 µs | p99 µs | examples MB |", "|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "candidate_scan":
            lines.append(f"| {r['n']:,} | {r['search_p50_us']:.0f} | {r['search_p99_us']:.0f} | "
                         f"{r['examples_mb']:.1f} |")
    lines += ["", *switch_explanation(scaling)]
    return lines


def switch_explanation(scaling: dict[str, Any]) -> list[str]:
    """Where ``vector_index.kind: auto`` switches, and what this run's figures say about it."""
    by = {(r["n"], r["kind"]): r for r in scaling["rows"]}
    sizes = sorted({r["n"] for r in scaling["rows"]})
    faster = [n for n in sizes if by[(n, "hnsw")]["search_p50_us"] < by[(n, "flat")]["search_p50_us"]]
    largest = sizes[-1]
    flat, hnsw = by[(largest, "flat")], by[(largest, "hnsw")]
    crossover = (f"In this run HNSW searched faster than the exact scan from {faster[0]:,} examples on"
                 if faster else "In this run HNSW never searched faster than the exact scan")
    lines = [f"**Where the default switches.** `vector_index.kind: auto` builds an exact index below "
             f"{scaling['auto_hnsw_from']:,} examples and HNSW from there on. {crossover}. Below the switch the "
             "exact scan costs tens of microseconds, next to an encoder call of milliseconds, and gives exact "
             "nearest-neighbour similarities with no build cost; above it the exact scan grows linearly "
             f"({flat['search_p50_us']:,.0f} µs p50 at {largest:,}) while HNSW grows slowly "
             f"({hnsw['search_p50_us']:,.0f} µs), at the price of build time ({hnsw['build_s']:,.0f} s against "
             f"{flat['build_s']:,.1f} s) and memory ({hnsw['index_mb']:,.0f} MB against {flat['index_mb']:,.0f} MB)."]
    weak = [n for n in sizes if by[(n, "hnsw")]["recall_at_k"] < 0.95]
    if weak:
        r = by[(weak[0], "hnsw")]
        lines += ["", f"**Recall.** With efSearch={scaling['hnsw']['ef_search']}, HNSW's recall@10 fell below 0.95 "
                  f"from {weak[0]:,} examples ({r['recall_at_k']:.3f}; {hnsw['recall_at_k']:.3f} at {largest:,}), "
                  "and the nearest similarity it reports, which the out-of-scope test reads, was low by "
                  f"{r['nearest_sim_error']:.4f} on average ({hnsw['nearest_sim_error']:.4f} at {largest:,}). "
                  "For indexes that large raise `vector_index.ef_search` and re-check recall."]
    return lines


def render(results: dict[str, Any]) -> str:
    v = results["versions"]
    config = results["config"]
    llm = f"{config['llm']['backend']} `{config['llm']['model'] or config['llm']['backend']}`"
    lines = ["# tiered-router: comparison report", "",
             f"One run of `{config['command'] or 'router bench compare'}`, started {results['started_at']}, "
             f"{results['wall_s'] / 60:.1f} min; {v['machine']}; Python {v['python']}; tiered-router "
             f"{v['tiered-router']}, semantic-router {v['semantic-router']}, faiss-cpu {v['faiss-cpu']}, onnxruntime "
             f"{v['onnxruntime']}, llama-cpp-python {v['llama_cpp_python']}.", "",
             f"Every method uses the same encoder ({config['encoder']['model']}, ONNX Runtime, "
             f"{config['encoder']['threads']} thread, no query cache) and the same training split. Tier 2 and "
             f"the LLM every turn use {llm}; they answer seeded "
             "random samples of the test split (the same permutation, so the smaller sample is inside the "
             "larger), because each LLM call takes seconds on this CPU.", ""]
    for name, dataset in results["datasets"].items():
        lines += [f"## {name}", "",
                  f"{dataset['n_intents']} intents, {dataset['n_train']:,} training rows, {dataset['n_test']:,} "
                  "test queries.", "", results_table(dataset), "", *_paired_lines(dataset), ""]
        for run in dataset["runs"]:
            if run["notes"]:
                lines.append(f"- *{run['method']}*: " + "; ".join(run["notes"]) + ".")
        for skip in dataset.get("skipped", []):
            lines.append(f"- *{skip['method']}*: skipped, not run: {skip['reason'].rstrip('.')}.")
        lines.append("")
    lines += ["## Definitions", "", DEFINITIONS, "", "## Cost model", "",
              f"Modelled per 1,000 queries: {results['cost_model']}. The vCPU price is an assumption "
              "(`--vcpu-hour-usd`); the token prices are the dispatcher's shipped price table.", "",
              "## Plots", "", "- `coverage_accuracy.png`: accuracy of the answered queries as a method answers "
              "only its most confident ones, with each method's own operating point marked.",
              "- `latency_per_tier.png`: per-query latency by the tier that answered, and the other methods.",
              "- `escalation.png`: which tier answered, and LLM calls per 100 queries.",
              "- `scaling.png`: search latency and build time as examples grow, exact vs HNSW.", ""]
    if "scaling" in results:
        lines += _scaling_section(results["scaling"])
    return "\n".join(lines) + "\n"


def _jsonable(results: dict[str, Any]) -> dict[str, Any]:
    out = dict(results)
    out["datasets"] = {name: {**d, "runs": [{k: v for k, v in r.items() if k not in ("records", "rows")}
                                            for r in d["runs"]]} for name, d in results["datasets"].items()}
    return out


def load_results(folder: Path) -> dict[str, Any]:
    """A finished run's results with its per-query records, read back to re-render the report."""
    from router._decision import LLMCall
    from router.bench._metrics import Record
    from router.bench.methods._base import Outcome

    results: dict[str, Any] = json.loads((folder / "results.json").read_text())
    records: dict[tuple[str, str], list[Record]] = {}
    with gzip.open(folder / QUERIES, "rt") as fh:
        for line in fh:
            q = json.loads(line)
            llm = LLMCall(**q["llm"]) if q["llm"] else None
            outcome = Outcome(q["guess"], q["accepted"], q["confidence"], q["tier"], llm)
            records.setdefault((q["dataset"], q["method"]), []).append(
                Record(q["text"], q["truth"], outcome, q["latency_us"]))
    for name, dataset in results["datasets"].items():
        for run in dataset["runs"]:
            run["records"] = records[(name, run["key"])]
    return results


def write_report(results: dict[str, Any], folder: Path) -> None:
    (folder / "report.md").write_text(render(results))
    (folder / "results.json").write_text(json.dumps(_jsonable(results), indent=2, default=str) + "\n")
    # mtime=0: re-rendering the same run writes the same bytes.
    with gzip.GzipFile(folder / QUERIES, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
        for name, dataset in results["datasets"].items():
            for run in dataset["runs"]:
                for record in run["records"]:
                    row = {"dataset": name, "method": run["key"], "text": record.text, "truth": record.truth,
                           "latency_us": round(record.latency_us, 1), **asdict(record.outcome)}
                    fh.write(json.dumps(row) + "\n")
    write_plots(results, folder)
