"""The linear head: multinomial logistic regression on frozen sentence embeddings.

Trained full-batch with Adam on the softmax cross-entropy plus a small L2 term;
numpy only, deterministic (zero init, no sampling). Serving is one matrix-vector
product and a softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LinearHead:
    weights: np.ndarray  # (dimension, n_classes [+ 1]) float32
    bias: np.ndarray  # (n_classes [+ 1],) float32
    # The last column is an out-of-scope class (a fine-tuned head trained with one): it takes its share
    # of the softmax, so an out-of-scope query's intents get less probability, and is never returned.
    reject: bool = False

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0]) - int(self.reject)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.weights + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        return logits[..., :-1] if self.reject else logits  # type: ignore[no-any-return]

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights, bias=self.bias, reject=np.array(self.reject))

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path) as data:
            reject = bool(data["reject"]) if "reject" in data.files else False
            return cls(np.ascontiguousarray(data["weights"]), np.ascontiguousarray(data["bias"]), reject)


def train_head(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    l2: float = 1e-5,
    epochs: int = 300,
    learning_rate: float = 0.1,
    on_epoch: Callable[[], None] | None = None,
    init: LinearHead | None = None,
    sample_weight: np.ndarray | None = None,
) -> LinearHead:
    """Fit softmax regression; ``labels`` are class indices in ``[0, n_classes)``.

    ``on_epoch`` is called after each epoch (a progress bar's tick). ``init``: start from this head's
    weights (a warm-started refit: learning from feedback, router/learn/); ``sample_weight``: each row's
    weight in the loss (default 1 each)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    onehot = np.zeros((n, n_classes), dtype=np.float32)
    onehot[np.arange(n), labels] = 1.0
    if sample_weight is not None:  # the mean over rows becomes a weighted mean
        onehot_scale = (np.asarray(sample_weight, dtype=np.float32) * (n / float(np.sum(sample_weight))))[:, None]
    else:
        onehot_scale = None
    w = np.zeros((dim, n_classes), dtype=np.float32) if init is None else init.weights.astype(np.float32, copy=True)
    b = np.zeros(n_classes, dtype=np.float32) if init is None else init.bias.astype(np.float32, copy=True)
    m_w, v_w = np.zeros_like(w), np.zeros_like(w)
    m_b, v_b = np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    head = LinearHead(w, b)
    for step in range(1, epochs + 1):
        grad = head.probabilities(x)
        grad -= onehot
        if onehot_scale is not None:
            grad *= onehot_scale
        grad /= n
        g_w = x.T @ grad + l2 * w
        g_b = grad.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        correction1, correction2 = 1 - beta1**step, 1 - beta2**step
        w -= learning_rate * (m_w / correction1) / (np.sqrt(v_w / correction2) + eps)
        b -= learning_rate * (m_b / correction1) / (np.sqrt(v_b / correction2) + eps)
        if on_epoch is not None:
            on_epoch()
    return LinearHead(w.astype(np.float32), b.astype(np.float32), reject=init is not None and init.reject)
