"""Vector indexes behind one Protocol, in ``VECTOR_INDEXES``, a ``Registry`` keyed by ``vector_index.kind``.

``flat``: FAISS exact inner product; ``hnsw``: FAISS HNSW graph (approximate,
sub-millisecond at tens of thousands of vectors); ``numpy``: an in-memory exact
scan with no FAISS, for tests. ``auto`` picks flat below ``auto_hnsw_from``
vectors and HNSW from there on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from router._registry import Registry
from router.errors import ConfigError, IndexLoadError


class VectorIndex(Protocol):
    kind: str

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (similarities, ids), each of shape (len(queries), k); missing ids are -1."""
        ...

    def save(self, path: Path) -> None: ...

    def __len__(self) -> int: ...


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise IndexLoadError("the vector index needs faiss: pip install faiss-cpu") from exc
    return faiss


class FaissIndex:
    """Any FAISS index over inner product (vectors are unit length, so this is cosine)."""

    def __init__(self, kind: str, index: object) -> None:
        self.kind = kind
        self._index = index

    def add(self, vectors: np.ndarray) -> None:
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))  # type: ignore[attr-defined]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)  # type: ignore[attr-defined]
        return sims, ids

    def set_ef_search(self, ef: int) -> None:
        if hasattr(self._index, "hnsw"):
            self._index.hnsw.efSearch = ef

    def save(self, path: Path) -> None:
        _faiss().write_index(self._index, str(path))

    def __len__(self) -> int:
        return int(self._index.ntotal)  # type: ignore[attr-defined]


class NumpyIndex:
    """Exact scan in numpy: the loopback implementation for tests, no FAISS involved."""

    kind = "numpy"

    def __init__(self, dimension: int) -> None:
        self._vectors = np.zeros((0, dimension), dtype=np.float32)

    def add(self, vectors: np.ndarray) -> None:
        self._vectors = np.vstack([self._vectors, vectors.astype(np.float32)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self._vectors.T
        k_eff = min(k, sims.shape[1])
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :k_eff]
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        out_s[:, :k_eff] = np.take_along_axis(sims, ids, axis=1)
        out_i[:, :k_eff] = ids
        return out_s, out_i

    def save(self, path: Path) -> None:
        np.save(path, self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)


class LayeredIndex:
    """A served index with an exact layer on top: learned examples (router/learn/) join the top layer
    without copying or rebuilding the base (an HNSW graph of tens of thousands of vectors). Ids of the top
    layer follow the base's. ``router build --compact`` folds both into one index of the base's kind."""

    def __init__(self, base: VectorIndex, top: np.ndarray) -> None:
        self.kind = base.kind
        self.base = base
        self.top = np.ascontiguousarray(top, dtype=np.float32)

    def add(self, vectors: np.ndarray) -> None:
        self.top = np.vstack([self.top, np.asarray(vectors, dtype=np.float32)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self.base.search(queries, k)
        if not len(self.top):
            return sims, ids
        # An exact scan of the top layer (learning.max_learned rows at most: ~2 ms per query at 10,000), then
        # its best k by a partial sort, merged with the base's k.
        top_sims = np.asarray(queries, dtype=np.float32) @ self.top.T
        top_k = min(k, top_sims.shape[1])
        part = np.argpartition(-top_sims, top_k - 1, axis=1)[:, :top_k] if top_k < top_sims.shape[1] else \
            np.broadcast_to(np.arange(top_sims.shape[1]), top_sims.shape)
        both_sims = np.hstack([sims, np.take_along_axis(top_sims, part, axis=1)])
        both_ids = np.hstack([ids, part + len(self.base)])
        order = np.argsort(-both_sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(both_sims, order, axis=1), np.take_along_axis(both_ids, order, axis=1)

    def save(self, path: Path) -> None:
        # Compaction writes a new index of the base's kind from every example vector instead (router/learn/).
        raise ConfigError("a layered index is not saved as such: `router build --compact` folds it into one")

    def __len__(self) -> int:
        return len(self.base) + len(self.top)


def _new_flat(dimension: int, options: dict[str, int]) -> VectorIndex:
    return FaissIndex("flat", _faiss().IndexFlatIP(dimension))


def _new_hnsw(dimension: int, options: dict[str, int]) -> VectorIndex:
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(dimension, int(options.get("hnsw_m", 32)), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(options.get("ef_construction", 80))
    index.hnsw.efSearch = int(options.get("ef_search", 32))
    return FaissIndex("hnsw", index)


def _new_numpy(dimension: int, options: dict[str, int]) -> VectorIndex:
    return NumpyIndex(dimension)


VECTOR_INDEXES: Registry[Callable[[int, dict[str, int]], VectorIndex]] = Registry(
    "vector index", "vector_index.kind", {"flat": _new_flat, "hnsw": _new_hnsw, "numpy": _new_numpy})


def choose_kind(kind: str, n_vectors: int, auto_hnsw_from: int) -> str:
    if kind == "auto":
        return "hnsw" if n_vectors >= auto_hnsw_from else "flat"
    VECTOR_INDEXES.get(kind)  # an unknown kind is a ConfigError naming the known ones
    return kind


def new_index(kind: str, dimension: int, options: dict[str, int]) -> VectorIndex:
    return VECTOR_INDEXES.get(kind)(dimension, options)


def load_index(kind: str, path: Path, options: dict[str, int]) -> VectorIndex:
    if not path.is_file():
        raise IndexLoadError(f"vector index file {path} is missing; rebuild with: router build")
    if kind == "numpy":
        vectors = np.load(path)
        index = NumpyIndex(vectors.shape[1])
        index.add(vectors)
        return index
    faiss = _faiss()
    try:
        loaded = FaissIndex(kind, faiss.read_index(str(path)))
    except RuntimeError as exc:  # faiss reports unreadable files as RuntimeError
        raise IndexLoadError(f"vector index file {path} is unreadable: {exc}") from exc
    if "ef_search" in options:
        loaded.set_ef_search(int(options["ef_search"]))
    return loaded
