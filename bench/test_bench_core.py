"""pytest-benchmark suites for tiers 0-1: run with `make bench`.

Each stage alone, one query, one thread; then whole classify, with the static tier (1a) on and
off on the same index. The ratios that matter: everything except the encoder's forward pass
(``non_encoder_path``) against ``classify``, and ``classify`` static on against static off over
real CLINC150 test queries (``classify_clinc_cycle``, and the p50/p99 printout below it).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from router import Router
from router.encoders import TokenEncoder, token_encoder
from router.tiers import Chain, Query, Tier
from router.tiers._embedding import EmbeddingTier
from router.tiers._rules import RulesTier

from .conftest import QUERY, TRANSFORMER_QUERY

MISS = "zzz nothing in the rules matches this query"
# classify over the seeded shuffle of the CLINC150 test split: the same queries for static on and off.
CYCLE_ROUNDS = 1500
ROUTERS = ["router", "router_static_off"]
IDS = ["static-on", "static-off"]


def _tier(router: Router, name: str) -> Tier:
    tier = router.chain.get(name)
    assert tier is not None, f"no {name} tier in {router.chain.names}"
    return tier


def _tokenizer(router: Router) -> TokenEncoder:
    enc = token_encoder(router.encoder)  # cache_size=0: the OnnxEncoder itself
    assert enc is not None
    return enc


def _warm(router: Router) -> None:
    for text in ("warm up the encoder", QUERY, TRANSFORMER_QUERY):
        router.classify(text)


class _NoForward:
    """The real tokenizer, with the transformer's forward pass replaced by a precomputed vector."""

    def __init__(self, inner: TokenEncoder, vector: np.ndarray) -> None:
        self.inner = inner
        self.vector = vector
        self.encoder_id = inner.encoder_id
        self.dimension = inner.dimension
        self.vocab_size = inner.vocab_size
        self.special_ids = inner.special_ids

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.inner.token_ids(texts)

    def encode_ids(self, ids: Sequence[np.ndarray], normalize: bool = True) -> np.ndarray:
        return np.repeat(self.vector, len(ids), axis=0)

    def encode_with_ids(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> np.ndarray:
        return self.encode_ids(ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.token_ids(texts))


def test_tier0_rules_hit_or_miss(benchmark: Any, router: Router) -> None:
    rules = _tier(router, "rules")
    assert isinstance(rules, RulesTier)
    benchmark(rules.rules.match, MISS)


def test_tokenize(benchmark: Any, router: Router) -> None:
    """The token ids the static tier computes once and the transformer reuses."""
    benchmark(_tokenizer(router).token_ids, [QUERY])


def test_static_tier_settles(benchmark: Any, router: Router) -> None:
    """Tier 1a alone on a query it settles, warm: tokenise, table lookup, head, checks, Decision."""
    static = _tier(router, "static")

    def settle() -> Query:
        q = Query(QUERY)
        static.settle([q])
        return q

    q = benchmark(settle)
    assert q.done and q.decision is not None and (q.decision.tier, q.decision.intent) == ("static", "balance")


def test_static_tier_passes_on(benchmark: Any, router: Router) -> None:
    """Tier 1a on a query it leaves to the transformer: what it adds to every such query."""
    static = _tier(router, "static")

    def settle() -> Query:
        q = Query(TRANSFORMER_QUERY)
        static.settle([q])
        return q

    q = benchmark(settle)
    assert not q.done and q.ids is not None


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
    """The whole chain on a query the transformer settles, its forward pass taken out: rules,
    tokenising, the static tier passing it on, head, search, per-intent similarity, calibration,
    the Decision."""
    no_forward = _NoForward(_tokenizer(router), router.encoder.encode([TRANSFORMER_QUERY]))
    skills = {i.name: i.skill for i in router.artifact.intents.intents}
    chain = Chain([_tier(router, "rules"), _tier(router, "static"),
                   EmbeddingTier(router.artifact, no_forward, skills, router.top_k)])

    def path() -> object:
        queries = chain.start([TRANSFORMER_QUERY])
        chain.run(queries)
        return chain.finish(queries)[0]

    decision = benchmark(path)
    assert (decision.tier, decision.intent) == ("embedding", "transfer")


@pytest.mark.parametrize("fixture", ROUTERS, ids=IDS)
def test_classify(benchmark: Any, request: pytest.FixtureRequest, fixture: str) -> None:
    """One query the static tier settles when it is on (the transformer answers it when off)."""
    router: Router = request.getfixturevalue(fixture)
    _warm(router)
    decision = benchmark(router.classify, QUERY)
    assert decision.intent == "balance"
    assert decision.tier == ("static" if fixture == "router" else "embedding")


@pytest.mark.parametrize("fixture", ROUTERS, ids=IDS)
def test_classify_clinc_cycle(benchmark: Any, request: pytest.FixtureRequest, fixture: str,
                              clinc_queries: list[str]) -> None:
    """CYCLE_ROUNDS calls over the shuffled CLINC150 test split (the same queries on and off), so
    the figure carries the static tier's real share."""
    router: Router = request.getfixturevalue(fixture)
    _warm(router)
    texts = itertools.cycle(clinc_queries)
    tiers: Counter[str] = Counter()

    def one() -> None:
        tiers[router.classify(next(texts)).tier] += 1

    benchmark.pedantic(one, rounds=CYCLE_ROUNDS, iterations=1)
    total = sum(tiers.values())
    print(f"\n{fixture}: tier share over {total} CLINC150 test queries: "
          + ", ".join(f"{t} {100 * n / total:.1f}%" for t, n in sorted(tiers.items())))
    assert ("static" in tiers) == (fixture == "router")


def test_classify_p50_p99_static_on_vs_off(router: Router, router_static_off: Router,
                                           clinc_queries: list[str]) -> None:
    """Not a pytest-benchmark figure and no timing assert: whole classify, one query at a time,
    over every CLINC150 test query, static on and off interleaved query by query (alternating
    which goes first) so both see the same machine load; prints p50/p99 and their ratios."""
    for r in (router, router_static_off):
        _warm(r)
    samples: dict[str, list[float]] = {"on": [], "off": []}
    tiers: Counter[str] = Counter()
    for n, text in enumerate(clinc_queries):
        order = [("on", router), ("off", router_static_off)]
        for key, r in order if n % 2 == 0 else order[::-1]:
            start = time.perf_counter_ns()
            decision = r.classify(text)
            samples[key].append((time.perf_counter_ns() - start) / 1e3)
            if key == "on":
                tiers[decision.tier] += 1
    stats = {key: (float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(np.mean(a)))
             for key, a in ((k, np.array(v)) for k, v in samples.items())}
    share = 100 * tiers["static"] / len(clinc_queries)
    print(f"\nclassify over {len(clinc_queries)} CLINC150 test queries, one at a time "
          f"(static tier settled {share:.1f}% of them):")
    for key, (p50, p99, mean) in stats.items():
        print(f"  static {key:>3}: p50 {p50:7.0f} us  p99 {p99:7.0f} us  mean {mean:7.0f} us")
    on, off = stats["on"], stats["off"]
    print(f"  ratio on/off: p50 {on[0] / off[0]:.3f}  p99 {on[1] / off[1]:.3f}  mean {on[2] / off[2]:.3f}")
