"""``router build --compact``: fold the learned-examples log into a new version of the index.

The log grows with every item learned, and every load replays it (a refit). Compaction makes what is
served now the index itself: the index is loaded with its log replayed, and the learned state
(``Learner.compacted``) is written as a new generation, learned in-scope examples as rows of
``examples.npz`` and the vector index, refitted heads, the entries themselves as ``learned.jsonl`` (so
that held-out ones still check precision, learned out-of-scope ones are still learned, and contradicting
feedback is still refused), then published with one rename. Only then are those entries folded out of the
log (with the decided reviews, which would otherwise come back as pending).

Crash safety: a crash between the publish and the fold leaves entries in both the index and the log. That
is harmless: a load skips log entries whose id is in the index's ``learned.jsonl``, and the next compaction
(which has nothing new to write) folds them. Entries learned while a compaction runs are not in the log
snapshot it folds, so they stay in the log and are replayed over the new version.

Two compactions of indexes in one folder run one after the other (``flock`` on the folder): two at once on
the same index could otherwise publish in one order and fold in the other. With a Redis-shared log
(``--state redis://...``) every replica must load the index that was compacted (a shared volume, or the
new version copied out before they reload): the entries folded out of the stream are only in it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router._artifact import LEARNED_FILE, IndexArtifact, LearnedRecord, load_heldout
from router._progress import Progress, make_progress
from router.errors import IndexLoadError
from router.learn._config import LearningConfig
from router.learn._entry import LogEntry
from router.learn._log import build_log
from router.vectors import choose_kind, new_index

if TYPE_CHECKING:
    from router.learn._learner import Learner
    from router.state import StateConfig


@contextmanager
def _compacting(folder: Path) -> Iterator[None]:
    """Held while an index in ``folder`` (the indexes folder) is compacted; waits for another compaction."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise IndexLoadError(f"no index folder {folder}: nothing to compact (build the index first: "
                             "router build)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _folded_ids(folder: Path, files: dict[str, Any]) -> set[str]:
    """The ids of the entries an index generation already holds (its ``learned.jsonl``)."""
    if LEARNED_FILE not in files:
        return set()
    return {LogEntry.model_validate_json(line).id
            for line in (folder / LEARNED_FILE).read_text().splitlines() if line.strip()}


def _snapshot(config: LearningConfig, index_path: Path, state: StateConfig | None) -> list[LogEntry]:
    """The log as it is now, read by a reader of its own (the learner's cursor stays where it is)."""
    log = build_log(config, index_path, state)
    try:
        return log.read_all()
    finally:
        log.close()


def compacted(learner: Learner) -> tuple[IndexArtifact, list[LogEntry]]:
    """The learner's serving state as an index to write, and the log entries it folds in."""
    learner.apply()
    state = learner.router.artifact
    served, heldout = learner.folding()
    vi = state.config.vector_index
    kind = choose_kind(vi.kind, len(state.examples), vi.auto_hnsw_from)
    index = new_index(kind, state.examples.shape[1], vi.model_dump(exclude={"kind"}))
    index.add(state.examples)  # one index of the base's kind: the learned rows leave the exact top layer
    static = state.static
    manifest = state.manifest.model_copy(update={
        "n_examples": len(state.examples), "vector_index": kind,
        "learned": LearnedRecord(n_learned=len(served), n_heldout=len(heldout),
                                 n_out_of_scope=sum(e.out_of_scope for e in served),
                                 compacted_at=datetime.now(UTC).isoformat(timespec="seconds"))})
    if static is not None and manifest.static is not None:
        static = dataclasses.replace(static, oos_examples=None)  # learned.jsonl keeps them, as text
        record = manifest.static.model_copy(update={"sha256": static.digest()})
        manifest = manifest.model_copy(update={"static": record})
    folding = [*served, *heldout]
    artifact = dataclasses.replace(state, manifest=manifest, vectors=index, static=static,
                                   heldout=load_heldout(learner.router.artifact), oos_examples=None,
                                   learned_lines="".join(e.model_dump_json() + "\n" for e in folding), folder=None)
    return artifact, folding


def decided_reviews(entries: list[LogEntry], pending: set[str]) -> list[str]:
    """Ids of the ``review`` and ``reject`` entries of the log whose review is no longer pending: approved
    (its ``learn`` entry names it), rejected, or dropped past ``learning.max_pending_review``."""
    return [e.id for e in entries
            if (e.op == "review" and e.id not in pending) or (e.op == "reject" and e.review_id not in pending)]


def compact(index: str | Path, index_dir: str | Path | None = None, state: StateConfig | None = None,
            progress: bool | Progress = False, learn_log: str | Path | None = None) -> dict[str, Any]:
    """Fold the learned-examples log of ``index`` (a name under the index folder, or a folder path) into a
    new version of it; a JSON summary. ``state``: the shared state whose Redis holds the log (``router serve
    --state``); ``learn_log``: the log file when it is not the index config's (``router serve --learn-log``).
    Nothing new to fold in (every served entry is in the index already): no new version is written, and the
    log entries the index already holds are folded out of the log (a compaction cut short before its fold).
    """
    from router._router import OpenedIndex, Router, index_folder

    show = make_progress(progress)
    started = time.perf_counter()
    path = index_folder(index, index_dir)
    with _compacting(path.parent):
        with show.stage("load the index and replay its log"):
            opened = OpenedIndex.open(path)
            config = opened.config.learning
            if learn_log is not None:
                config = config.model_copy(update={"log": str(learn_log)})
            router = Router.load(opened, llm="off", learning=config, learn_state=state)
        try:
            learner = router.learning
            assert learner is not None  # learning is on: a config was given
            before = opened.manifest
            in_index = _folded_ids(opened.folder, before.files)
            logged = _snapshot(config, opened.path, state)  # before the learner's last read: it saw all of it
            artifact, entries = compacted(learner)
            pending = {item.id for item in learner.pending_review()}
            new = [e for e in entries if e.id not in in_index]
            after = before
            if new:
                if after.finetune is not None and artifact.tuned_onnx is None:
                    artifact.tuned_onnx = opened.folder / after.finetune.onnx_file  # carried over as it is
                with show.stage("write the new version"):
                    artifact.save(path)
                after = artifact.manifest
            fold = [e.id for e in entries] + decided_reviews(logged, pending)
            with show.stage("fold the log"):
                folded = learner.log.fold(fold)
            stats = learner.stats()
            log = learner.log.describe()
        finally:
            router.close()
    learned = after.learned
    return {
        "index": str(path),
        "version_before": before.manifest_sha256[:12],
        "version_after": after.manifest_sha256[:12],
        "rewritten": bool(new),
        "n_examples_before": before.n_examples,
        "n_examples_after": after.n_examples,
        "n_new": len(new),
        "n_learned": 0 if learned is None else learned.n_learned,
        "n_heldout": 0 if learned is None else learned.n_heldout,
        "n_out_of_scope": 0 if learned is None else learned.n_out_of_scope,
        "folded": folded,
        "n_unserved": stats["n_unserved"],
        "n_pending_review": stats["n_pending_review"],
        "log": {k: v for k, v in log.items() if k in ("backend", "path", "url", "key")},
        "seconds": round(time.perf_counter() - started, 3),
    }

