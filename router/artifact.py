"""A built index on disk (``indexes/<name>/``) with its manifest, and the stale check.

Files: ``manifest.json`` (encoder id and hash, dimension, intent-set hash, library
versions, build time, calibration figures), ``intents.json``, ``head.npz``,
``examples.npz`` (example vectors grouped by intent), ``vectors.*`` (the vector
index), ``rules.json``, ``config.json``, and ``static.npz`` (tier 1a's token table, head
and example vectors, with the table's encoder id inside and its sha256 in the manifest).
Written to a temporary folder and renamed into place, so a reader never sees half an index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from router.calibration import Calibration
from router.config import RouterConfig
from router.errors import IndexError_, StaleIndexError
from router.head import LinearHead
from router.intents import IntentSet
from router.llm.config import LLMGate
from router.rules import IntentRules
from router.static.model import StaticManifest, StaticModel
from router.vectors import VectorIndex, load_index

# 2: the static tier (static.npz and the manifest's ``static`` record).
FORMAT_VERSION = 2


class MinedRuleRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent: str
    keyword: str
    train_support: int
    val_support: int
    val_precision: float


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int
    name: str
    encoder_id: str
    encoder_backend: str
    dimension: int
    intent_set_hash: str
    intents_source: str
    n_intents: int
    n_examples: int
    vector_index: str
    libraries: dict[str, str]
    built_at: str
    build_seconds: float
    calibration: Calibration
    mined_rules: list[MinedRuleRecord] = []
    llm_gate: LLMGate | None = None
    # Tier 1a; None when the index was built with the static tier off.
    static: StaticManifest | None = None


def library_versions() -> dict[str, str]:
    versions = {}
    for dist in ("tiered-router", "numpy", "faiss-cpu", "onnxruntime", "tokenizers", "regex"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


@dataclass
class IndexArtifact:
    manifest: IndexManifest
    config: RouterConfig
    intents: IntentSet
    head: LinearHead
    head_intents: list[str]  # intent name of each head class
    examples: np.ndarray  # example vectors, grouped by head class
    offsets: np.ndarray  # class c owns rows offsets[c]:offsets[c+1]
    vectors: VectorIndex  # the same rows, searchable
    rules: list[IntentRules]
    static: StaticModel | None = None  # loaded only when served with the static tier on

    def save(self, folder: Path) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            (tmp / "manifest.json").write_text(self.manifest.model_dump_json(indent=2))
            (tmp / "config.json").write_text(self.config.model_dump_json(indent=2))
            (tmp / "intents.json").write_text(self.intents.model_dump_json())
            self.head.save(tmp / "head.npz")
            np.savez(tmp / "examples.npz", vectors=self.examples, offsets=self.offsets,
                     intents=np.array(self.head_intents))
            self.vectors.save(tmp / _vector_file(self.vectors.kind))
            rules = [{"intent": r.intent, "patterns": list(r.patterns), "keywords": list(r.keywords)}
                     for r in self.rules]
            (tmp / "rules.json").write_text(json.dumps(rules, indent=1))
            if self.static is not None:
                self.static.save(tmp)
            old = folder.with_name(f".{folder.name}.old")
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _vector_file(kind: str) -> str:
    return "vectors.npy" if kind == "numpy" else "vectors.faiss"


def write_manifest(folder: Path, manifest: IndexManifest) -> None:
    """Replace an index's manifest in one rename (used to record the tier-2 gate after a build)."""
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, folder / "manifest.json")


def read_manifest(folder: Path) -> IndexManifest:
    path = folder / "manifest.json"
    if not path.is_file():
        raise IndexError_(
            f"no index at {folder} (missing manifest.json); build it with: router build --name {folder.name}, "
            "or point at the folder that holds it with --index-dir or $ROUTER_INDEX_DIR"
        )
    try:
        manifest = IndexManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise IndexError_(f"{path} is not a valid index manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise StaleIndexError(
            f"index {folder} has format_version {manifest.format_version}, this router reads "
            f"{FORMAT_VERSION}; rebuild it with: router build --name {folder.name}"
        )
    return manifest


def check_fresh(manifest: IndexManifest, encoder_id: str, intents: IntentSet | None, folder: Path) -> None:
    """Refuse an index built for another encoder or another intent set, saying what differs."""
    rebuild = f"rebuild it with: router build --name {manifest.name} (with the same config)"
    if manifest.encoder_id != encoder_id:
        raise StaleIndexError(
            f"index {folder} was built with encoder {manifest.encoder_id!r}, but the configured encoder is "
            f"{encoder_id!r}; {rebuild}"
        )
    if intents is not None and intents.content_hash() != manifest.intent_set_hash:
        raise StaleIndexError(
            f"index {folder} was built from another intent set (hash {manifest.intent_set_hash[:12]}, "
            f"source {manifest.intents_source}) than the configured one (hash {intents.content_hash()[:12]}); "
            f"{rebuild}"
        )


def load_artifact(folder: Path, vector_options: dict[str, int] | None = None, static: bool = True) -> IndexArtifact:
    """``static=False`` skips the static table (served with ``--static off``)."""
    manifest = read_manifest(folder)
    try:
        config = RouterConfig.model_validate_json((folder / "config.json").read_text())
        intents = IntentSet.model_validate_json((folder / "intents.json").read_text())
        head = LinearHead.load(folder / "head.npz")
        with np.load(folder / "examples.npz") as data:
            examples = np.ascontiguousarray(data["vectors"])
            offsets = data["offsets"]
            head_intents = [str(s) for s in data["intents"]]
        rules = [IntentRules(r["intent"], tuple(r["patterns"]), tuple(r["keywords"]))
                 for r in json.loads((folder / "rules.json").read_text())]
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        raise IndexError_(f"index {folder} is incomplete or corrupt ({exc}); rebuild it with: router build") from exc
    vectors = load_index(manifest.vector_index, folder / _vector_file(manifest.vector_index), vector_options or {})
    if len(vectors) != len(examples) or examples.shape[1] != manifest.dimension:
        raise IndexError_(f"index {folder}: vector count or dimension disagrees with the manifest; rebuild it")
    static_model = None
    if static and manifest.static is not None:
        static_model = StaticModel.load(folder, manifest.static, manifest.encoder_id)
    return IndexArtifact(manifest, config, intents, head, head_intents, examples, offsets, vectors, rules,
                         static_model)
