"""Where model manifests and built indexes live.

Order: an explicit argument, then ``$ROUTER_MODELS_DIR`` / ``$ROUTER_INDEX_DIR``, then
``./models`` / ``./indexes`` in the working directory, then the folders beside the
package (an editable install from the repository).
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _resolve(explicit: str | Path | None, env: str, folder: str) -> Path:
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(env):
        return Path(os.environ[env])
    local = Path.cwd() / folder
    if local.is_dir():
        return local
    return _REPO_ROOT / folder


def models_dir(explicit: str | Path | None = None) -> Path:
    return _resolve(explicit, "ROUTER_MODELS_DIR", "models")


def indexes_dir(explicit: str | Path | None = None) -> Path:
    return _resolve(explicit, "ROUTER_INDEX_DIR", "indexes")
