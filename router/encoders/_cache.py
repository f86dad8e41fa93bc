"""An LRU cache of recent query embeddings in front of any encoder."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from threading import Lock

import numpy as np

from router.encoders._base import Encoder, TokenEncoder


class CachedEncoder:
    def __init__(self, inner: Encoder, size: int) -> None:
        self.inner = inner
        # Plain attributes: the identity and width are the inner encoder's, fixed for its life.
        self.encoder_id = inner.encoder_id
        self.dimension = inner.dimension
        self.size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(texts, lambda rows: self.inner.encode([texts[r] for r in rows]))

    def encode_with_ids(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> np.ndarray:
        inner = self.inner
        assert isinstance(inner, TokenEncoder)
        return self._cached(texts, lambda rows: inner.encode_ids([ids[r] for r in rows]))

    def _cached(self, texts: Sequence[str], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """Cached rows from the cache; ``compute`` gets the first row of each missing text."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for row, text in enumerate(texts):
                cached = self._cache.get(text)
                if cached is None:
                    missing.setdefault(text, []).append(row)
                else:
                    self._cache.move_to_end(text)
                    out[row] = cached
            self.hits += len(texts) - sum(len(rows) for rows in missing.values())
            self.misses += len(missing)
        if missing:
            fresh = compute([rows[0] for rows in missing.values()])
            with self._lock:
                for vector, (text, rows) in zip(fresh, missing.items(), strict=True):
                    out[rows] = vector
                    self._cache[text] = vector
                    if len(self._cache) > self.size:
                        self._cache.popitem(last=False)
        return out
