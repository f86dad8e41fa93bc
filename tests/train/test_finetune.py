"""``router build --finetune`` on a small CLINC150 slice (5 intents, 1 epoch): needs the [train] extra.

One module-scoped build (tens of seconds on 2 cores) is shared: what its manifest records, that the
tuned index is served with torch unimportable, and its stale checks. The other tests train again only
where that is the point: determinism under a seed, reuse of a finished run, resuming an interrupted
one, and ``router eval --finetune``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from router import Builder, IndexLoadError, Router, RouterConfig, StaleIndexError
from router._artifact import IndexManifest, index_files, read_manifest
from router._cli import main
from router._config import FinetuneConfig, load_config
from router._intents import training_pairs
from router._model_store import file_sha256, load_manifest
from router._paths import CACHE_ENV
from router._progress import Progress
from router._sources import resolve_sources
from router.encoders import encoder_identity
from router.train import DEFAULT_BASE, tune_encoder
from router.train._data import training_set
from router.train._record import TUNED_ONNX, tuned_encoder_id
from tests.test_index_integrity import clone, flip_one_byte
from tests.train.conftest import (
    CLEAR,
    INTENTS,
    N_OOS_TRAIN,
    N_OOS_VAL,
    N_TRAIN,
    N_VAL,
    Recorder,
    SliceFiles,
    write_config,
)

pytestmark = pytest.mark.train

SETTINGS = {"epochs": 1, "batch_size": 16}


@dataclass(frozen=True)
class Built:
    files: SliceFiles
    config_file: Path  # the YAML the index was built from (name "slice")
    config: RouterConfig
    index_dir: Path
    folder: Path  # index_dir / "slice"
    cache: Path  # its ROUTER_CACHE_DIR: the run folder under finetune/, the static table
    manifest: IndexManifest
    lines: list[str]  # the build's progress lines


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, slice_files: SliceFiles) -> Built:
    root = tmp_path_factory.mktemp("tuned")
    config_file = write_config(root / "slice.yaml", slice_files, finetune=SETTINGS)
    config = load_config(config_file)
    index_dir, cache = root / "indexes", root / "cache"
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cache))
        report = Builder(config, progress=recorder).build(index_dir / config.name)
    return Built(slice_files, config_file, config, index_dir, report.folder, cache, report.manifest, recorder.lines)


def run_folder(cache: Path) -> Path:
    """The one fine-tuning run folder in a model cache."""
    runs = list((cache / "finetune").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# -- the build ---------------------------------------------------------------------------------------


def test_the_manifest_records_the_fine_tune(built: Built) -> None:
    m, ft = built.manifest, built.manifest.finetune
    assert ft is not None and m == read_manifest(built.folder)
    base = load_manifest(DEFAULT_BASE)  # the int8 default has no trainable weights: its fp32 twin is tuned
    assert (ft.base_model, ft.base_encoder_id, ft.base_weights_sha256) == (DEFAULT_BASE, base.encoder_id,
                                                                            base.weights.sha256)
    assert ft.configured_encoder_id == encoder_identity(built.config.encoder) != base.encoder_id
    assert ft.config == FinetuneConfig(**SETTINGS)
    run = run_folder(built.cache)
    assert ft.tuned_weights_sha256 == file_sha256(run / "best.safetensors")
    sources = resolve_sources(built.config)
    names = [i.name for i in sources.intents.intents]
    data = training_set(training_pairs(sources.intents), names, sources.validation, FinetuneConfig(**SETTINGS))
    assert ft.data_sha256 == data.digest()
    assert ft.heldout == "validation" and not ft.cached
    assert (ft.n_train, ft.n_heldout) == (len(INTENTS) * N_TRAIN + N_OOS_TRAIN, len(INTENTS) * N_VAL + N_OOS_VAL)
    assert ft.best_epoch == 1
    assert len(ft.epoch_seconds) == len(ft.loss) == len(ft.heldout_accuracy) == 1
    assert ft.epoch_seconds[0] > 0 and ft.seconds >= ft.epoch_seconds[0]
    assert 0.0 <= ft.heldout_accuracy[0] <= 1.0
    # The index is keyed by the tuned encoder, whose graph it carries and verifies on load.
    assert m.encoder_id == tuned_encoder_id(DEFAULT_BASE, ft.tuned_weights_sha256)
    assert f"{DEFAULT_BASE}+ft@{ft.tuned_weights_sha256[:16]}" == m.encoder_id
    assert ft.onnx_file == TUNED_ONNX and TUNED_ONNX in m.files and TUNED_ONNX in index_files(m)
    assert m.files[TUNED_ONNX].sha256 == file_sha256(built.folder / TUNED_ONNX) == file_sha256(run / TUNED_ONNX)
    # The static tier was distilled from the tuned encoder, not the shipped one.
    assert m.static is not None and m.static.encoder_id == m.encoder_id
    # The run finished: its checkpoints (for resuming) are gone, its result is kept for reuse.
    assert (run / "done.json").is_file() and not list(run.glob("epoch-*.pt")) and not list(run.glob("*.tmp"))
    assert any(line.startswith("fine-tune epoch 1: loss ") for line in built.lines)
    assert not any("resuming" in line for line in built.lines)


SERVE = """\
import json, sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
for blocked in ("torch", "transformers"):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{blocked} could be imported")

import router

r = router.Router.load(sys.argv[1])
queries = json.loads(sys.argv[2])
decisions = [[d.intent, d.candidates[0].intent, d.tier] for d in r.classify_many(queries)]
print(json.dumps({"decisions": decisions, "encoder": r.encoder.encoder_id, "tiers": r.chain.names,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}))
"""


def test_a_tuned_index_is_served_without_torch(built: Built, tmp_path: Path) -> None:
    # An empty model cache too: the index alone carries the tuned encoder.
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path / "empty-cache")})
    done = subprocess.run([sys.executable, "-c", SERVE, str(built.folder), json.dumps(list(CLEAR.values()))],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["loaded"] == []  # no torch, no transformers in the serving process
    assert out["encoder"] == built.manifest.encoder_id
    assert "static" in out["tiers"]  # the static table distilled from the tuned encoder is served too
    for expected, (intent, top, _tier) in zip(CLEAR, out["decisions"], strict=True):
        assert top == expected  # the tuned head ranks the right intent first
        assert intent in (expected, None)  # and accepts it, or leaves it to a later tier
    assert sum(intent is not None for intent, _, _ in out["decisions"]) >= 3, out["decisions"]


# -- training again ----------------------------------------------------------------------------------


def _tune(config: RouterConfig) -> str:
    sources = resolve_sources(config)
    names = [i.name for i in sources.intents.intents]  # in the build's order: it numbers the head's classes
    assert sorted(names) == sorted(INTENTS)
    tuned = tune_encoder(config, training_pairs(sources.intents), names, sources.validation,
                         encoder_identity(config.encoder), Progress())
    assert not tuned.record.cached
    return tuned.record.tuned_weights_sha256


def test_the_same_seed_gives_the_same_weights(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert built.manifest.finetune is not None
    # Another model cache: nothing to reuse, trained again from the start. (Another seed changes the
    # held-out slice, see test_data.py; here it would cost one more training run.)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert _tune(built.config) == built.manifest.finetune.tuned_weights_sha256


def test_a_finished_run_is_reused(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = built.manifest.finetune
    assert first is not None
    monkeypatch.setenv(CACHE_ENV, str(built.cache))
    recorder = Recorder()
    m = Builder(built.config, progress=recorder).build(tmp_path / "again").manifest
    ft = m.finetune
    assert ft is not None and ft.cached
    assert ft.tuned_weights_sha256 == first.tuned_weights_sha256 and m.encoder_id == built.manifest.encoder_id
    assert ft.epoch_seconds == first.epoch_seconds  # the finished run's record, not a new one
    assert m.files[TUNED_ONNX] == built.manifest.files[TUNED_ONNX]
    assert m.static is not None and m.static.table_cached  # the tuned encoder's table too
    assert not any(line.startswith("fine-tune epoch") for line in recorder.lines)  # nothing trained


def test_an_interrupted_fine_tune_leaves_the_index_and_resumes(built: Built, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from router.train._loop import Trainer

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    # Two epochs, static tier off (not what this is about); the index served under the name so far: a copy
    # of the module's.
    config = built.config.model_copy(update={"finetune": FinetuneConfig(**{**SETTINGS, "epochs": 2}),
                                             "static": built.config.static.model_copy(update={"enabled": False})})
    index_dir = tmp_path / "indexes"
    index_dir.mkdir()
    folder = clone(built.folder, index_dir / "slice")
    epochs: list[int] = []
    real = Trainer._epoch

    def stopped_in_epoch_2(self: Trainer, epoch: int) -> float:
        epochs.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real(self, epoch)

    monkeypatch.setattr(Trainer, "_epoch", stopped_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        Builder(config, progress=Recorder()).build(folder)
    assert epochs == [0, 1]
    # No half-written index: the previous one is still served, whole, and nothing else was left beside it.
    assert [p.name for p in index_dir.iterdir()] == ["slice"]
    assert Router.load(folder).encoder.encoder_id == built.manifest.encoder_id
    run = run_folder(tmp_path / "cache")
    assert sorted(p.name for p in run.glob("epoch-*.pt")) == ["epoch-1.pt"]  # the first epoch's checkpoint
    assert not (run / "done.json").exists() and not list(run.glob("*.tmp"))

    def counted(self: Trainer, epoch: int) -> float:
        epochs.append(epoch)
        return real(self, epoch)

    epochs.clear()
    monkeypatch.setattr(Trainer, "_epoch", counted)
    recorder = Recorder()
    m = Builder(config, progress=recorder).build(folder).manifest
    assert epochs == [1]  # only the second epoch was trained
    assert any(line.startswith(f"fine-tune: resuming after epoch 1 from {run}") for line in recorder.lines)
    ft = m.finetune
    assert ft is not None and not ft.cached and ft.config.epochs == 2
    assert len(ft.epoch_seconds) == len(ft.loss) == len(ft.heldout_accuracy) == 2
    assert ft.best_epoch in (1, 2) and ft.tuned_weights_sha256 == file_sha256(run / "best.safetensors")
    assert (run / "done.json").is_file() and not list(run.glob("epoch-*.pt"))
    assert m.static is None and m.encoder_id == tuned_encoder_id(DEFAULT_BASE, ft.tuned_weights_sha256)
    assert read_manifest(folder) == m and Router.load(folder).encoder.encoder_id == m.encoder_id


# -- stale and damaged indexes -------------------------------------------------------------------------


def test_from_config_checks_the_fine_tune(built: Built, tmp_path: Path) -> None:
    def load(**finetune: object) -> Router:
        path = tmp_path / "config.yaml"
        config = write_config(path, built.files, finetune=finetune) if finetune else write_config(path, built.files)
        return Router.from_config(config, built.index_dir)

    assert Router.from_config(built.config_file, built.index_dir).encoder.encoder_id == built.manifest.encoder_id
    assert load(**SETTINGS, threads=1).encoder.encoder_id == built.manifest.encoder_id  # threads do not count
    with pytest.raises(StaleIndexError, match=r"fine-tuned with other settings \(seed: built 0, config 1\); "
                                              r"rebuild it with: router build --config"):
        load(**SETTINGS, seed=1)
    with pytest.raises(StaleIndexError, match=r"epochs: built 1, config 3"):
        load(batch_size=16)  # finetune.epochs defaults to 3
    with pytest.raises(StaleIndexError, match=r"was fine-tuned \(encoder 'minilm-l6-fp32\+ft@[0-9a-f]{16}'\), but "
                                              r"the config has no finetune section"):
        load()


@pytest.mark.parametrize("damage", ["flip", "remove"])
def test_a_damaged_tuned_encoder_is_refused(built: Built, tmp_path: Path, damage: str) -> None:
    copy = clone(built.folder, tmp_path / "copy")  # hard links: flip_one_byte rewrites the file it changes
    if damage == "flip":
        flip_one_byte(copy / TUNED_ONNX)
        message = rf"{TUNED_ONNX} does not match the sha256 in its manifest"
    else:
        (copy / TUNED_ONNX).unlink()
        message = rf"incomplete or corrupt: {TUNED_ONNX} is missing"
    with pytest.raises(IndexLoadError, match=message) as info:
        Router.load(copy)
    assert not isinstance(info.value, StaleIndexError)
    assert file_sha256(built.folder / TUNED_ONNX) == built.manifest.files[TUNED_ONNX].sha256  # untouched


# -- router eval --finetune ------------------------------------------------------------------------------


def test_eval_fine_tunes_and_reports_its_time(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    # No validation file: a stratified slice of the training file is held out. Static tier off: its
    # distillation is covered by the module's build.
    code = main(["eval", "--train", str(built.files.train), "--test", str(built.files.val), "--finetune",
                 "--epochs", "1", "--static", "off", "--json", "--index-dir", str(tmp_path / "indexes")])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert isinstance(result["finetune_seconds"], float) and result["finetune_seconds"] > 0
    assert isinstance(result["accuracy_full"], float) and 0.0 <= result["accuracy_full"] <= 1.0
    assert result["n_test"] == len(INTENTS) * N_VAL + N_OOS_VAL
    ft = result["finetune"]
    assert ft["heldout"] == "slice" and ft["config"]["epochs"] == 1 and not ft["cached"]
    held = len(INTENTS) * -(-N_TRAIN // 10) + -(-N_OOS_TRAIN // 10)  # a tenth of each intent, rounded up
    assert (ft["n_train"], ft["n_heldout"]) == (len(INTENTS) * N_TRAIN + N_OOS_TRAIN - held, held)
    assert "+ft@" in result["encoder"]
    assert not list((tmp_path / "indexes").iterdir())  # the scratch index is removed
