"""pytest-benchmark suites for tiers 0-1: run with `make bench`.

Each stage alone, one query, one thread; then whole classify. The ratio that matters:
everything except the encoder's forward pass (`non_encoder_path`) against `classify`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from router import Router

from .conftest import QUERY

MISS = "zzz nothing in the rules matches this query"


def _onnx(router: Router) -> Any:
    return router.encoder  # cache_size=0: the OnnxEncoder itself


def test_tier0_rules_hit_or_miss(benchmark: Any, router: Router) -> None:
    benchmark(router.rules.match, MISS)


def test_tokenize(benchmark: Any, router: Router) -> None:
    benchmark(_onnx(router).tokenize, [QUERY])


def test_encoder_batch1(benchmark: Any, router: Router) -> None:
    benchmark(router.encoder.encode, [QUERY])


@pytest.mark.parametrize("batch", [32, 64])
def test_encoder_batch(benchmark: Any, router: Router, batch: int) -> None:
    texts = [f"{QUERY} number {i}" for i in range(batch)]
    benchmark(router.encoder.encode, texts)


def test_index_search(benchmark: Any, router: Router) -> None:
    vector = router.encoder.encode([QUERY])
    benchmark(router.artifact.vectors.search, vector, 10)


def test_head(benchmark: Any, router: Router) -> None:
    vector = router.encoder.encode([QUERY])
    benchmark(router.artifact.head.probabilities, vector)


def test_non_encoder_path(benchmark: Any, router: Router) -> None:
    """Tokenising, rules, head, search, per-intent similarity, calibration and the Decision."""
    vector = router.encoder.encode([QUERY])
    enc = _onnx(router)

    def path() -> object:
        enc.tokenize([QUERY])
        match = router.rules.match(QUERY)
        return router._embedding_decision(vector, match, 0, 0, 0)

    benchmark(path)


def test_classify(benchmark: Any, router: Router) -> None:
    decision = benchmark(router.classify, QUERY)
    assert decision.intent == "balance"


def test_classify_p99(router: Router) -> None:
    """Not a pytest-benchmark figure: p50/p99 over 2,000 calls, printed for the note."""
    import time

    samples = []
    for _ in range(2000):
        start = time.perf_counter_ns()
        router.classify(QUERY)
        samples.append(time.perf_counter_ns() - start)
    lat = np.array(samples) / 1e3
    print(f"\nclassify one query: p50 {np.percentile(lat, 50):.0f} us, p99 {np.percentile(lat, 99):.0f} us")
