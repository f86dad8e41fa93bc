"""LayeredIndex: a built index with an exact top layer of learned vectors, searched as one index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router import ConfigError
from router.vectors import LayeredIndex, NumpyIndex, new_index

DIM = 16


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(vectors: np.ndarray) -> NumpyIndex:
    index = NumpyIndex(DIM)
    index.add(vectors)
    return index


@pytest.mark.parametrize("kind", ["flat", "numpy"])
def test_search_merges_base_and_top(kind: str) -> None:
    base_vectors, top = unit(50, 0), unit(6, 1)
    base = new_index(kind, DIM, {})
    base.add(base_vectors)
    layered = LayeredIndex(base, top)
    assert layered.kind == kind and len(layered) == 56
    queries = np.vstack([top[2], base_vectors[7], unit(5, 2)])
    sims, ids = layered.search(queries, 5)
    assert ids[0, 0] == 50 + 2 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)  # top ids follow the base's
    assert ids[1, 0] == 7
    # The same answer as one exact index over both.
    want_sims, want_ids = exact(np.vstack([base_vectors, top])).search(queries, 5)
    assert np.array_equal(ids, want_ids)
    assert np.allclose(sims, want_sims, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["flat", "numpy"])
def test_k_larger_than_either_layer(kind: str) -> None:
    base = new_index(kind, DIM, {})
    base.add(unit(3, 0))
    layered = LayeredIndex(base, unit(2, 1))
    query = unit(1, 3)
    sims, ids = layered.search(query, 4)
    assert sims.shape == ids.shape == (1, 4)
    assert len(set(ids[0].tolist())) == 4 and set(ids[0].tolist()) <= set(range(5))
    sims, ids = layered.search(query, 8)
    assert ids.shape == (1, 8)
    assert sorted(ids[0, :5].tolist()) == [0, 1, 2, 3, 4]  # every vector, best first ...
    assert ids[0, 5:].tolist() == [-1, -1, -1]  # ... then the missing ones
    assert np.all(np.diff(sims[0, :5]) <= 1e-6)


def test_empty_top_is_the_base() -> None:
    base_vectors = unit(20, 0)
    base = exact(base_vectors)
    layered = LayeredIndex(base, np.zeros((0, DIM), dtype=np.float32))
    queries = unit(4, 1)
    assert len(layered) == 20
    for got, want in zip(layered.search(queries, 3), base.search(queries, 3), strict=True):
        assert np.array_equal(got, want)
    layered.add(queries[:1])  # add() grows the top layer
    assert len(layered) == 21 and len(base) == 20
    assert layered.search(queries[:1], 1)[1][0, 0] == 20


def test_a_layered_index_is_not_saved_as_such(tmp_path: Path) -> None:
    layered = LayeredIndex(exact(unit(3, 0)), unit(1, 1))
    with pytest.raises(ConfigError, match="compact"):
        layered.save(tmp_path / "v")
