"""A built index on disk (``indexes/<name>/``) with its manifest, and the stale check.

Files: ``manifest.json`` (encoder id and hash, dimension, intent-set hash, library
versions, build time, calibration figures), ``intents.json``, ``head.npz``,
``examples.npz`` (example vectors grouped by intent), ``vectors.*`` (the vector
index), ``rules.json``, ``config.json``, and ``static.npz`` (tier 1a's token table, head
and example vectors, with the table's encoder id inside and its sha256 in the manifest).

Verified before it is served: the manifest records the size and sha256 of every other file
(``files``) and its own sha256 (``manifest_sha256``, so thresholds cannot change silently either).
``open_index`` refuses a missing, truncated or changed file with an ``IndexLoadError`` naming it, and
``load_artifact`` checks the stored intents against ``intent_set_hash`` and the labels against them.

On disk ``indexes/<name>`` is a symlink to a generation folder beside it,
``indexes/.<name>.<UTC stamp>.<pid>``. A build writes a new generation, then swaps the name over
in one atomic rename of a new symlink (``publish``), so a crash at any step leaves the old or the
new index whole under the name. A reader resolves the name once and reads one generation; the
previous generation is kept for readers that resolved it just before a swap, older ones are pruned.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from router._calibration import Calibration
from router._config import RouterConfig
from router._head import LinearHead
from router._heldout import HELDOUT_FILE, HeldoutSet
from router._intents import IntentSet
from router._rules import IntentRules
from router._strict import Strict
from router.errors import IndexLoadError, StaleIndexError
from router.llm._config import LLMGate
from router.static._model import STATIC_FILE, StaticManifest, StaticModel
from router.train._record import FinetuneRecord
from router.vectors import VectorIndex, load_index

# What each format version brought, named when an older index is refused.
FORMAT_CHANGES = {
    2: "the static tier (static.npz and the manifest's static record)",
    3: "the size and sha256 of every file, checked on load",
    4: "intents without the unused `writes` flag (a skill's own `writes` is the one used), so the intent set's "
       "hash changed",
}
FORMAT_VERSION = max(FORMAT_CHANGES)
MANIFEST = "manifest.json"
LEARNED_FILE = "learned.jsonl"


class MinedRuleRecord(Strict):
    intent: str
    keyword: str
    train_support: int
    val_support: int
    val_precision: float


class FileRecord(Strict):
    """One file of an index as the build wrote it."""

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LearnedRecord(Strict):
    """What ``router build --compact`` folded in from the learned-examples log (router/learn/)."""

    n_learned: int  # trained on: now rows of examples.npz
    n_heldout: int  # kept for the precision check, never trained on
    n_out_of_scope: int
    compacted_at: str


class IndexManifest(Strict):
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
    # A fine-tuned encoder (router/train/): its graph is a file of the index; None for a shipped encoder.
    finetune: FinetuneRecord | None = None
    # Learned examples folded in by ``router build --compact`` (their log entries are ``learned.jsonl``).
    learned: LearnedRecord | None = None
    # Every other file of the index, by name: filled in by ``IndexArtifact.write``, checked by ``open_index``.
    files: dict[str, FileRecord] = {}
    # sha256 of this manifest's canonical JSON without this field (``manifest_digest``): set by ``write_manifest``.
    manifest_sha256: str = ""


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
    tuned_onnx: Path | None = None  # a fine-tuned encoder's graph, copied in as ``manifest.finetune.onnx_file``
    # The calibration split's vectors (``heldout.npz``), written by the build; learning reads it lazily.
    heldout: HeldoutSet | None = None
    # Learned out-of-scope examples (router/learn/), in the transformer's space; never written as an array.
    oos_examples: np.ndarray | None = None
    # Compacted learned-log entries (``learned.jsonl``, one JSON object per line), as text.
    learned_lines: str | None = None
    folder: Path | None = None  # the generation folder it was loaded from

    def save(self, folder: Path) -> None:
        """Write a new generation of the index and swap it in under ``folder`` (see ``publish``)."""
        staged = new_generation(folder)
        try:
            self.write(staged)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        publish(staged, folder)

    def write(self, target: Path) -> IndexManifest:
        """Write every file into the empty folder ``target``, the manifest last (with each file's size and
        sha256), and return that manifest. ``target`` is a generation no reader sees until ``publish``."""
        (target / "config.json").write_text(self.config.model_dump_json(indent=2))
        (target / "intents.json").write_text(self.intents.model_dump_json())
        self.head.save(target / "head.npz")
        _reached("writing")
        np.savez(target / "examples.npz", vectors=self.examples, offsets=self.offsets,
                 intents=np.array(self.head_intents))
        self.vectors.save(target / _vector_file(self.vectors.kind))
        rules = [{"intent": r.intent, "patterns": list(r.patterns), "keywords": list(r.keywords)}
                 for r in self.rules]
        (target / "rules.json").write_text(json.dumps(rules, indent=1))
        if self.static is not None:
            self.static.save(target)
        if self.heldout is not None:
            self.heldout.save(target)
        if self.learned_lines is not None:
            (target / LEARNED_FILE).write_text(self.learned_lines)
        if self.tuned_onnx is not None and self.manifest.finetune is not None:
            shutil.copyfile(self.tuned_onnx, target / self.manifest.finetune.onnx_file)
        _reached("written")
        self.manifest = write_manifest(target, self.manifest.model_copy(update={"files": _listing(target)}))
        _reached("sealed")
        return self.manifest


def _reached(step: str) -> None:
    """A named step of writing and publishing an index: ``writing``, ``written``, ``sealed`` (the generation
    is complete), ``staged`` (flushed to disk), ``linked``, ``swapped``, ``pruned``. Does nothing; a test
    replaces it to kill a build at each step and check that the index under the name stays whole."""


def _vector_file(kind: str) -> str:
    return "vectors.npy" if kind == "numpy" else "vectors.faiss"


def manifest_digest(data: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no spaces) without ``manifest_sha256``.

    Computed on the parsed JSON, not on the model, so that the check does not depend on how a
    pydantic version serialises a float."""
    body = {key: value for key, value in data.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path, manifest: IndexManifest) -> IndexManifest:
    """Seal ``manifest`` with its own sha256 and replace the index's manifest in one rename (also used to
    record the tier-2 gate on the new generation before it is published). Returns the sealed manifest."""
    unsealed = json.loads(manifest.model_copy(update={"manifest_sha256": ""}).model_dump_json())
    sealed = manifest.model_copy(update={"manifest_sha256": manifest_digest(unsealed)})
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(sealed.model_dump_json(indent=2))
    os.replace(tmp, folder / MANIFEST)
    return sealed


def reseal(folder: Path) -> IndexManifest:
    """Record the files of the index ``folder`` as they are now and seal its manifest again: a deliberate
    edit of an index (a threshold set by hand, a test's tampering) made explicit, instead of a silent one."""
    root = folder.resolve() if folder.is_symlink() else folder
    try:
        manifest = IndexManifest.model_validate_json((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise IndexLoadError(f"index {folder}: manifest.json is missing or invalid ({exc})") from exc
    return write_manifest(root, manifest.model_copy(update={"files": _listing(root)}))


def _rebuild(name: str) -> str:
    return f"rebuild it with: router build --name {name}"


def read_manifest(folder: Path) -> IndexManifest:
    """The manifest, refused when unreadable, of another format version, or edited after the build."""
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexLoadError(
            f"no index at {folder} (missing manifest.json); build it with: router build --name {folder.name}, "
            "or point at the folder that holds it with --index-dir or $ROUTER_INDEX_DIR"
        )
    try:
        text = path.read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise IndexLoadError(f"index {folder}: manifest.json is not readable JSON ({exc}); "
                          f"{_rebuild(folder.name)}") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:  # before the schema: an older manifest lacks the newer fields
        since = [what for v, what in FORMAT_CHANGES.items() if not isinstance(version, int) or v > version]
        raise StaleIndexError(
            f"index {folder} has format_version {version}, this router reads {FORMAT_VERSION} (which adds "
            f"{'; '.join(since) or 'nothing it can read'}); {_rebuild(folder.name)}"
        )
    try:
        manifest = IndexManifest.model_validate_json(text)
    except ValidationError as exc:
        raise IndexLoadError(f"{path} is not a valid index manifest: {exc}") from exc
    digest = manifest_digest(data)
    if digest != manifest.manifest_sha256:
        raise IndexLoadError(
            f"index {folder}: manifest.json does not match its own sha256 (manifest_sha256 "
            f"{manifest.manifest_sha256[:16] or 'missing'}, content {digest[:16]}): it was edited after the "
            f"build (its thresholds, file records or encoder); {_rebuild(manifest.name)}"
        )
    return manifest


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _listing(folder: Path) -> dict[str, FileRecord]:
    """Every file of an index folder but the manifest, with its size and sha256."""
    names = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and not p.name.startswith("."))
    return dict(zip(names, _records(folder, names), strict=True))


def _records(folder: Path, names: list[str]) -> list[FileRecord]:
    # Threads: hashlib releases the GIL on large buffers, and the big files (static table, vectors,
    # examples) are of similar size, so hashing them side by side divides the load-time cost.
    paths = [folder / name for name in names]
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1, 4))) as pool:
        digests = list(pool.map(_sha256, paths))
    return [FileRecord(size=p.stat().st_size, sha256=d) for p, d in zip(paths, digests, strict=True)]


def index_files(manifest: IndexManifest, static: bool = True) -> list[str]:
    """The files ``load_artifact`` reads (``static``: the static table too, when the index has one)."""
    names = ["config.json", "intents.json", "head.npz", "examples.npz", _vector_file(manifest.vector_index),
             "rules.json"] + ([manifest.finetune.onnx_file] if manifest.finetune is not None else [])
    return names + [STATIC_FILE] if static and manifest.static is not None else names


def verify_files(folder: Path, manifest: IndexManifest, names: list[str]) -> None:
    """Refuse the index unless each of ``names`` is listed in the manifest and has the size and sha256
    recorded there. Sizes first: a missing or truncated file is named without hashing the others."""
    broken = f"index {folder} is incomplete or corrupt"
    rebuild = _rebuild(manifest.name)
    for name in names:
        record = manifest.files.get(name)
        if record is None:
            raise IndexLoadError(f"{broken}: the manifest has no sha256 for {name}, so it cannot be checked; {rebuild}")
        try:
            size = (folder / name).stat().st_size
        except FileNotFoundError:
            raise IndexLoadError(f"{broken}: {name} is missing (the manifest records {record.size:,} bytes); "
                              f"{rebuild}") from None
        except OSError as exc:
            raise IndexLoadError(f"{broken}: {name} is unreadable ({exc}); {rebuild}") from exc
        if size != record.size:
            raise IndexLoadError(f"{broken}: {name} has {size:,} bytes, the manifest records {record.size:,} "
                              f"({'truncated' if size < record.size else 'grown'} since the build); {rebuild}")
    try:
        found = _records(folder, names)
    except OSError as exc:
        raise IndexLoadError(f"{broken}: {exc}; {rebuild}") from exc
    for name, record in zip(names, found, strict=True):
        expected = manifest.files[name].sha256
        if record.sha256 != expected:
            raise IndexLoadError(f"{broken}: {name} does not match the sha256 in its manifest (file "
                              f"{record.sha256[:16]}, manifest {expected[:16]}): it changed after the build; "
                              f"{rebuild}")


def open_index(folder: Path, static: bool = True) -> tuple[Path, IndexManifest]:
    """Resolve ``folder`` once to the generation it names (a build may swap the name meanwhile), read
    its manifest and verify every file a load reads (``static``: the static table too).
    Returns the generation folder, to read everything else from, and the manifest."""
    root = folder.resolve() if folder.is_symlink() else folder
    manifest = read_manifest(root)
    verify_files(root, manifest, index_files(manifest, static))
    return root, manifest


def check_fresh(manifest: IndexManifest, encoder_id: str, intents: IntentSet | None, folder: Path,
                tuned: FinetuneRecord | None = None) -> None:
    """Refuse an index built for another encoder or another intent set, saying what differs.
    A fine-tuned index (``tuned``) records the encoder its config named; it serves its own graph."""
    rebuild = f"rebuild it with: router build --name {manifest.name} (with the same config)"
    if tuned is not None and tuned.configured_encoder_id != encoder_id:
        raise StaleIndexError(
            f"index {folder} was fine-tuned from a build configured with encoder {tuned.configured_encoder_id!r} "
            f"(tuned: {manifest.encoder_id!r}), but the configured encoder is {encoder_id!r}; {rebuild}"
        )
    if tuned is None and manifest.encoder_id != encoder_id:
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


def load_artifact(folder: Path, vector_options: dict[str, int] | None = None, static: bool = True,
                  verified: IndexManifest | None = None, config: RouterConfig | None = None) -> IndexArtifact:
    """``static=False`` skips the static table (served with ``--static off``). ``verified``: the manifest
    ``open_index`` returned for ``folder`` (a generation folder), so that the files are hashed once;
    ``config``: its ``config.json`` already parsed, so that it is read once."""
    if verified is None:
        folder, manifest = open_index(folder, static)
    else:
        manifest = verified
    broken = f"index {folder} is incomplete or corrupt"
    rebuild = _rebuild(manifest.name)
    try:
        if config is None:
            config = RouterConfig.model_validate_json((folder / "config.json").read_text())
        intents = IntentSet.model_validate_json((folder / "intents.json").read_text())
        head = LinearHead.load(folder / "head.npz")
        with np.load(folder / "examples.npz") as data:
            examples = np.ascontiguousarray(data["vectors"])
            offsets = data["offsets"]
            head_intents = [str(s) for s in data["intents"]]
        rules = [IntentRules(r["intent"], tuple(r["patterns"]), tuple(r["keywords"]))
                 for r in json.loads((folder / "rules.json").read_text())]
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise IndexLoadError(f"{broken} ({exc}); {rebuild}") from exc
    # The files match their hashes; these check that they also agree with each other and the manifest.
    stored = intents.content_hash()
    if stored != manifest.intent_set_hash:
        raise IndexLoadError(f"{broken}: intents.json holds an intent set with hash {stored[:12]}, the manifest's "
                          f"intent_set_hash is {manifest.intent_set_hash[:12]}; {rebuild}")
    labels = [i.name for i in intents.intents if i.examples]
    if head_intents != labels:
        raise IndexLoadError(f"{broken}: the labels of examples.npz ({len(head_intents)}) are not the intents with "
                          f"examples in intents.json ({len(labels)}); {rebuild}")
    unknown = sorted({r.intent for r in rules} - set(intents.names))
    if unknown:
        raise IndexLoadError(f"{broken}: rules.json has rules for intents not in intents.json: {unknown}; {rebuild}")
    if (len(examples) != manifest.n_examples or examples.shape[1] != manifest.dimension
            or head.weights.shape != (manifest.dimension, len(labels) + head.reject)
            or head.n_classes != len(labels) or len(offsets) != len(labels) + 1):
        raise IndexLoadError(f"{broken}: examples.npz or head.npz disagrees with the manifest's n_examples "
                          f"{manifest.n_examples} and dimension {manifest.dimension}; {rebuild}")
    vectors = load_index(manifest.vector_index, folder / _vector_file(manifest.vector_index), vector_options or {})
    if len(vectors) != len(examples):
        raise IndexLoadError(f"{broken}: {_vector_file(manifest.vector_index)} holds {len(vectors)} vectors, "
                          f"examples.npz {len(examples)}; {rebuild}")
    static_model = None
    if static and manifest.static is not None:
        static_model = StaticModel.load(folder, manifest.static, manifest.encoder_id)
    return IndexArtifact(manifest, config, intents, head, head_intents, examples, offsets, vectors, rules,
                         static_model, folder=folder)


def load_heldout(artifact: IndexArtifact) -> HeldoutSet | None:
    """The index's ``heldout.npz`` (checked against its manifest record first), or None when the build had no
    validation split (cross-fitted: no held-out rows exist apart from the training examples)."""
    folder = artifact.folder
    if artifact.heldout is not None or folder is None or HELDOUT_FILE not in artifact.manifest.files:
        return artifact.heldout
    verify_files(folder, artifact.manifest, [HELDOUT_FILE])
    try:
        artifact.heldout = HeldoutSet.load(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexLoadError(f"index {folder}: {HELDOUT_FILE} is unreadable ({exc}); "
                             f"{_rebuild(artifact.manifest.name)}") from exc
    return artifact.heldout


def read_learned_lines(artifact: IndexArtifact) -> str:
    """The compacted learned-log entries of the index (``learned.jsonl``), checked; "" when it has none."""
    folder = artifact.folder
    if folder is None or LEARNED_FILE not in artifact.manifest.files:
        return artifact.learned_lines or ""
    verify_files(folder, artifact.manifest, [LEARNED_FILE])
    return (folder / LEARNED_FILE).read_text()


# -- generations: written beside the name, swapped in with one rename -------------------------------------


def _generation_name(name: str) -> re.Pattern[str]:
    """``.<name>.<stamp>.<pid>`` (a generation) or ``.<name>.link.<pid>`` (a link being swapped in)."""
    return re.compile(rf"\.{re.escape(name)}\.(\d{{8}}T\d{{12}}|link)\.(\d+)")


def new_generation(folder: Path) -> Path:
    """A new, empty generation folder for the index ``folder``, beside it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder.with_name(f".{folder.name}.{stamp}.{os.getpid()}")
    target.mkdir()
    return target


def publish(staged: Path, folder: Path) -> None:
    """Make the complete generation ``staged`` the index ``folder`` with one atomic rename: a new symlink
    replaces the old one (or, the first time, an older real folder is exchanged with it: a format-2
    index, an empty folder made for the build). Then prune generations nobody needs any more."""
    link = folder.with_name(f".{folder.name}.link.{os.getpid()}")
    try:
        _flush(staged)  # on disk before the name points at it, so a power cut cannot leave it half there
        _reached("staged")
        if link.is_symlink() or link.exists():
            _remove(link)
        os.symlink(staged.name, link)  # relative: the indexes folder can be moved or mounted elsewhere
        _reached("linked")
        previous = os.readlink(folder) if folder.is_symlink() else None
    except BaseException:
        _remove(link)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if folder.is_symlink() or not folder.exists():
        os.replace(link, folder)  # THE swap
    elif not _exchange(link, folder):
        # No atomic exchange here (not Linux, or a file system without it): two renames, and a crash
        # between them leaves the name missing; both generations are still whole beside it.
        os.replace(folder, link.with_name(link.name + ".old"))
        os.replace(link, folder)
    _flush_dir(folder.parent)
    _reached("swapped")
    _prune(folder, keep={staged.name, *([previous] if previous else [])})
    _reached("pruned")


def remove_index(folder: Path) -> None:
    """Delete the index ``folder``: the name and every generation of it (a scratch index, ``router eval``)."""
    _remove(folder)
    for path in _siblings(folder):
        _remove(path)


def _siblings(folder: Path) -> Iterator[Path]:
    """Generations of ``folder``, links being swapped in, and folders they replaced, beside it."""
    pattern = _generation_name(folder.name)
    if folder.parent.is_dir():
        for path in folder.parent.iterdir():
            if pattern.fullmatch(path.name.removesuffix(".old")):
                yield path


def _prune(folder: Path, keep: set[str]) -> None:
    """Remove what earlier builds left beside ``folder`` but ``keep`` (the current generation and the one
    it replaced, which a reader may have resolved just before the swap): older generations, and what
    builds killed part way left. What a build still running in another process has made is left alone."""
    pattern = _generation_name(folder.name)
    for path in _siblings(folder):
        match = pattern.fullmatch(path.name.removesuffix(".old"))
        if path.name in keep or match is None:
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or not _alive(pid):
            _remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _flush(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _flush_dir(folder)


def _flush_dir(folder: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library older than glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))
