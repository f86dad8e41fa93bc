"""``router build``: encode examples, train the head, fit thresholds, mine rules, write the index."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router._artifact import (
    FORMAT_VERSION,
    IndexArtifact,
    IndexManifest,
    MinedRuleRecord,
    library_versions,
    new_generation,
    publish,
    write_manifest,
)
from router._calibration import Calibration, fit_calibration, unfitted_calibration
from router._config import RouterConfig
from router._head import LinearHead, train_head
from router._heldout import (
    Evidence,
    HeldoutSet,
    group_by_class,
    heldout_evidence,
    score_queries,
    stratified_folds,
)
from router._intents import (
    OOS,
    IntentSet,
    Labelled,
    only,
    training_pairs,
)
from router._paths import indexes_dir
from router._progress import Bar, Progress, make_progress
from router._rule_mining import MinedRule, mine_keyword_rules
from router._rules import IntentRules
from router._sources import resolve_sources
from router.encoders import Encoder, TokenEncoder, build_encoder, encoder_identity, token_encoder
from router.errors import ConfigError
from router.learn._entry import digest
from router.llm._measure import measure_gate
from router.static._fit import HeldoutIds, StaticFit, StaticFitter, check_static_dim
from router.static._model import HeldoutFigures, StaticManifest
from router.vectors import choose_kind, new_index

if TYPE_CHECKING:
    from router.train import Tuned

# Texts per tick of the "encode examples" bar (rounded down to whole encoder batches).
ENCODE_CHUNK = 1024


@dataclass
class BuildReport:
    folder: Path
    manifest: IndexManifest
    seconds: dict[str, float] = field(default_factory=dict)


class Builder:
    def __init__(self, config: RouterConfig, encoder: Encoder | None = None, progress: bool | Progress = False) -> None:
        """``progress``: show the build's stages on stderr when it is a terminal (or this ``Progress``)."""
        self.config = config
        self.progress = make_progress(progress)
        # Build-time encoding sees each text once: an LRU cache would only cost memory.
        enc = config.encoder
        uncached = enc.model_copy(update={"cache_size": 0, "threads": enc.build_threads or os.cpu_count() or 1})
        self.encoder = encoder if encoder is not None else build_encoder(uncached)

    def _train(self, vectors: np.ndarray, classes: np.ndarray, n_classes: int, bar: Bar | None = None) -> LinearHead:
        h = self.config.head
        return train_head(vectors, classes, n_classes, l2=h.l2, epochs=h.epochs, learning_rate=h.learning_rate,
                          on_epoch=None if bar is None else bar.update)

    def _fit(self, e: Evidence, **overrides: Any) -> Calibration:
        c = self.config.calibration
        args: dict[str, Any] = {"scores": e.score, "correct": e.correct, "nearest_similarity": e.nearest}
        args.update(overrides)
        return fit_calibration(args["scores"], args["correct"], e.is_oos, args["nearest_similarity"],
                               c.target_precision, c.oos_prior, c.z, c.oos_floor_quantile, args.get("floor"))

    def _token_encoder(self) -> TokenEncoder | None:
        if not self.config.static.enabled:
            return None
        tok = token_encoder(self.encoder)
        if tok is None:
            raise ConfigError(
                f"static.enabled=true needs an encoder that exposes its tokenizer, and "
                f"encoder.backend={self.config.encoder.backend!r} does not; use backend 'onnx', or set "
                f"static.enabled: false (router build --static off)")
        check_static_dim(self.config.static, tok)  # before minutes of encoding, not after
        return tok

    def _mine(self, pairs: Labelled, val: Labelled | None) -> list[MinedRule]:
        r = self.config.rules
        if val is None:  # hold out a fifth of the examples to check the mined rules on
            holdout = stratified_folds(np.array(pairs.labels), 5, seed=1) == 0
            train, val = only(pairs, list(~holdout)), only(pairs, list(holdout))
        else:
            train = pairs
        return mine_keyword_rules(train, val, r.min_precision, r.min_train_support, r.min_val_support,
                                  max_per_intent=r.max_per_intent)

    def _encode(self, tok: TokenEncoder | None, texts: list[str],
                stage: str = "encode examples") -> tuple[np.ndarray, list[np.ndarray]]:
        """Vectors, and token ids when the static tier is on (tokenised once for both tiers)."""
        with self.progress.stage(stage, total=len(texts), unit="text") as bar:
            if tok is None:
                inner = token_encoder(self.encoder)
                if inner is None:  # one call: no count to show
                    vectors = self.encoder.encode(texts)
                    bar.update(len(texts))
                    return vectors, []
                return _encode_ids(inner, inner.token_ids(texts), bar), []
            ids = tok.token_ids(texts)
            return _encode_ids(tok, ids, bar), ids

    def build(self, folder: Path | None = None) -> BuildReport:
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        sources = resolve_sources(self.config)
        intents = sources.intents
        pairs = training_pairs(intents)
        val = sources.validation
        tuned: Tuned | None = None
        if self.config.finetune is not None:
            t = time.perf_counter()
            tuned = self._finetune(pairs, intents, val)
            # Without a validation split the held-out slice plays its part: never trained on, never indexed.
            pairs, val = tuned.data.train, tuned.data.heldout
            seconds["finetune"] = time.perf_counter() - t
        tok = self._token_encoder()

        t = time.perf_counter()
        vectors, ids = self._encode(tok, pairs.texts)
        seconds["encode"] = time.perf_counter() - t
        names = [i.name for i in intents.intents if i.examples]
        in_scope = np.array([lab != OOS for lab in pairs.labels])
        classes = np.array([names.index(lab) for lab in np.array(pairs.labels)[in_scope]])
        in_vectors, oos_vectors = vectors[in_scope], vectors[~in_scope]

        t = time.perf_counter()
        if tuned is not None:  # the head trained with the encoder is the one served
            head = LinearHead(tuned.head_weights, tuned.head_bias, reject=tuned.head_weights.shape[1] > len(names))
        else:
            with self.progress.stage("fit head", total=self.config.head.epochs, unit="epoch") as bar:
                head = self._train(in_vectors, classes, len(names), bar)
        seconds["head"] = time.perf_counter() - t
        examples, offsets = group_by_class(in_vectors, classes, len(names))

        t = time.perf_counter()
        c = self.config.calibration
        smallest = int(np.bincount(classes, minlength=len(names)).min())
        folds = min(c.folds, max(smallest, 2))
        static_fit: StaticFit | None = None
        alone: Calibration | None = None
        validation: tuple[np.ndarray, np.ndarray] | None = None
        if val is None and smallest < 2:
            calibration = unfitted_calibration(
                c.fallback_threshold, c.target_precision,
                "an intent has fewer than 2 examples: thresholds not fitted, fallback used")
            if tok is not None:
                raise ConfigError("static.enabled=true needs at least 2 examples per intent (or a validation "
                                  "split) to calibrate the static tier; set static.enabled: false")
        else:
            validation = None
            heldout_texts: list[str] = []
            val_ids: list[np.ndarray] = []
            if val is not None:
                val = only(val, [lab == OOS or lab in names for lab in val.labels])
                truth = np.array([names.index(lab) if lab != OOS else -1 for lab in val.labels])
                val_vectors, val_ids = self._encode(tok, val.texts, "encode validation")
                # Out-of-scope training examples are never trained on when there is a validation split
                # (the heads and the index hold in-scope examples only), so they join the held-out set:
                # CLINC150's validation split has only 100 out-of-scope queries to fit the leak on.
                # A fine-tuned encoder has seen them (unless finetune.oos is 'ignore'): then they stay out.
                seen = tuned is not None and tuned.record.config.oos != "ignore"
                oos_rows = np.zeros(0, dtype=np.int64) if seen else np.flatnonzero(~in_scope)
                validation = (np.vstack([val_vectors, vectors[oos_rows]]),
                              np.concatenate([truth, np.full(len(oos_rows), -1)]))
                heldout_texts = list(val.texts) + [pairs.texts[i] for i in oos_rows]
                val_ids = list(val_ids) + [ids[i] for i in oos_rows] if ids else val_ids
            with self.progress.stage("calibrate", total=None if validation is not None else folds,
                                     unit="fold") as bar:
                if validation is not None:  # the served head is the one calibrated
                    evidence = score_queries(head, examples, offsets, *validation)
                else:
                    evidence = heldout_evidence(lambda x, y: self._train(x, y, len(names)), in_vectors, classes,
                                                len(names), oos_vectors, None, folds, on_fold=bar.update)
                calibration = self._fit(evidence)
            seconds["calibration"] = time.perf_counter() - t
            if tok is not None:
                t = time.perf_counter()
                in_ids = [ids[i] for i in np.flatnonzero(in_scope)]
                oos_ids = [ids[i] for i in np.flatnonzero(~in_scope)]  # only the static head's negatives
                data = HeldoutIds(in_ids, classes, len(names), oos_ids,
                                  None if validation is None else (val_ids, validation[1]), folds)
                fitter = StaticFitter(self.config.static, c, self.config.head, self.config.encoder.models_dir,
                                      self.progress)
                static_fit = fitter.fit(tok, data)
                seconds["static"] = time.perf_counter() - t
                alone, calibration = calibration, self._joint(evidence, static_fit, calibration)
        seconds.setdefault("calibration", time.perf_counter() - t)
        heldout = None
        if validation is not None:  # kept in the index: learning re-checks precision on it (router/learn/)
            static_vectors = None if static_fit is None else static_fit.model.table.embed(val_ids)
            heldout = HeldoutSet(validation[0], static_vectors, validation[1],
                                 np.array([digest(text) for text in heldout_texts]))

        t = time.perf_counter()
        vi = self.config.vector_index
        kind = choose_kind(vi.kind, len(examples), vi.auto_hnsw_from)
        with self.progress.stage("vector index"):
            index = new_index(kind, self.encoder.dimension, vi.model_dump(exclude={"kind"}))
            index.add(examples)
        seconds["vector_index"] = time.perf_counter() - t

        mined: list[MinedRule] = []
        if self.config.rules.mine:
            with self.progress.stage("mine rules"):
                mined = self._mine(pairs, val)
        rules = [IntentRules(i.name, i.patterns, i.keywords) for i in intents.intents]
        for rule in mined:
            rules.append(IntentRules(rule.intent, (), (rule.keyword,)))

        seconds["total"] = time.perf_counter() - started
        manifest = IndexManifest(
            format_version=FORMAT_VERSION,
            name=self.config.name,
            encoder_id=self.encoder.encoder_id,
            encoder_backend=self.config.encoder.backend,
            dimension=self.encoder.dimension,
            intent_set_hash=intents.content_hash(),
            intents_source=sources.description,
            n_intents=len(intents.intents),
            n_examples=len(examples),
            vector_index=kind,
            libraries=library_versions(),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(seconds["total"], 3),
            calibration=calibration,
            mined_rules=[MinedRuleRecord(**vars(r)) for r in mined],
            static=None if static_fit is None or alone is None else _static_record(static_fit, calibration, alone),
            finetune=None if tuned is None else tuned.record,
        )
        folder = folder if folder is not None else indexes_dir() / self.config.name
        artifact = IndexArtifact(manifest, self.config, intents, head, names, examples, offsets, index, rules,
                                 None if static_fit is None else static_fit.model,
                                 None if tuned is None else tuned.onnx, heldout)
        # A new generation beside the served one; the name moves over to it only once it is complete,
        # tier-2 gate included (see router.artifact.publish).
        staged = new_generation(folder)
        try:
            with self.progress.stage("write index"):
                manifest = artifact.write(staged)
            llm = self.config.llm
            if llm is not None and llm.gate == "auto" and val is not None:
                t = time.perf_counter()
                gate = measure_gate(staged, llm, val, self.progress)
                manifest = write_manifest(staged, manifest.model_copy(update={"llm_gate": gate}))
                seconds["llm_gate"] = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        publish(staged, folder)
        return BuildReport(folder, manifest, seconds)

    def _finetune(self, pairs: Labelled, intents: IntentSet, val: Labelled | None) -> Tuned:
        from router.train import tune_encoder

        names = [i.name for i in intents.intents if i.examples]
        tuned = tune_encoder(self.config, pairs, names, val, encoder_identity(self.config.encoder), self.progress)
        self.encoder = tuned.encoder
        return tuned

    def _joint(self, evidence: Evidence, static_fit: StaticFit, alone: Calibration) -> Calibration:
        """Tier 1b's threshold fitted on what reaches it: the queries the static tier accepts count in
        the end-to-end precision (with an infinite score), so the pipeline as a whole reaches
        ``calibration.target_precision``. They are credited with the static tier's target precision,
        not the precision they show on the split its threshold was fitted on, which is optimistic
        (CLINC150: 99.3% held out, 98.7% on test). The out-of-scope floor stays tier 1b's own."""
        accepted = static_fit.accepted()
        credit = min(self.config.static.target_precision, float(static_fit.evidence.correct[accepted].mean())
                     if accepted.any() else 1.0)
        joint = self._fit(
            evidence,
            scores=np.where(accepted, np.inf, evidence.score),
            correct=np.where(accepted, credit, evidence.correct.astype(np.float64)),
            nearest_similarity=np.where(accepted, np.inf, evidence.nearest),
            floor=alone.oos_similarity_floor,
        )
        return joint

def _encode_ids(tok: TokenEncoder, ids: list[np.ndarray], bar: Bar) -> np.ndarray:
    """``tok.encode_ids(ids)`` in chunks, so that ``bar`` moves. The chunks are whole encoder batches
    of the length-sorted order, which is how the encoder batches one call itself: the vectors are
    the same as one call's, padding included."""
    batch = getattr(tok, "batch_size", None)
    if not isinstance(batch, int) or batch < 1 or len(ids) <= batch:
        vectors = tok.encode_ids(ids)
        bar.update(len(ids))
        return vectors
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    step = batch * max(1, ENCODE_CHUNK // batch)
    out = np.empty((len(ids), tok.dimension), dtype=np.float32)
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        out[chunk] = tok.encode_ids([ids[i] for i in chunk])
        bar.update(len(chunk))
    return out


def _static_record(fit: StaticFit, joint: Calibration, alone: Calibration) -> StaticManifest:
    def figures(cal: Calibration) -> HeldoutFigures:
        return HeldoutFigures(coverage=cal.coverage, precision=cal.precision, oos_recall=cal.oos_recall)

    table = fit.model.table
    return StaticManifest(
        encoder_id=table.encoder_id, sha256=fit.model.digest(), vocab=len(table.rows),
        dimension=table.dimension, weighting=fit.weighting, weighting_coverage=fit.weighting_coverage,
        calibration=fit.calibration, table_cached=fit.table_cached, table_seconds=fit.table_seconds,
        tuned=fit.tuned,
        end_to_end=figures(joint), transformer_only=figures(alone))
