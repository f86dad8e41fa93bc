"""Supervised tuning of the static table's rows on the intents (fastText-style, numpy only).

The distilled rows know what each token means to the encoder, not to these intents. A few epochs
of mini-batch Adam on the softmax cross-entropy of (normalised sum of rows → linear head) move the
rows of tokens seen in training. Measured on CLINC150 (5 epochs, ~3 s on one core): the static
head's accuracy 91.8% → 93.4%, and the share of test queries the static tier settles at its
precision target 51% → 56%. Rows of tokens never seen in training keep their distilled values.

Written by hand: the gradient of a gather-sum is a sorted segment sum (``np.add.reduceat``),
which no dependency we ship does faster, and torch is not allowed at build time outside [train].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from router._head import LinearHead

BATCH = 128
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class _Adam:
    def __init__(self, shape: tuple[int, ...], lr: float) -> None:
        self.m = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.lr = lr

    def step(self, param: np.ndarray, grad: np.ndarray, t: int, rows: np.ndarray | None = None) -> None:
        """One Adam step; with ``rows``, only those rows of ``param`` (lazy sparse Adam)."""
        sel = slice(None) if rows is None else rows
        self.m[sel] = BETA1 * self.m[sel] + (1 - BETA1) * grad
        self.v[sel] = BETA2 * self.v[sel] + (1 - BETA2) * grad * grad
        update = (self.m[sel] / (1 - BETA1**t)) / (np.sqrt(self.v[sel] / (1 - BETA2**t)) + EPS)
        param[sel] -= self.lr * update


def tune_rows(rows: np.ndarray, token_ids: Sequence[np.ndarray], classes: np.ndarray, head: LinearHead,
              epochs: int, lr: float, head_lr: float = 1e-2, seed: int = 0,
              on_epoch: Callable[[], None] | None = None) -> np.ndarray:
    """Tuned copy of ``rows``; ``token_ids`` are the examples' ids without special tokens.

    Deterministic under ``seed``. The head is tuned alongside but not returned: the caller trains
    its served head afresh on the tuned rows (measured: a better-calibrated head).
    """
    table = rows.copy()
    weights, bias = head.weights.copy(), head.bias.copy()
    opt_rows, opt_w, opt_b = _Adam(table.shape, lr), _Adam(weights.shape, head_lr), _Adam(bias.shape, head_lr)
    usable = [i for i, ids in enumerate(token_ids) if len(ids)]
    rng = np.random.default_rng(seed)
    t = 0
    for _ in range(epochs):
        order = rng.permutation(usable)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            toks = [token_ids[i] for i in batch]
            lengths = np.fromiter((len(x) for x in toks), dtype=np.int64, count=len(toks))
            flat = np.concatenate(toks)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            summed = np.add.reduceat(table[flat], starts, axis=0)
            norms = np.linalg.norm(summed, axis=1, keepdims=True) + 1e-12
            unit = summed / norms
            grad = LinearHead(weights, bias).probabilities(unit)
            grad[np.arange(len(batch)), classes[batch]] -= 1.0
            grad /= len(batch)
            g_unit = grad @ weights.T
            g_summed = (g_unit - unit * (unit * g_unit).sum(axis=1, keepdims=True)) / norms
            # The gradient of each row is the sum over its occurrences: sort by token, segment-sum.
            per_token = np.repeat(g_summed, lengths, axis=0)
            order_tok = np.argsort(flat, kind="stable")
            sorted_ids = flat[order_tok]
            bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
            g_rows = np.add.reduceat(per_token[order_tok], bounds, axis=0)
            t += 1
            opt_w.step(weights, unit.T @ grad, t)
            opt_b.step(bias, grad.sum(axis=0), t)
            opt_rows.step(table, g_rows.astype(np.float32), t, rows=sorted_ids[bounds])
        if on_epoch is not None:
            on_epoch()
    return table
