"""What a fine-tune trains on, without torch: class ids, the held-out slice, and length-sorted batches."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from router._config import FinetuneConfig
from router._heldout import stratified_folds
from router._intents import OOS, Labelled, only
from router.errors import ConfigError

# Batches are length-sorted inside windows of this many batches: padding shrinks to a few tokens
# (CLINC150's queries are 5-20 tokens) while the order stays shuffled between windows.
SORT_WINDOW = 50


@dataclass
class TrainingSet:
    """The examples the encoder is tuned on, and the held-out queries it is judged (and calibrated) on."""

    train: Labelled  # in-scope examples, plus out-of-scope ones labelled ``oos``
    heldout: Labelled  # never trained on; ``oos`` for out-of-scope
    names: list[str]  # the intents, in head-class order
    held_out_slice: bool  # True when ``heldout`` was cut from the examples (no validation split)

    def classes(self, data: Labelled) -> np.ndarray:
        """Class id of each label: the intent's position, ``len(names)`` for out of scope."""
        index = {name: i for i, name in enumerate(self.names)}
        return np.array([index.get(lab, len(self.names)) if lab != OOS else len(self.names)
                         for lab in data.labels], dtype=np.int64)

    def digest(self) -> str:
        """sha256 of the training and held-out data (text, label, split), order included."""
        h = hashlib.sha256()
        for split, data in (("train", self.train), ("heldout", self.heldout)):
            for text, label in zip(data.texts, data.labels, strict=True):
                h.update(f"{split}\t{label}\t{text}\n".encode())
        return h.hexdigest()


def check_examples(pairs: Labelled) -> None:
    """Every intent needs 2 examples: one to train on, one to hold out (or a validation split)."""
    counts = Counter(lab for lab in pairs.labels if lab != OOS)
    thin = sorted(name for name, n in counts.items() if n < 2)
    if thin:
        shown = ", ".join(f"{name!r} ({counts[name]})" for name in thin[:10])
        raise ConfigError(f"finetune needs at least 2 examples per intent; {len(thin)} intent(s) have fewer: "
                          f"{shown}{' ...' if len(thin) > 10 else ''}")


def training_set(pairs: Labelled, names: list[str], validation: Labelled | None,
                 config: FinetuneConfig) -> TrainingSet:
    """Split the build's examples: with a validation split it is the held-out set; without one, a
    stratified ``config.holdout`` share of each intent (and of the out-of-scope examples) is."""
    check_examples(pairs)
    if validation is not None:
        known = set(names)
        heldout = only(validation, [lab == OOS or lab in known for lab in validation.labels])
        train, cut = pairs, False
    else:
        folds = max(2, round(1 / config.holdout))
        fold = stratified_folds(np.array(pairs.labels), folds, seed=config.seed)
        train, heldout, cut = only(pairs, list(fold != 0)), only(pairs, list(fold == 0)), True
    if not any(lab != OOS for lab in heldout.labels):
        raise ConfigError("finetune needs in-scope held-out queries for early stopping and the thresholds; the "
                          "validation split has none of the intents' labels")
    n_train = sum(lab != OOS for lab in train.labels)
    if config.batch_size > n_train:
        raise ConfigError(f"finetune.batch_size={config.batch_size} is larger than the {n_train} in-scope "
                          f"training examples; lower it")
    return TrainingSet(train, heldout, names, cut)


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of one epoch's batches: shuffled, then sorted by length within windows of
    ``SORT_WINDOW`` batches so each batch pads little, then the batches shuffled."""
    order = rng.permutation(len(lengths))
    window = batch_size * SORT_WINDOW
    out: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [out[i] for i in rng.permutation(len(out))]


def pad(ids: list[np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of ``rows``, padded to the longest of them."""
    width = max(len(ids[r]) for r in rows)
    padded = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(padded)
    for n, r in enumerate(rows):
        padded[n, : len(ids[r])] = ids[r]
        mask[n, : len(ids[r])] = 1
    return padded, mask
