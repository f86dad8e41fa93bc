"""The encoder Protocol and the pooling every transformer backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def encoder_id(self) -> str:
        """Identity written into index manifests (model name and weights hash)."""
        ...

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dimension), rows of unit length."""
        ...


@runtime_checkable
class TokenEncoder(Encoder, Protocol):
    """An encoder that exposes its tokenizer: what the static tier needs to distil a token table
    and to tokenise a query once for both the table lookup and the transformer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def special_ids(self) -> tuple[list[int], list[int]]:
        """Ids placed before and after every text (for BERT: ``[CLS]`` and ``[SEP]``)."""
        ...

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def encode_ids(self, ids: Sequence[np.ndarray], normalize: bool = True) -> np.ndarray:
        """Vectors of tokenised texts; ``normalize=False`` keeps the raw mean-pooled length."""
        ...

    def encode_with_ids(self, texts: Sequence[str], ids: Sequence[np.ndarray]) -> np.ndarray:
        """Like ``encode``, reusing ``ids`` (``texts`` key a cache when there is one)."""
        ...


def mean_pool(hidden: np.ndarray, mask: np.ndarray, unit: bool = True) -> np.ndarray:
    """Mean of token vectors over the attention mask, then L2-normalised (sentence-transformers' recipe)."""
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    pooled = summed / np.clip(m.sum(axis=1), 1e-9, None)
    return normalize(pooled) if unit else np.ascontiguousarray(pooled, dtype=np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)
