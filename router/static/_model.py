"""Tier 1a's part of a built index: ``static.npz`` (table, head, example vectors) and its manifest record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ConfigDict

from router._calibration import Calibration
from router._head import LinearHead
from router._strict import Strict
from router.errors import IndexLoadError, StaleIndexError
from router.static._table import StaticTable

STATIC_FILE = "static.npz"


class HeldoutFigures(Strict):
    """What the whole pipeline accepts on the held-out split (out-of-scope queries weighted to the prior)."""

    coverage: float | None
    precision: float | None
    oos_recall: float | None


class StaticManifest(Strict):
    model_config = ConfigDict(ser_json_inf_nan="constants")
    encoder_id: str  # the encoder the table was distilled from
    sha256: str  # of the served arrays (rows, head, examples); the file itself is checked by its record in ``files``
    vocab: int
    dimension: int
    weighting: str
    # Held-out coverage at the static target for each weighting tried (``weighting: auto``).
    weighting_coverage: dict[str, float]
    calibration: Calibration
    table_cached: bool
    table_seconds: float
    tuned: bool  # rows tuned on the intents (static.tune_epochs > 0)
    # Held-out figures of the whole pipeline with the static tier, and of the transformer alone.
    end_to_end: HeldoutFigures
    transformer_only: HeldoutFigures


@dataclass
class StaticModel:
    table: StaticTable
    head: LinearHead
    examples: np.ndarray  # static vectors of the examples, grouped by head class like examples.npz
    offsets: np.ndarray
    # Learned out-of-scope examples in the table's space (router/learn/); not part of static.npz.
    oos_examples: np.ndarray | None = None

    def save(self, folder: Path) -> None:
        np.savez(folder / STATIC_FILE, rows=self.table.rows, encoder_id=np.array(self.table.encoder_id),
                 specials=np.array([self.table.prefix, self.table.suffix]), weights=self.head.weights,
                 bias=self.head.bias, examples=self.examples, offsets=self.offsets)

    @classmethod
    def load(cls, folder: Path, record: StaticManifest, encoder_id: str) -> StaticModel:
        """Refuse a table from another encoder (stale). Its bytes were checked against the manifest's record
        of the file (``router.artifact.open_index``) before: its arrays are not hashed a second time."""
        path = folder / STATIC_FILE
        try:
            with np.load(path) as data:
                built_for = str(data["encoder_id"])
                rows = np.ascontiguousarray(data["rows"], dtype=np.float32)
                prefix, suffix = (int(v) for v in data["specials"])
                head = LinearHead(np.ascontiguousarray(data["weights"]), np.ascontiguousarray(data["bias"]))
                examples = np.ascontiguousarray(data["examples"])
                offsets = data["offsets"]
        except (OSError, ValueError, KeyError) as exc:
            raise IndexLoadError(f"index {folder}: {STATIC_FILE} is missing or corrupt ({exc}); rebuild it") from exc
        rebuild = "rebuild it with: router build (or serve it with --static off)"
        for stale in (built_for, record.encoder_id):  # the file's own record, then the manifest's
            if stale != encoder_id:
                raise StaleIndexError(
                    f"index {folder}: its static table was distilled from encoder {stale!r}, but the index "
                    f"uses {encoder_id!r}; {rebuild}")
        return cls(StaticTable(rows, built_for, prefix, suffix), head, examples, offsets)

    def digest(self) -> str:
        """sha256 over every served array: the table, the head and the example vectors."""
        h = hashlib.sha256()
        for array in (self.table.rows, self.head.weights, self.head.bias, self.examples, self.offsets):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()
