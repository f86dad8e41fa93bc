from pathlib import Path

import numpy as np
import pytest

from router import ConfigError, IndexLoadError
from router.vectors import VECTOR_INDEXES, choose_kind, load_index, new_index


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:20] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    return base, queries / np.linalg.norm(queries, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", sorted(VECTOR_INDEXES))
def test_every_kind_finds_the_nearest_vector(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = new_index(kind, 32, {"ef_search": 64})
    index.add(base)
    sims, ids = index.search(queries, 5)
    assert len(index) == 2000 and sims.shape == (20, 5)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.95
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("kind", sorted(VECTOR_INDEXES))
def test_save_and_load_round_trip(kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    base, queries = data
    index = new_index(kind, 32, {})
    index.add(base)
    index.save(tmp_path / "v")
    loaded = load_index(kind, tmp_path / "v" if kind != "numpy" else tmp_path / "v.npy", {})
    assert np.array_equal(loaded.search(queries, 3)[1], index.search(queries, 3)[1])


def test_auto_switches_to_hnsw_at_the_threshold() -> None:
    assert choose_kind("auto", 4095, 4096) == "flat"
    assert choose_kind("auto", 4096, 4096) == "hnsw"
    with pytest.raises(ConfigError, match="vector_index.kind='annoy'"):
        choose_kind("annoy", 10, 4096)


def test_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match="missing"):
        load_index("flat", tmp_path / "none.faiss", {})
    (tmp_path / "bad.faiss").write_bytes(b"not faiss")
    with pytest.raises(IndexLoadError, match="unreadable"):
        load_index("flat", tmp_path / "bad.faiss", {})


def test_numpy_index_pads_when_k_exceeds_size() -> None:
    index = new_index("numpy", 2, {})
    index.add(np.eye(2, dtype=np.float32))
    sims, ids = index.search(np.array([[1.0, 0.0]], dtype=np.float32), 3)
    assert ids.tolist() == [[0, 1, -1]]
