"""The torch-free half of fine-tuning (router/train/_data.py, the config, the stale check): the default suite.

What the encoder is tuned on and held out on, the batches, and the errors that name a bad setting or a
thin intent come before torch is imported, so none of this needs the [train] extra.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router._cli import main
from router._config import FinetuneConfig, RouterConfig, load_config
from router._intents import OOS, Labelled, training_pairs
from router._sources import resolve_sources
from router.errors import ConfigError, StaleIndexError
from router.train import base_manifest, check_tuned
from router.train._data import SORT_WINDOW, batches, check_examples, pad, training_set
from router.train._record import FinetuneRecord, tuned_encoder_id
from tests.train.conftest import INTENTS, SliceFiles, write_config, write_jsonl


def labelled(counts: dict[str, int], prefix: str = "") -> Labelled:
    """``counts[label]`` examples per label, every text distinct."""
    rows = [(f"{prefix}{label} example {i}", label) for label, n in counts.items() for i in range(n)]
    return Labelled([t for t, _ in rows], [lab for _, lab in rows])


def test_importing_the_train_package_does_not_import_torch() -> None:
    code = ("import sys\n"
            "import router.train, router.train._data, router.train._loop, router.train._record, router._cli\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- what is trained on, what is held out --------------------------------------------------------------


def test_with_a_validation_split_it_is_the_held_out_set() -> None:
    pairs = labelled({"a": 5, "b": 3, OOS: 4})
    val = labelled({"a": 2, "b": 2, "gone": 3, OOS: 2}, prefix="val ")
    data = training_set(pairs, ["a", "b"], val, FinetuneConfig(batch_size=8))
    assert not data.held_out_slice
    assert data.train == pairs  # every example is trained on
    # The validation queries of intents the build does not know are dropped; out-of-scope ones stay.
    assert Counter(data.heldout.labels) == {"a": 2, "b": 2, OOS: 2}
    assert not set(data.heldout.texts) & set(data.train.texts)
    # Head classes: the intent's position, len(names) for out of scope.
    assert data.classes(data.heldout).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(("holdout", "folds"), [(0.1, 10), (0.25, 4)])
def test_without_validation_a_stratified_slice_is_held_out(holdout: float, folds: int) -> None:
    counts = {"two": 2, "three": 3, "eleven": 11, "thirty": 30, OOS: 20}
    pairs = labelled(counts)
    config = FinetuneConfig(batch_size=4, holdout=holdout, seed=3)
    data = training_set(pairs, ["two", "three", "eleven", "thirty"], None, config)
    assert data.held_out_slice
    train, held = Counter(data.train.labels), Counter(data.heldout.labels)
    for label, n in counts.items():
        # Each class is spread over the folds and one fold is held out: ceil(n / folds) of it.
        assert held[label] == -(-n // folds), label
        assert train[label] == n - held[label] >= 1, label  # every intent keeps a training example
    assert held[OOS] >= 1 and train[OOS] >= 1  # the out-of-scope examples are spread too
    assert not set(data.train.texts) & set(data.heldout.texts)  # never trained on what is held out
    assert sorted(data.train.texts + data.heldout.texts) == sorted(pairs.texts)  # and nothing is lost
    # The seed picks the slice: the same one again, another one with another seed.
    again = training_set(pairs, ["two", "three", "eleven", "thirty"], None, config)
    assert again.heldout == data.heldout and again.digest() == data.digest()
    other = training_set(pairs, ["two", "three", "eleven", "thirty"], None, config.model_copy(update={"seed": 4}))
    assert other.heldout != data.heldout and other.digest() != data.digest()


def test_the_digest_changes_with_any_text_or_label() -> None:
    pairs, val = labelled({"a": 4, "b": 4}), labelled({"a": 2, "b": 2}, prefix="val ")
    config = FinetuneConfig(batch_size=2)
    digest = training_set(pairs, ["a", "b"], val, config).digest()
    assert len(digest) == 64 and digest == training_set(pairs, ["a", "b"], val, config).digest()
    relabelled = Labelled(pairs.texts, ["b"] + pairs.labels[1:])
    retexted = Labelled(["a example 0 "] + pairs.texts[1:], pairs.labels)
    val_relabelled = Labelled(val.texts, val.labels[:-1] + ["a"])
    changed = [training_set(relabelled, ["a", "b"], val, config).digest(),
               training_set(retexted, ["a", "b"], val, config).digest(),
               training_set(pairs, ["a", "b"], val_relabelled, config).digest()]
    assert len({digest, *changed}) == 4


# -- batches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [203, 2000])
def test_batches_cover_every_row_once_and_follow_the_seed(n: int) -> None:
    lengths = np.random.default_rng(1).integers(3, 40, size=n)
    plan = batches(lengths, 16, np.random.default_rng([7, 0]))
    rows = np.concatenate(plan)
    assert sorted(rows.tolist()) == list(range(n))  # every row exactly once
    assert all(1 <= len(b) <= 16 for b in plan) and sum(len(b) < 16 for b in plan) <= -(-n // (16 * SORT_WINDOW))
    same = batches(lengths, 16, np.random.default_rng([7, 0]))
    assert len(same) == len(plan) and all(np.array_equal(a, b) for a, b in zip(plan, same, strict=True))
    other = batches(lengths, 16, np.random.default_rng([7, 1]))  # the next epoch: another order
    assert not all(np.array_equal(a, b) for a, b in zip(plan, other, strict=True))
    if n <= 16 * SORT_WINDOW:  # one window: the batches are consecutive runs of the length-sorted rows
        ordered = sorted(plan, key=lambda b: (lengths[b].min(), lengths[b].max()))
        joined = np.concatenate([np.sort(lengths[b]) for b in ordered])
        assert np.all(np.diff(joined) >= 0)


def test_pad_pads_to_the_longest_row_with_a_mask() -> None:
    ids = [np.array([101, 7, 102]), np.array([101]), np.array([101, 5, 6, 8, 102])]
    padded, mask = pad(ids, np.array([2, 0]))
    assert padded.dtype == mask.dtype == np.int64
    assert padded.tolist() == [[101, 5, 6, 8, 102], [101, 7, 102, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    padded, mask = pad(ids, np.array([1]))
    assert padded.tolist() == [[101]] and mask.tolist() == [[1]]


# -- errors that name the problem -------------------------------------------------------------------


def test_an_intent_with_one_example_is_named() -> None:
    pairs = labelled({"plenty": 5, "lonely": 1, OOS: 1})  # one out-of-scope example is fine
    with pytest.raises(ConfigError, match=r"at least 2 examples per intent; 1 intent\(s\) have fewer: 'lonely' \(1\)"):
        check_examples(pairs)
    with pytest.raises(ConfigError, match=r"'lonely' \(1\)"):
        training_set(pairs, ["plenty", "lonely"], None, FinetuneConfig(batch_size=2))
    check_examples(labelled({"plenty": 5, "pair": 2}))


def test_a_batch_larger_than_the_data_names_the_key_and_the_value() -> None:
    pairs = labelled({"a": 12, "b": 8, OOS: 10})  # 20 in-scope examples: out-of-scope ones do not count
    val = labelled({"a": 2, "b": 2}, prefix="val ")
    assert len(training_set(pairs, ["a", "b"], val, FinetuneConfig(batch_size=20)).train) == 30
    with pytest.raises(ConfigError, match=r"finetune\.batch_size=21 is larger than the 20 in-scope training examples"):
        training_set(pairs, ["a", "b"], val, FinetuneConfig(batch_size=21))
    # Without a validation split the held-out slice is cut first: 2 + 1 examples are held out.
    with pytest.raises(ConfigError, match=r"finetune\.batch_size=20 is larger than the 17 in-scope"):
        training_set(pairs, ["a", "b"], None, FinetuneConfig(batch_size=20))


@pytest.mark.parametrize(("setting", "key", "shown"), [
    ("epochs: 0", "finetune.epochs", "(got 0)"),
    ("epochs: -2", "finetune.epochs", "(got -2)"),
    ("lr: 0", "finetune.lr", "(got 0)"),
    ("lr: -1", "finetune.lr", "(got -1)"),
    ("head_lr: 0", "finetune.head_lr", "(got 0)"),
    ("batch_size: 0", "finetune.batch_size", "(got 0)"),
])
def test_bad_finetune_settings_name_the_key_and_the_value(tmp_path: Path, slice_files: SliceFiles, setting: str,
                                                          key: str, shown: str) -> None:
    path = write_config(tmp_path / "bad.yaml", slice_files)
    path.write_text(path.read_text() + f"finetune:\n  {setting}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{key}: " in message and shown in message and str(path) in message


def test_a_finetune_section_is_read_from_yaml(tmp_path: Path, slice_files: SliceFiles) -> None:
    config = load_config(write_config(tmp_path / "ok.yaml", slice_files, finetune={"epochs": 2, "seed": 5}))
    assert config.finetune == FinetuneConfig(epochs=2, seed=5)
    assert load_config(write_config(tmp_path / "none.yaml", slice_files)).finetune is None
    empty = write_config(tmp_path / "empty.yaml", slice_files, finetune={})
    assert load_config(empty).finetune == FinetuneConfig()  # `finetune: {}`: every default
    with pytest.raises(ConfigError, match=r"unknown key 'finetune\.epoch'"):
        load_config(write_config(tmp_path / "typo.yaml", slice_files, finetune={"epoch": 2}))


@pytest.mark.parametrize("option", [["--epochs", "2"], ["--seed", "1"], ["--finetune-oos", "ignore"]])
def test_fine_tuning_options_without_finetune_exit_1(tmp_path: Path, slice_files: SliceFiles, option: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", "--intents", str(slice_files.train), "--name", "x", "--index-dir", str(tmp_path), *option])
    err = capsys.readouterr().err
    assert code == 1
    assert "add --finetune" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing was built


def test_a_bad_value_on_the_command_line_names_the_key(tmp_path: Path, slice_files: SliceFiles,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # An invalid value set on the command line names the key too (and fails before any training).
    code = main(["build", "--intents", str(slice_files.train), "--finetune", "--epochs", "0",
                 "--index-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "finetune.epochs" in err and "(got 0)" in err
    assert not list(tmp_path.iterdir())


# -- the stale check, without an index ----------------------------------------------------------------


def _record(config: RouterConfig) -> FinetuneRecord:
    """What a build of ``config`` would record, with made-up training results."""
    assert config.finetune is not None
    sources = resolve_sources(config)
    names = [i.name for i in sources.intents.intents if i.examples]
    data = training_set(training_pairs(sources.intents), names, sources.validation, config.finetune)
    base = base_manifest(config)
    return FinetuneRecord(base_model=base.name, base_encoder_id=base.encoder_id,
                          base_weights_sha256=base.weights.sha256, tokenizer_sha256=base.tokenizer.sha256,
                          configured_encoder_id="minilm-l6-int8@x",
                          tuned_weights_sha256="ab" * 32, config=config.finetune, data_sha256=data.digest(),
                          heldout="validation", n_train=len(data.train), n_heldout=len(data.heldout), best_epoch=1,
                          heldout_accuracy=[1.0], epoch_seconds=[1.0], loss=[0.1], seconds=1.0, cached=False)


def test_check_tuned_compares_the_settings_the_base_and_the_data(tmp_path: Path, slice_files: SliceFiles) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", slice_files, finetune={"epochs": 1}))
    assert config.finetune is not None
    record = _record(config)
    sources = resolve_sources(config)

    def check(record: FinetuneRecord | None, config: RouterConfig) -> None:
        check_tuned(record, config, sources.intents, sources.validation, tmp_path)

    check(record, config)  # as built
    check(record, config.model_copy(update={"finetune": config.finetune.model_copy(update={"threads": 1})}))
    check(None, config.model_copy(update={"finetune": None}))  # neither tuned nor asked to be
    with pytest.raises(StaleIndexError, match=r"built without fine-tuning, but the config has a finetune section"):
        check(None, config)
    tuned = tuned_encoder_id(record.base_model, record.tuned_weights_sha256)
    no_section = rf"fine-tuned \(encoder '{re.escape(tuned)}'\), but the config has no finetune section"
    with pytest.raises(StaleIndexError, match=no_section):
        check(record, config.model_copy(update={"finetune": None}))
    reseeded = config.model_copy(update={"finetune": config.finetune.model_copy(update={"seed": 1, "lr": 1e-4})})
    with pytest.raises(StaleIndexError, match=r"other settings \(lr: built 5e-05, config 0\.0001, seed: built 0, "
                                              r"config 1\)"):
        check(record, reseeded)
    with pytest.raises(StaleIndexError, match=r"fine-tuned on other data"):
        check(record.model_copy(update={"data_sha256": "0" * 64}), config)
    with pytest.raises(StaleIndexError, match=r"fine-tuned from 'other@"):
        check(record.model_copy(update={"base_weights_sha256": "1" * 64, "base_encoder_id": "other@1111"}), config)
    # Another training file: one label changed.
    rows = slice_files.train.read_text().splitlines()
    moved = write_jsonl(tmp_path / "moved.jsonl", [])
    moved.write_text("\n".join(rows[1:] + [rows[0].replace(f'"{INTENTS[0]}"', f'"{INTENTS[1]}"')]) + "\n")
    other = resolve_sources(config.model_copy(update={"intents": str(moved)}))
    with pytest.raises(StaleIndexError, match=r"fine-tuned on other data \(training and held-out hash [0-9a-f]{12}, "
                                              r"now [0-9a-f]{12}\)"):
        check_tuned(record, config, other.intents, other.validation, tmp_path)


def test_a_tuned_graph_is_refused_when_its_tokenizer_changed(tmp_path: Path) -> None:
    from router._config import EncoderConfig
    from router.encoders import build_tuned_encoder
    from router.errors import StaleIndexError

    with pytest.raises(StaleIndexError, match="tokenizer sha256 0000000000000000"):
        build_tuned_encoder(EncoderConfig(), tmp_path / "encoder.onnx", "minilm-l6-fp32", "minilm-l6-fp32+ft@x",
                            "0" * 64)
