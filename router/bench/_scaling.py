"""The vector index as examples grow: exact (FAISS flat) against HNSW, on synthetic vectors.

The vectors are clustered like sentence embeddings (one cluster per intent, unit length, about
0.6 cosine to their cluster's centre) at MiniLM's 384 dimensions. Per size and kind: build time, the
index's serialised size (its memory), one-query search latency (k = the router's ``neighbours``),
and for HNSW its recall@k against the exact result and the error of the nearest similarity (the
router's out-of-scope test reads that one number). The per-intent similarity scan the router
does for its top-5 candidates is the same for both kinds and timed separately.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from router._config import VectorIndexConfig
from router._progress import QUIET, Progress
from router.vectors import choose_kind, new_index

DIMENSION = 384
INTENTS = 150
QUERIES = 200


def synthetic(n: int, rng: np.random.Generator, centroids: np.ndarray, noise: float = 0.065) -> np.ndarray:
    """``n`` unit vectors around ``centroids``, built in chunks to keep peak memory near the result's."""
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(lo + 100_000, n)
        rows = centroids[rng.integers(0, len(centroids), hi - lo)]
        rows = rows + rng.standard_normal((hi - lo, DIMENSION), dtype=np.float32) * noise
        out[lo:hi] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def _latencies_us(fn: Any, queries: np.ndarray) -> np.ndarray:
    out = []
    for q in queries:
        start = time.perf_counter_ns()
        fn(q[None, :])
        out.append((time.perf_counter_ns() - start) / 1000.0)
    return np.array(out)


def _index_bytes(index: Any) -> int:
    import faiss

    return int(len(faiss.serialize_index(index._index)))


def measure_size(n: int, config: VectorIndexConfig, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    centroids = synthetic(INTENTS, rng, np.eye(1, DIMENSION, dtype=np.float32), noise=1.0)
    vectors = synthetic(n, rng, centroids)
    queries = synthetic(QUERIES, rng, centroids)
    k = min(config.neighbours, n)
    options = config.model_dump(exclude={"kind"})
    rows, exact_ids, exact_sims = [], None, None
    for kind in ("flat", "hnsw"):
        index = new_index(kind, DIMENSION, options)
        start = time.perf_counter()
        index.add(vectors)
        build = time.perf_counter() - start
        lat = _latencies_us(lambda q, index=index: index.search(q, k), queries)
        sims, ids = index.search(queries, k)
        row: dict[str, Any] = {
            "n": n, "kind": kind, "build_s": build, "index_mb": _index_bytes(index) / 2**20,
            "search_p50_us": float(np.percentile(lat, 50)), "search_p99_us": float(np.percentile(lat, 99)),
        }
        if kind == "flat":
            exact_ids, exact_sims = ids, sims
        else:
            assert exact_ids is not None and exact_sims is not None
            hits = [len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), exact_ids.tolist(), strict=True)]
            row["recall_at_k"] = float(np.mean(hits))
            row["nearest_sim_error"] = float(np.mean(np.abs(exact_sims[:, 0] - sims[:, 0])))
        rows.append(row)
        del index
    rows.append(_candidate_scan(n, vectors, queries, rng))
    return rows


def _candidate_scan(n: int, vectors: np.ndarray, queries: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """The router's similarity to the nearest example of each of its 5 candidates (examples grouped by intent)."""
    per = max(n // INTENTS, 1)
    starts = [int(s) for s in rng.integers(0, max(n - per, 1), 5)]
    lat = _latencies_us(lambda q: [float((vectors[s:s + per] @ q[0]).max()) for s in starts], queries)
    return {"n": n, "kind": "candidate_scan", "search_p50_us": float(np.percentile(lat, 50)),
            "search_p99_us": float(np.percentile(lat, 99)), "examples_mb": vectors.nbytes / 2**20}


def run_scaling(sizes: Sequence[int], config: VectorIndexConfig | None = None,
                progress: Any = None) -> dict[str, Any]:
    """``progress``: a ``Progress`` (a bar of the sizes), or a line printer, or None."""
    config = config or VectorIndexConfig()
    rows = []
    show = progress if isinstance(progress, Progress) else QUIET
    with show.stage("scaling", total=len(sizes), unit="size") as bar:
        for n in sizes:
            bar.note(f"{n:,} vectors")
            if progress and not isinstance(progress, Progress):
                progress(f"scaling: {n:,} vectors")
            rows.extend(measure_size(n, config))
            bar.update()
    return {"rows": rows, "auto_hnsw_from": config.auto_hnsw_from,
            "default_kind": {str(n): choose_kind("auto", n, config.auto_hnsw_from) for n in sizes},
            "hnsw": {"m": config.hnsw_m, "ef_construction": config.ef_construction, "ef_search": config.ef_search}}
