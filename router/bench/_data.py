"""The splits a comparison runs on: a shipped dataset, optionally sliced, and the seeded query samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router._intents import OOS, Labelled, only
from router.datasets import Splits, load_dataset


@dataclass(frozen=True)
class BenchData:
    """A dataset's splits as the methods see them, plus ``order``: a seeded permutation of the
    test split whose first n rows are every method's sample of size n, so samples nest."""

    name: str
    train: Labelled
    val: Labelled | None
    test: Labelled
    order: np.ndarray

    @property
    def intents(self) -> list[str]:
        return sorted({lab for lab in self.train.labels if lab != OOS})

    def sample(self, n: int | None) -> list[int]:
        """Row numbers of the test queries in a sample of ``n`` (all of them for None)."""
        rows = self.order if n is None else self.order[:n]
        return sorted(int(i) for i in rows)

    def write_train(self, folder: Path) -> tuple[Path, Path | None]:
        """The training (and validation) rows as JSONL files, which the Builder reads."""
        folder.mkdir(parents=True, exist_ok=True)
        train = _write_jsonl(folder / f"{self.name}-train.jsonl", self.train)
        val = _write_jsonl(folder / f"{self.name}-val.jsonl", self.val) if self.val is not None else None
        return train, val


def _write_jsonl(path: Path, data: Labelled) -> Path:
    path.write_text("".join(json.dumps({"text": t, "intent": lab}) + "\n"
                            for t, lab in zip(data.texts, data.labels, strict=True)))
    return path


def _keep(data: Labelled, intents: set[str], per_intent: int | None) -> Labelled:
    """Rows of ``intents`` and out-of-scope rows, at most ``per_intent`` of each label."""
    counts: dict[str, int] = {}
    texts, labels = [], []
    for text, label in zip(data.texts, data.labels, strict=True):
        if label != OOS and label not in intents:
            continue
        counts[label] = counts.get(label, 0) + 1
        if per_intent is None or counts[label] <= per_intent:
            texts.append(text)
            labels.append(label)
    return Labelled(texts, labels)


def load_bench_data(name: str, *, max_intents: int | None = None, train_per_intent: int | None = None,
                    test_limit: int | None = None, seed: int = 0) -> BenchData:
    """``name``'s splits; ``max_intents`` keeps the first intents by name (and out-of-scope rows),
    ``train_per_intent`` caps training and validation rows per label, ``test_limit`` the test split."""
    splits: Splits = load_dataset(name)
    train, val, test = splits.train, splits.val, splits.test
    if max_intents is not None or train_per_intent is not None:
        keep = set(sorted({lab for lab in train.labels if lab != OOS})[:max_intents])
        train = _keep(train, keep, train_per_intent)
        val = _keep(val, keep, train_per_intent) if val is not None else None
        test = _keep(test, keep, None)
    order = np.random.default_rng(seed).permutation(len(test))
    if test_limit is not None:
        rows = sorted(order[:test_limit].tolist())
        test = Labelled([test.texts[i] for i in rows], [test.labels[i] for i in rows])
        order = np.random.default_rng(seed).permutation(len(test))
    return BenchData(name, train, val, test, order)


def holdout(data: Labelled, share: float, seed: int = 0) -> tuple[Labelled, Labelled]:
    """Split off a stratified ``share`` of each label: (rest, held out)."""
    rng = np.random.default_rng(seed)
    labels = np.array(data.labels)
    held = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        held[rows[: max(1, round(len(rows) * share))]] = True
    return only(data, list(~held)), only(data, list(held))
