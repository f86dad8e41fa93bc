"""An index is verified before it is served, and a build swaps it in whole (router._artifact).

Every file is checked against the size and sha256 its manifest records, the manifest against its own
sha256, the stored intents against ``intent_set_hash``: a missing, truncated or changed file is an
``IndexLoadError`` naming it, from ``Router.load`` and from a real ``router serve`` (exit 1, no traceback).
A build killed with SIGKILL at each step of writing and publishing leaves the old or the new index
whole and servable under its name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from router import Builder, IndexLoadError, Router, RouterConfig, StaleIndexError
from router._artifact import FORMAT_VERSION, index_files, open_index, read_manifest, remove_index, reseal
from router._paths import INDEX_ENV
from router._router import built_config
from router.testing import ServeProcess
from router.testing._process import free_port

FIXTURES = Path(__file__).parent / "fixtures"
# The files of the mini index (static tier on, a flat vector index), each checked on load.
FILES = ["config.json", "examples.npz", "head.npz", "intents.json", "rules.json", "static.npz", "vectors.faiss"]


def clone(index: Path, to: Path) -> Path:
    """A copy of an index made of hard links (the mini index's static table is 47 MB); ``rewrite`` breaks
    the link of the one file a test changes, so the session's index is never touched."""
    to.mkdir()
    for path in index.resolve().iterdir():
        os.link(path, to / path.name)
    return to


def rewrite(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite(path, bytes(data))


def truncate(path: Path) -> None:
    rewrite(path, path.read_bytes()[: path.stat().st_size // 2])


# -- every file is checked ------------------------------------------------------------------------------


def test_the_manifest_records_every_file(mini_index: Path) -> None:
    m = read_manifest(mini_index.resolve())
    assert m.format_version == FORMAT_VERSION
    on_disk = sorted(p.name for p in mini_index.iterdir() if p.name != "manifest.json")
    assert sorted(m.files) == sorted([*FILES, "heldout.npz"]) == on_disk
    for name, record in m.files.items():
        assert record.size == (mini_index / name).stat().st_size
    # What a load reads, so checks. The calibration split (heldout.npz) is read, and checked, only when learning
    # re-checks precision.
    assert sorted(index_files(m)) == FILES


def test_a_changed_heldout_split_is_refused_when_learning_reads_it(mini_index: Path, tmp_path: Path) -> None:
    from router.learn import LearningConfig

    copy = clone(mini_index, tmp_path / "copy")
    flip_one_byte(copy / "heldout.npz")
    router = Router.load(copy, llm="off", learning=LearningConfig(log=str(tmp_path / "l.jsonl"), reservoir_share=0))
    try:
        with pytest.raises(IndexLoadError, match=r"heldout.npz does not match the sha256 in its manifest"):
            router.learn("please tell me the chance of snow in oslo", "weather")
    finally:
        router.close()


@pytest.mark.parametrize("name", FILES)
def test_a_changed_file_is_refused_naming_it(mini_index: Path, tmp_path: Path, name: str) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    flip_one_byte(copy / name)  # same size: only its sha256 tells
    with pytest.raises(IndexLoadError,
                       match=rf"{name} does not match the sha256 in its manifest \(file [0-9a-f]{{16}}, "
                                          r"manifest [0-9a-f]{16}\): it changed after the build") as info:
        Router.load(copy)
    assert not isinstance(info.value, StaleIndexError)


@pytest.mark.parametrize("name", FILES)
def test_a_truncated_file_is_refused_naming_it(mini_index: Path, tmp_path: Path, name: str) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    size = (copy / name).stat().st_size
    truncate(copy / name)
    with pytest.raises(IndexLoadError, match=rf"{name} has {size // 2:,} bytes, the manifest records {size:,} "
                                          r"\(truncated since the build\); rebuild it with: router build"):
        Router.load(copy)


@pytest.mark.parametrize("name", FILES)
def test_a_missing_file_is_refused_naming_it(mini_index: Path, tmp_path: Path, name: str) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    size = (copy / name).stat().st_size
    (copy / name).unlink()
    with pytest.raises(IndexLoadError, match=rf"incomplete or corrupt: {name} is missing \(the manifest records "
                                          rf"{size:,} bytes\)"):
        Router.load(copy)


def test_the_static_table_is_checked_only_when_served(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    truncate(copy / "static.npz")
    with pytest.raises(IndexLoadError, match=r"static\.npz has"):
        Router.load(copy)
    assert Router.load(copy, static=False).chain.names == ["rules", "embedding"]  # --static off never reads it


def test_a_missing_config_is_an_index_error_everywhere(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    (copy / "config.json").unlink()
    with pytest.raises(IndexLoadError, match=r"config\.json is missing"):
        built_config(copy)  # what `router serve` reads first
    (copy / "config.json").write_text("{not json")
    with pytest.raises(IndexLoadError, match=r"config\.json is not a valid config"):
        built_config(copy)


def test_edited_thresholds_in_the_manifest_are_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    data = json.loads((copy / "manifest.json").read_text())
    data["calibration"]["accept_threshold"] = 0.01  # accept nearly everything
    rewrite(copy / "manifest.json", json.dumps(data, indent=2).encode())
    with pytest.raises(IndexLoadError, match=r"manifest\.json does not match its own sha256 \(manifest_sha256 "
                                          r"[0-9a-f]{16}, content [0-9a-f]{16}\): it was edited after the build"):
        Router.load(copy)
    reseal(copy)  # a deliberate edit is made explicitly, and then served
    assert Router.load(copy).artifact.manifest.calibration.accept_threshold == 0.01


@pytest.mark.parametrize("damage", ["truncated", "not json"])
def test_an_unreadable_manifest_is_refused(mini_index: Path, tmp_path: Path, damage: str) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    manifest = copy / "manifest.json"
    if damage == "truncated":
        truncate(manifest)
    else:
        rewrite(manifest, b"\xff\xfe garbage")
    with pytest.raises(IndexLoadError, match=r"manifest\.json is not readable JSON"):
        Router.load(copy)


def test_an_older_format_is_refused_with_rebuild(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    data = json.loads((copy / "manifest.json").read_text())
    data["format_version"] = 2  # what an index of the previous release holds: no file records
    del data["files"], data["manifest_sha256"]
    rewrite(copy / "manifest.json", json.dumps(data).encode())
    with pytest.raises(StaleIndexError, match=rf"format_version 2, this router reads {FORMAT_VERSION} \(which "
                                              r"adds the size and sha256 of every file, checked on load; intents "
                                              r"without the unused `writes` flag .*\); rebuild it with: "
                                              r"router build --name copy"):
        Router.load(copy)


def test_an_index_of_the_previous_release_is_refused_naming_what_changed(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    data = json.loads((copy / "manifest.json").read_text())
    data["format_version"] = 3  # intents.json still has `writes`, and the intent hash covered it
    rewrite(copy / "manifest.json", json.dumps(data).encode())
    with pytest.raises(StaleIndexError) as info:
        Router.load(copy)
    message = str(info.value)
    assert "format_version 3, this router reads 4" in message and "`writes`" in message
    assert "sha256 of every file" not in message  # only what came after version 3
    assert message.endswith("rebuild it with: router build --name copy")


def test_a_manifest_without_a_file_record_is_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    (copy / "rules.json").unlink()
    reseal(copy)  # the record of rules.json goes with it
    with pytest.raises(IndexLoadError, match=r"the manifest has no sha256 for rules\.json"):
        Router.load(copy)


# -- the stored intents and labels agree with the manifest ------------------------------------------------


def test_stored_intents_are_checked_against_the_intent_set_hash(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    text = (copy / "intents.json").read_text()
    assert "set an alarm" in text
    rewrite(copy / "intents.json", text.replace("set an alarm", "set an alarx").encode())
    reseal(copy)  # the file records agree: only the intent-set hash can tell
    expected = read_manifest(copy).intent_set_hash[:12]
    with pytest.raises(IndexLoadError, match=rf"intents\.json holds an intent set with hash [0-9a-f]{{12}}, the "
                                          rf"manifest's intent_set_hash is {expected}"):
        Router.load(copy)


def test_labels_are_checked_against_the_stored_intents(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    with np.load(copy / "examples.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["intents"] = arrays["intents"][[1, 0, *range(2, len(arrays["intents"]))]]  # two labels swapped
    (copy / "examples.npz").unlink()
    np.savez(copy / "examples.npz", **arrays)
    reseal(copy)
    with pytest.raises(IndexLoadError, match=r"the labels of examples\.npz \(8\) are not the intents with examples"):
        Router.load(copy)


def test_rules_for_an_unknown_intent_are_refused(mini_index: Path, tmp_path: Path) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    rules = json.loads((copy / "rules.json").read_text())
    rules.append({"intent": "wire_everything", "patterns": [], "keywords": ["money"]})
    rewrite(copy / "rules.json", json.dumps(rules).encode())
    reseal(copy)
    with pytest.raises(IndexLoadError, match=r"rules\.json has rules for intents not in intents\.json: "
                                          r"\['wire_everything'\]"):
        Router.load(copy)


def test_each_file_is_hashed_once_per_load(mini_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router._artifact

    hashed: list[str] = []
    real = router._artifact._sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(router._artifact, "_sha256", counting)
    Router.load(mini_index)
    assert sorted(hashed) == FILES  # and the static arrays are not hashed again after the file
    hashed.clear()
    Router.load(mini_index, static=False)
    assert sorted(hashed) == [n for n in FILES if n != "static.npz"]


# -- a real `router serve` refuses a damaged index -----------------------------------------------------------


@pytest.mark.parametrize(("name", "damage"), [("config.json", "missing"), ("head.npz", "truncated")])
def test_serve_refuses_a_damaged_index_naming_the_file(mini_index: Path, tmp_path: Path, name: str,
                                                       damage: str) -> None:
    copy = clone(mini_index, tmp_path / "copy")
    if damage == "missing":
        (copy / name).unlink()
    else:
        truncate(copy / name)
    done = subprocess.run([sys.executable, "-m", "router._cli", "serve", "--index", str(copy), "--port",
                           str(free_port())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"router: error: index {copy} is incomplete or corrupt: {name} " in done.stderr
    assert ("is missing" if damage == "missing" else "truncated since the build") in done.stderr


# -- generations: the name is a symlink swapped in one rename ----------------------------------------------


def hashing_config(intents: Path, name: str = "mini") -> RouterConfig:
    """A fast build (no model) of the whole pipeline, tier-2 gate included, without the static tier."""
    return RouterConfig.model_validate({
        "name": name, "intents": str(intents), "validation": str(FIXTURES / "mini_val.jsonl"),
        "encoder": {"backend": "hashing"}, "static": {"enabled": False},
        "llm": {"backends": [{"backend": "memory"}]},
    })


def beside(root: Path, name: str = "mini") -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != name)


def test_build_swaps_a_symlink_and_keeps_the_previous_generation(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    builder = Builder(hashing_config(FIXTURES / "mini_intents.yaml"))
    name = tmp_path / "mini"
    report = builder.build(name)
    assert report.folder == name and name.is_symlink()
    first = os.readlink(name)
    assert first.startswith(".mini.") and not os.path.isabs(first)  # relative: the folder can move
    assert report.manifest.llm_gate is not None  # the gate was measured on the generation before the swap
    assert read_manifest(name.resolve()) == report.manifest
    resolved, _ = open_index(name)  # a reader that resolved the name ...
    builder.build(name)  # ... just before a rebuild swapped it
    assert os.readlink(name) != first and beside(tmp_path) == sorted([first, os.readlink(name)])
    assert Router.load(resolved).classify("what is the weather").candidates  # still whole: kept as previous
    builder.build(name)
    assert first not in beside(tmp_path) and len(beside(tmp_path)) == 2  # older generations are pruned
    # The ways to name an index all reach the current generation.
    monkeypatch.setenv(INDEX_ENV, str(tmp_path))
    for index in ("mini", name, name.resolve()):
        assert Router.load(index).artifact.manifest == read_manifest(name.resolve())
    assert Router.load("mini", index_dir=tmp_path).artifact.manifest.name == "mini"
    remove_index(name)  # a scratch index (`router eval`): the name and every generation
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_real_folder_is_exchanged_for_the_link_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             exchange: bool) -> None:
    if not exchange:  # where the system has no atomic exchange: two renames, same end state
        monkeypatch.setattr("router._artifact._exchange", lambda a, b: False)
    old = tmp_path / "mini"
    old.mkdir()
    (old / "leftover.txt").write_text("an index of the previous format, or an empty folder made for the build")
    Builder(hashing_config(FIXTURES / "mini_intents.yaml")).build(old)
    assert old.is_symlink() and beside(tmp_path) == [os.readlink(old)]  # the old folder is gone
    assert Router.load(old).classify("hello").candidates


# -- a build killed at each step -----------------------------------------------------------------------------

STEPS = ["writing", "written", "sealed", "staged", "linked", "swapped", "pruned"]
KILL_AT = """
import os, signal, sys
import router._artifact

def reached(step):
    if step == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)

router._artifact._reached = reached
from router._cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def old_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mini`` built from mini_intents.yaml: the index each killed build tries to replace."""
    root = tmp_path_factory.mktemp("old")
    Builder(hashing_config(FIXTURES / "mini_intents.yaml")).build(root / "mini")
    return root


def kill_build_at(step: str, root: Path) -> None:
    """``router build`` of another intent set (mini_train.csv) into ``root``, killed with SIGKILL at ``step``."""
    args = ["build", "--intents", str(FIXTURES / "mini_train.csv"), "--validation", str(FIXTURES / "mini_val.jsonl"),
            "--backend", "hashing", "--static", "off", "--llm", "memory", "--name", "mini", "--index-dir", str(root)]
    done = subprocess.run([sys.executable, "-c", KILL_AT, step, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, f"the build did not reach {step!r}: {done.stderr[-2000:]}"


@pytest.mark.parametrize(("layout", "step"), [("link", s) for s in STEPS] + [("folder", "linked"),
                                                                             ("folder", "swapped")])
def test_a_build_killed_at_each_step_leaves_a_whole_index(old_index: Path, tmp_path: Path, layout: str,
                                                           step: str) -> None:
    root = tmp_path / "indexes"
    shutil.copytree(old_index, root, symlinks=True)
    if layout == "folder":  # the old index as a real folder (the first build over a format-2 index)
        generation = (root / "mini").resolve()
        (root / "mini").unlink()
        generation.rename(root / "mini")
    old = read_manifest((root / "mini").resolve()).intent_set_hash
    kill_build_at(step, root)
    served = Router.load("mini", index_dir=root)  # every file checked: whole
    new = served.artifact.manifest.intent_set_hash
    swapped = STEPS.index(step) >= STEPS.index("swapped")
    assert (new != old) if swapped else (new == old)
    # The next build cleans up what the killed one left (its process is gone) and keeps the generation it
    # replaced, if the name was a link to one.
    Builder(hashing_config(FIXTURES / "mini_intents.yaml")).build(root / "mini")
    assert (root / "mini").is_symlink() and len(beside(root)) == (2 if layout == "link" or swapped else 1)
    assert Router.load("mini", index_dir=root).artifact.manifest.intent_set_hash == old


def test_a_killed_build_leaves_an_index_router_serve_serves(old_index: Path, tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    shutil.copytree(old_index, root, symlinks=True)
    kill_build_at("linked", root)  # the new generation complete beside the name, one rename from served
    with ServeProcess("--index", "mini", "--index-dir", str(root)) as served:
        answer = httpx.post(f"{served.url}/v1/classify", json={"text": "will it rain tomorrow"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["decisions"][0]["candidates"]


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_exchange_swaps_two_paths_atomically(tmp_path: Path) -> None:
    from router._artifact import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.mkdir()
    assert _exchange(a, b)  # one file and one folder, as a link and an index folder
    assert b.read_text() == "A" and a.is_dir()
