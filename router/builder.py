"""``router build``: encode examples, train the head, fit thresholds, mine rules, write the index."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from router.artifact import (
    FORMAT_VERSION,
    IndexArtifact,
    IndexManifest,
    MinedRuleRecord,
    library_versions,
    write_manifest,
)
from router.calibration import Calibration, fit_calibration, unfitted_calibration
from router.config import RouterConfig
from router.datasets import load_dataset
from router.encoders import Encoder, build_encoder
from router.head import LinearHead, train_head
from router.intents import (
    OOS,
    IntentSet,
    Labelled,
    intent_set_from_labelled,
    load_intent_source,
    only,
    read_labelled,
    training_pairs,
)
from router.llm.config import LLMConfig, LLMGate
from router.llm.gate import decide_gate, tier2_metrics
from router.paths import indexes_dir
from router.rule_mining import MinedRule, mine_keyword_rules
from router.rules import IntentRules
from router.scoring import acceptance_score, class_max_similarity
from router.vectors import choose_kind, new_index


@dataclass
class Sources:
    intents: IntentSet
    validation: Labelled | None
    description: str


@dataclass
class BuildReport:
    folder: Path
    manifest: IndexManifest
    seconds: dict[str, float] = field(default_factory=dict)


def resolve_sources(config: RouterConfig) -> Sources:
    if config.dataset is not None:
        splits = load_dataset(config.dataset)
        return Sources(intent_set_from_labelled(splits.train), splits.val, f"dataset:{config.dataset}")
    assert config.intents is not None  # guaranteed by RouterConfig's validator
    val = read_labelled(config.validation) if config.validation else None
    return Sources(load_intent_source(config.intents), val, str(config.intents))


def _stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def _heldout_evidence(
    head: LinearHead, examples: np.ndarray, offsets: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best class, acceptance score and nearest-example similarity of held-out queries."""
    probs = head.probabilities(queries)
    best = probs.argmax(axis=1)
    sims = queries @ examples.T
    per_class = class_max_similarity(sims, offsets)
    rows = np.arange(len(queries))
    return best, acceptance_score(probs[rows, best], per_class[rows, best]), sims.max(axis=1)


def _group_by_class(vectors: np.ndarray, classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(classes, kind="stable")
    counts = np.bincount(classes, minlength=n_classes)
    return np.ascontiguousarray(vectors[order]), np.concatenate([[0], np.cumsum(counts)])


class Builder:
    def __init__(self, config: RouterConfig, encoder: Encoder | None = None) -> None:
        self.config = config
        # Build-time encoding sees each text once: an LRU cache would only cost memory.
        uncached = config.encoder.model_copy(update={"cache_size": 0})
        self.encoder = encoder if encoder is not None else build_encoder(uncached)

    def _train(self, vectors: np.ndarray, classes: np.ndarray, n_classes: int) -> LinearHead:
        h = self.config.head
        return train_head(vectors, classes, n_classes, l2=h.l2, epochs=h.epochs, learning_rate=h.learning_rate)

    def _calibrate_on(self, val: Labelled, head: LinearHead, examples: np.ndarray, offsets: np.ndarray,
                      names: list[str]) -> Calibration:
        known = [lab == OOS or lab in names for lab in val.labels]
        val = only(val, known)
        vectors = self.encoder.encode(val.texts)
        best, scores, nearest = _heldout_evidence(head, examples, offsets, vectors)
        truth = np.array([names.index(lab) if lab != OOS else -1 for lab in val.labels])
        return self._fit(scores, best == truth, truth < 0, nearest)

    def _fit(self, scores: np.ndarray, correct: np.ndarray, is_oos: np.ndarray, nearest: np.ndarray) -> Calibration:
        c = self.config.calibration
        return fit_calibration(scores, correct, is_oos, nearest, c.target_precision, c.oos_prior, c.z,
                               c.oos_floor_quantile)

    def _cross_fit(
        self, vectors: np.ndarray, classes: np.ndarray, oos_vectors: np.ndarray, n_classes: int
    ) -> Calibration:
        """No validation split: out-of-fold predictions from k heads stand in for held-out data."""
        c = self.config.calibration
        smallest = int(np.bincount(classes, minlength=n_classes).min())
        if smallest < 2:
            return unfitted_calibration(c.fallback_threshold, c.target_precision,
                                        "an intent has fewer than 2 examples: thresholds not fitted, fallback used")
        folds = min(c.folds, smallest)
        fold = _stratified_folds(classes, folds)
        oos_fold = np.arange(len(oos_vectors)) % folds
        scores, correct, is_oos, nearest = [], [], [], []
        for f in range(folds):
            train = fold != f
            head = self._train(vectors[train], classes[train], n_classes)
            examples, offsets = _group_by_class(vectors[train], classes[train], n_classes)
            held = np.vstack([vectors[~train], oos_vectors[oos_fold == f]])
            truth = np.concatenate([classes[~train], np.full(int((oos_fold == f).sum()), -1)])
            best, s, near = _heldout_evidence(head, examples, offsets, held)
            scores.append(s)
            correct.append(best == truth)
            is_oos.append(truth < 0)
            nearest.append(near)
        return self._fit(*(np.concatenate(parts) for parts in (scores, correct, is_oos, nearest)))

    def _mine(self, pairs: Labelled, val: Labelled | None) -> list[MinedRule]:
        r = self.config.rules
        if val is None:  # hold out a fifth of the examples to check the mined rules on
            holdout = _stratified_folds(np.array(pairs.labels), 5, seed=1) == 0
            train, val = only(pairs, list(~holdout)), only(pairs, list(holdout))
        else:
            train = pairs
        return mine_keyword_rules(train, val, r.min_precision, r.min_train_support, r.min_val_support,
                                  max_per_intent=r.max_per_intent)

    def build(self, folder: Path | None = None) -> BuildReport:
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        sources = resolve_sources(self.config)
        intents = sources.intents
        pairs = training_pairs(intents)

        t = time.perf_counter()
        vectors = self.encoder.encode(pairs.texts)
        seconds["encode"] = time.perf_counter() - t
        names = [i.name for i in intents.intents if i.examples]
        in_scope = np.array([lab != OOS for lab in pairs.labels])
        classes = np.array([names.index(lab) for lab in np.array(pairs.labels)[in_scope]])
        in_vectors, oos_vectors = vectors[in_scope], vectors[~in_scope]

        t = time.perf_counter()
        head = self._train(in_vectors, classes, len(names))
        seconds["head"] = time.perf_counter() - t
        examples, offsets = _group_by_class(in_vectors, classes, len(names))

        t = time.perf_counter()
        if sources.validation is not None:
            calibration = self._calibrate_on(sources.validation, head, examples, offsets, names)
        else:
            calibration = self._cross_fit(in_vectors, classes, oos_vectors, len(names))
        seconds["calibration"] = time.perf_counter() - t

        t = time.perf_counter()
        vi = self.config.vector_index
        kind = choose_kind(vi.kind, len(examples), vi.auto_hnsw_from)
        index = new_index(kind, self.encoder.dimension, vi.model_dump(exclude={"kind"}))
        index.add(examples)
        seconds["vector_index"] = time.perf_counter() - t

        mined = self._mine(pairs, sources.validation) if self.config.rules.mine else []
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
        )
        folder = folder if folder is not None else indexes_dir() / self.config.name
        IndexArtifact(manifest, self.config, intents, head, names, examples, offsets, index, rules).save(folder)
        llm = self.config.llm
        if llm is not None and llm.gate == "auto" and sources.validation is not None:
            t = time.perf_counter()
            manifest = manifest.model_copy(update={"llm_gate": measure_gate(folder, llm, sources.validation)})
            write_manifest(folder, manifest)
            seconds["llm_gate"] = time.perf_counter() - t
        return BuildReport(folder, manifest, seconds)


def measure_gate(folder: Path, llm: LLMConfig, val: Labelled) -> LLMGate:
    """Run tier 2 on (a sample of) the escalated validation queries; off if it does not beat tier 1."""
    from router.router import Router

    router = Router.load(folder, llm=llm.model_copy(update={"gate": "on"}))
    try:
        tier2 = router.tier2
        assert tier2 is not None
        fast = [router.classify_fast(t) for t in val.texts]
        escalated = [i for i, d in enumerate(fast) if d.escalate]
        if len(escalated) > llm.gate_sample:
            rng = np.random.default_rng(0)
            escalated = sorted(rng.choice(escalated, llm.gate_sample, replace=False).tolist())
        tier2.warm()
        settled = [tier2.resolve(val.texts[i], fast[i]) for i in escalated]
        known = set(router.artifact.intents.names)
        truth = [val.labels[i] if val.labels[i] in known else OOS for i in escalated]
        primary = llm.backends[0]
        return decide_gate(tier2_metrics(settled, truth), primary.label, primary.model or primary.backend)
    finally:
        router.close()
