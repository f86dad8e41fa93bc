"""Reading a YAML file that must hold a mapping, with errors that name the file and what it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from router.errors import ConfigError


def read_mapping(path: str | Path, what: str, expected: str = "a mapping") -> dict[str, Any]:
    """``what`` names the file's role in messages (e.g. "config file", "model-routing file")."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data
