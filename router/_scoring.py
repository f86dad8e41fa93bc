"""Tier 1 evidence shared by the builder (held-out queries in bulk) and serving (one query)."""

from __future__ import annotations

import numpy as np


def class_max_similarity(similarities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n, n_examples) similarities → (n, n_classes): the nearest example of each class."""
    result: np.ndarray = np.maximum.reduceat(similarities, offsets[:-1], axis=1)
    return result


def acceptance_score(probability: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """The head's probability of its best intent times the similarity to that intent's nearest example."""
    score: np.ndarray = probability * np.clip(similarity, 0.0, None)
    return score
