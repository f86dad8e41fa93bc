"""A deterministic feature-hashing encoder: no model file, for fast tests of everything around the encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import regex

from router.encoders._base import normalize

_WORD = regex.compile(r"\w+")


class HashingEncoder:
    def __init__(self, dimension: int = 384) -> None:
        self._dimension = dimension

    @property
    def encoder_id(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dimension] += 1.0 if (h >> 63) else -1.0
        out[np.all(out == 0, axis=1), 0] = 1.0  # an empty text still gets a unit vector
        return normalize(out)
