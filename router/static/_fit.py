"""Build tier 1a: pick the token weighting, train the static head, calibrate it on held-out data.

The static tier accepts a query only where held-out accepted precision reaches its own, stricter
target (``static.target_precision``, default 0.99), with out-of-scope queries weighted up to the
expected share and counted as wrong, and only if the query passes an out-of-scope check in static
space (similarity to the best intent's nearest example above a floor). Everything else goes on
to the transformer, whose threshold is then fitted jointly: see ``Builder``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router._calibration import Calibration, fit_calibration
from router._config import CalibrationConfig, HeadConfig, StaticConfig
from router._head import LinearHead, train_head
from router._heldout import Evidence, group_by_class, heldout_evidence, score_queries, stratified_folds
from router._progress import QUIET, Progress, make_progress
from router.encoders._base import TokenEncoder
from router.errors import ConfigError
from router.static._model import StaticModel
from router.static._table import WEIGHTINGS, StaticTable, cached_raw_table, project, token_weights
from router.static._tune import tune_rows

# ``weighting: auto`` compares the weightings with heads trained this much shorter.
SELECTION_EPOCH_SHARE = 4


@dataclass
class HeldoutIds:
    """Token ids of the build's data, in the row order of the transformer's vectors."""

    examples: Sequence[np.ndarray]  # in-scope examples
    classes: np.ndarray
    n_classes: int
    oos: Sequence[np.ndarray]  # out-of-scope examples (cross-fitting only)
    validation: tuple[Sequence[np.ndarray], np.ndarray] | None  # (ids, true classes, -1 out of scope)
    folds: int


@dataclass
class StaticFit:
    model: StaticModel
    weighting: str
    weighting_coverage: dict[str, float]
    calibration: Calibration
    evidence: Evidence
    table_cached: bool
    table_seconds: float
    tuned: bool

    def accepted(self) -> np.ndarray:
        """Held-out rows the static tier accepts (aligned with the transformer's held-out rows)."""
        c, e = self.calibration, self.evidence
        result: np.ndarray = (e.score >= c.accept_threshold) & (e.top_similarity >= c.oos_similarity_floor)
        return result


def check_static_dim(config: StaticConfig, encoder: TokenEncoder) -> None:
    dim = config.dim
    if dim is not None and dim > encoder.dimension:
        raise ConfigError(f"static.dim={dim} is larger than the encoder's dimension {encoder.dimension} "
                          f"({encoder.encoder_id}); use a value in 1..{encoder.dimension} or leave it unset")


class StaticFitter:
    def __init__(self, config: StaticConfig, calibration: CalibrationConfig, head: HeadConfig,
                 models_dir: str | None = None, progress: bool | Progress = False) -> None:
        self.config = config
        self.calibration = calibration
        self.head = head
        self.models_dir = models_dir
        self.progress = make_progress(progress)

    def _trainer(self, n_classes: int, epochs: int,
                 on_epoch: Callable[[], None] | None = None) -> Callable[[np.ndarray, np.ndarray], LinearHead]:
        h = self.head
        return lambda x, y: train_head(x, y, n_classes, l2=h.l2, epochs=epochs, learning_rate=h.learning_rate,
                                       on_epoch=on_epoch)

    def _crossfit_untuned(self, table: StaticTable, data: HeldoutIds, epochs: int) -> Evidence:
        """Out-of-fold evidence without tuning: enough to compare weightings."""
        oos = table.embed(data.oos) if len(data.oos) else np.zeros((0, table.dimension), np.float32)
        return heldout_evidence(self._trainer(data.n_classes, epochs), table.embed(data.examples), data.classes,
                                data.n_classes, oos, None, data.folds)

    def _model(self, table: StaticTable, ids: Sequence[np.ndarray], classes: np.ndarray, n_classes: int,
               short: int, start_head: LinearHead | None = None, progress: Progress | None = None) -> StaticModel:
        """Tune the rows on these examples (when on), then train the served head on the tuned vectors.

        With ``progress`` (the served model, not the cross-fitted ones) each step shows as a stage."""
        show = progress if progress is not None else QUIET
        if self.config.tune_epochs > 0:
            if start_head is None:
                start_head = self._trainer(n_classes, short)(table.embed(ids), classes)
            with show.stage("static: tune rows", total=self.config.tune_epochs, unit="epoch") as bar:
                rows = tune_rows(table.rows, [table.strip(row) for row in ids], classes, start_head,
                                 self.config.tune_epochs, self.config.tune_lr, on_epoch=bar.update)
            table = StaticTable(rows, table.encoder_id, table.prefix, table.suffix)
        vectors = table.embed(ids)
        with show.stage("static: fit head", total=self.config.epochs, unit="epoch") as bar:
            head = self._trainer(n_classes, self.config.epochs, bar.update)(vectors, classes)
        examples, offsets = group_by_class(vectors, classes, n_classes)
        return StaticModel(table, head, examples, offsets)

    def _crossfit(self, table: StaticTable, data: HeldoutIds, short: int) -> Evidence:
        """Out-of-fold evidence with the tuning inside each fold, in ``heldout_evidence``'s row order
        (same folds, same seed), so it lines up with the transformer's rows for the joint fit."""
        fold = stratified_folds(data.classes, data.folds)
        oos_fold = np.arange(len(data.oos)) % data.folds
        parts = []
        for f in self.progress.iterate(range(data.folds), "static: cross-fit", unit="fold"):
            keep = np.flatnonzero(fold != f).tolist()
            model = self._model(table, [data.examples[i] for i in keep], data.classes[keep], data.n_classes, short)
            held = [data.examples[i] for i in np.flatnonzero(fold == f).tolist()]
            held += [data.oos[i] for i in np.flatnonzero(oos_fold == f).tolist()]
            truth = np.concatenate([data.classes[fold == f], np.full(int((oos_fold == f).sum()), -1)])
            parts.append(score_queries(model.head, model.examples, model.offsets, model.table.embed(held), truth))
        return Evidence(*(np.concatenate([getattr(p, k) for p in parts])
                          for k in ("best", "score", "top_similarity", "nearest", "truth")))

    def _calibrate(self, e: Evidence) -> Calibration:
        c = self.calibration
        return fit_calibration(e.score, e.correct, e.is_oos, e.top_similarity, self.config.target_precision,
                               c.oos_prior, c.z, self.config.oos_floor_quantile)

    def fit(self, encoder: TokenEncoder, data: HeldoutIds) -> StaticFit:
        check_static_dim(self.config, encoder)
        dim = self.config.dim
        t = time.perf_counter()
        raw, cached = cached_raw_table(encoder, self.models_dir, progress=self.progress)
        table_seconds = time.perf_counter() - t
        centred = project(raw, dim)
        prefix, suffix = (len(part) for part in encoder.special_ids)
        train_tokens = [ids[prefix : len(ids) - suffix] for ids in data.examples]

        def table_for(weighting: str) -> StaticTable:
            weights = token_weights(weighting, train_tokens, len(centred))
            return StaticTable(np.ascontiguousarray(centred * weights[:, None]), encoder.encoder_id, prefix, suffix)

        candidates = list(WEIGHTINGS) if self.config.weighting == "auto" else [self.config.weighting]
        coverage: dict[str, float] = {}
        short = max(1, self.config.epochs // SELECTION_EPOCH_SHARE)
        # With a validation split the short head of the chosen weighting (trained on every example)
        # also starts the tuning: one head fewer to train.
        short_heads: dict[str, LinearHead] = {}
        if len(candidates) > 1:
            for weighting in self.progress.iterate(candidates, "static: choose weighting", unit="weighting"):
                table = table_for(weighting)
                if data.validation is not None:
                    vectors = table.embed(data.examples)
                    short_heads[weighting] = self._trainer(data.n_classes, short)(vectors, data.classes)
                    examples, offsets = group_by_class(vectors, data.classes, data.n_classes)
                    ids, truth = data.validation
                    evidence = score_queries(short_heads[weighting], examples, offsets, table.embed(ids), truth)
                else:
                    evidence = self._crossfit_untuned(table, data, short)
                coverage[weighting] = round(self._calibrate(evidence).coverage or 0.0, 4)
        chosen = max(candidates, key=lambda w: coverage.get(w, 0.0))
        tuned = self.config.tune_epochs > 0
        model = self._model(table_for(chosen), data.examples, data.classes, data.n_classes, short,
                            short_heads.get(chosen), self.progress)
        if data.validation is not None:  # the served model is the one calibrated
            ids, truth = data.validation
            evidence = score_queries(model.head, model.examples, model.offsets, model.table.embed(ids), truth)
        else:
            evidence = self._crossfit(table_for(chosen), data, short)
        calibration = self._calibrate(evidence)
        coverage.setdefault(chosen, round(calibration.coverage or 0.0, 4))
        return StaticFit(model, chosen, coverage, calibration, evidence, cached, round(table_seconds, 3), tuned)
