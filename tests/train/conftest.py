"""Fixtures of the fine-tuning tests: a small CLINC150 slice as labelled files, and config files on it.

Nothing here imports torch: tests/train/test_data.py and test_bad_input.py run in the default
``make test``, without the [train] extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from router._intents import OOS, Labelled
from router._progress import Progress
from router.datasets import load_dataset

# Five CLINC150 intents far apart, so one short epoch tells them apart.
INTENTS = ["weather", "timer", "translate", "book_flight", "balance"]
# Per intent: training and validation rows taken from CLINC150's own splits; plus out-of-scope rows.
N_TRAIN, N_VAL, N_OOS_TRAIN, N_OOS_VAL = 40, 10, 20, 10
# One clear query per intent, none of them in CLINC150's train or validation split.
CLEAR = {
    "weather": "what will the weather be like in paris tomorrow",
    "timer": "set a timer for fifteen minutes please",
    "translate": "how do you say good morning in german",
    "book_flight": "book me a flight from boston to denver on friday",
    "balance": "how much money is left in my checking account",
}


@dataclass(frozen=True)
class SliceFiles:
    train: Path  # JSONL {"text", "intent"}: N_TRAIN per intent and N_OOS_TRAIN out-of-scope
    val: Path  # JSONL: N_VAL per intent and N_OOS_VAL out-of-scope


def take(data: Labelled, per_intent: int, oos: int) -> list[dict[str, str]]:
    """The first ``per_intent`` rows of each of INTENTS and the first ``oos`` out-of-scope rows, in file order."""
    want = dict.fromkeys(INTENTS, per_intent) | {OOS: oos}
    rows = []
    for text, label in zip(data.texts, data.labels, strict=True):
        if want.get(label, 0) > 0:
            want[label] -= 1
            rows.append({"text": text, "intent": label})
    assert not any(want.values()), want
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path: Path, files: SliceFiles, name: str = "slice", **sections: Any) -> Path:
    """A YAML router config on the slice (encoder as in tests/conftest.py) with ``sections`` added."""
    data: dict[str, Any] = {"name": name, "intents": str(files.train), "validation": str(files.val),
                            "encoder": {"threads": 1, "cache_size": 0}, **sections}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Recorder(Progress):
    """A quiet progress that keeps its lines (the trainer's epoch and "resuming" notes)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(scope="session")
def slice_files(tmp_path_factory: pytest.TempPathFactory) -> SliceFiles:
    clinc = load_dataset("clinc150")
    assert clinc.val is not None
    folder = tmp_path_factory.mktemp("slice")
    return SliceFiles(write_jsonl(folder / "train.jsonl", take(clinc.train, N_TRAIN, N_OOS_TRAIN)),
                      write_jsonl(folder / "val.jsonl", take(clinc.val, N_VAL, N_OOS_VAL)))
