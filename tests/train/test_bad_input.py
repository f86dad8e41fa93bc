"""Bad input to ``router build --finetune`` / ``router eval --finetune``: errors that name the problem.

No marker: none of these imports torch. Without the [train] extra the CLI says how to install it; a
thin intent or a batch larger than the data is a ConfigError, raised before any training (the tests
stand in for torch where the check comes after the import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import router.train._loop
from router._cli import main
from tests.train.conftest import N_TRAIN, SliceFiles, write_config, write_jsonl

INSTALL = "pip install 'tiered-router[train]'"
# Put first on PYTHONPATH: Python imports it at start-up, so torch looks not installed.
BLOCK_TORCH = """\
import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
"""
CLI = "import sys\nfrom router._cli import main\nsys.exit(main(sys.argv[1:]))\n"


def run_without_torch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def test_the_block_works(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "No module named 'torch'" in done.stderr


@pytest.mark.parametrize("command", ["build", "eval"])
def test_finetune_without_torch_names_the_install_command(tmp_path: Path, slice_files: SliceFiles,
                                                          command: str) -> None:
    index_dir = tmp_path / "indexes"
    files = ["--intents", str(slice_files.train), "--validation", str(slice_files.val)] if command == "build" else \
        ["--train", str(slice_files.train), "--val", str(slice_files.val), "--test", str(slice_files.val)]
    done = run_without_torch(tmp_path, command, *files, "--finetune", "--name", "ft", "--index-dir", str(index_dir))
    assert done.returncode == 1, done.stderr
    assert INSTALL in done.stderr and "torch" in done.stderr
    assert done.stderr.startswith("router: error: router build --finetune needs torch and transformers")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not index_dir.exists() or not list(index_dir.iterdir())  # no index, not even eval's scratch one


@pytest.fixture
def torch_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the [train] extra were installed: these errors come before the trainer needs torch."""
    monkeypatch.setattr(router.train._loop, "import_torch", lambda: None)


@pytest.mark.usefixtures("torch_stand_in")
@pytest.mark.parametrize("validation", [True, False])
def test_an_intent_with_fewer_than_2_examples_is_named(tmp_path: Path, slice_files: SliceFiles, validation: bool,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "thin.jsonl"
    train.write_text(slice_files.train.read_text() + '{"text": "feed the cat at noon", "intent": "feed_cat"}\n')
    val = ["--validation", str(slice_files.val)] if validation else []
    code = main(["build", "--intents", str(train), *val, "--finetune", "--name", "thin", "--index-dir",
                 str(tmp_path / "indexes")])
    err = capsys.readouterr().err
    assert code == 1
    assert "finetune needs at least 2 examples per intent; 1 intent(s) have fewer: 'feed_cat' (1)" in err
    assert "Traceback" not in err and not (tmp_path / "indexes" / "thin").exists()


@pytest.mark.usefixtures("torch_stand_in")
def test_a_batch_larger_than_the_data_is_named(tmp_path: Path, slice_files: SliceFiles,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    n = 5 * N_TRAIN  # in-scope training examples of the slice (the validation split is held out)
    config = write_config(tmp_path / "big.yaml", slice_files, finetune={"batch_size": n + 1})
    assert main(["build", "--config", str(config), "--index-dir", str(tmp_path / "indexes")]) == 1
    err = capsys.readouterr().err
    assert f"finetune.batch_size={n + 1} is larger than the {n} in-scope training examples" in err
    assert not (tmp_path / "indexes" / "slice").exists()


@pytest.mark.usefixtures("torch_stand_in")
def test_only_out_of_scope_examples_do_not_count_towards_the_batch(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"text": f"query {i}", "intent": "a" if i < 3 else "b" if i < 6 else "oos"} for i in range(40)]
    train = write_jsonl(tmp_path / "few.jsonl", rows)
    code = main(["eval", "--train", str(train), "--test", str(train), "--finetune", "--index-dir",
                 str(tmp_path / "indexes")])
    err = capsys.readouterr().err
    # 6 in-scope examples, 2 held out (one per intent): 4 left for the default batch of 32.
    assert code == 1 and "finetune.batch_size=32 is larger than the 4 in-scope training examples" in err
    assert not list((tmp_path / "indexes").iterdir())  # the scratch index is removed
