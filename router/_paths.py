"""Where model manifests, the model cache and built indexes live.

- Manifests: the ones shipped in the package (``router/models/*.yaml``, read with
  ``importlib.resources``), overlaid by a user folder: an explicit argument, else
  ``$ROUTER_MODELS_DIR``, else ``./models`` when the working directory has one (a checkout).
- The model cache (exported ONNX files, distilled static tables: per encoder, the same for
  every project, and slow to make): ``<explicit models dir>/cache``, else ``$ROUTER_CACHE_DIR``,
  else ``<user models folder>/cache`` (so a checkout keeps using ``models/cache``), else
  ``$XDG_CACHE_HOME/tiered-router`` (``~/.cache/tiered-router``), shared by every project.
- Indexes: an explicit argument (``--index-dir``), else ``$ROUTER_INDEX_DIR``, else
  ``./indexes`` under the working directory. An index belongs to a project, like a build
  folder, so it sits beside it; a shared cache folder would make two projects' ``default``
  indexes overwrite each other.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from router._settings import environ

CACHE_ENV = "ROUTER_CACHE_DIR"
MODELS_ENV = "ROUTER_MODELS_DIR"
INDEX_ENV = "ROUTER_INDEX_DIR"


def packaged_models() -> Traversable:
    """The manifests and the tokenizer shipped inside the package."""
    return files("router") / "models"


def models_dir(explicit: str | Path | None = None) -> Path | None:
    """The user's models folder (extra manifests, local files), or None when there is none."""
    if explicit is not None:
        return Path(explicit)
    if (value := environ(MODELS_ENV)) is not None:
        return Path(value)
    local = Path.cwd() / "models"
    return local if local.is_dir() else None


def cache_dir(models: str | Path | None = None) -> Path:
    """Where exported ONNX files and distilled static tables are kept."""
    if models is None and (value := environ(CACHE_ENV)) is not None:
        return Path(value)
    user = models_dir(models)
    if user is not None:
        return user / "cache"
    xdg = environ("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tiered-router"


def indexes_dir(explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if (value := environ(INDEX_ENV)) is not None:
        return Path(value)
    return Path.cwd() / "indexes"
