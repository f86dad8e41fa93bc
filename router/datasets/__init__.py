"""Named datasets shipped with the package: CLINC150 (CC BY 3.0) and BANKING77 (CC BY 4.0).

Each gives train / validation / test splits as ``Labelled`` (label ``oos`` = out-of-scope).
BANKING77 has no validation split: ``val`` is None and the builder cross-fits instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from router._intents import Labelled, read_labelled
from router.errors import ConfigError

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Splits:
    name: str
    train: Labelled
    val: Labelled | None
    test: Labelled


def _clinc150() -> Splits:
    data = json.loads((_HERE / "clinc150" / "data_full.json").read_text())

    def split(*keys: str) -> Labelled:
        rows = [row for key in keys for row in data[key]]
        return Labelled([r[0] for r in rows], [r[1] for r in rows])

    return Splits("clinc150", split("train", "oos_train"), split("val", "oos_val"), split("test", "oos_test"))


def _banking77() -> Splits:
    folder = _HERE / "banking77"
    return Splits("banking77", read_labelled(folder / "train.csv"), None, read_labelled(folder / "test.csv"))


DATASETS = {"clinc150": _clinc150, "banking77": _banking77}


def load_dataset(name: str) -> Splits:
    try:
        loader = DATASETS[name]
    except KeyError as exc:
        raise ConfigError(f"dataset={name!r} is not a shipped dataset; known: {sorted(DATASETS)}") from exc
    return loader()
