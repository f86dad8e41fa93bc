"""The one error tree of tiered-router.

Every error the library raises on purpose is a ``RouterError``; vendor
exceptions (ONNX Runtime, FAISS, YAML, pydantic) are translated at the
boundary so callers catch one family::

    RouterError
    ├── ConfigError            bad YAML, unknown key, invalid value, bad intent set
    ├── InputError             a query the router refuses (empty, not a string, too long,
    │                          batch too large); also a ValueError
    ├── ModelError             model package missing, file hash mismatch, export failure
    └── IndexError_            no index where one was expected, unreadable files
        └── StaleIndexError    manifest disagrees with the configured encoder or intents

Messages name the parameter and the offending value, and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IndexError_",
    "InputError",
    "ModelError",
    "RouterError",
    "StaleIndexError",
]


class RouterError(Exception):
    """Base of every error tiered-router raises on purpose."""


class ConfigError(RouterError):
    """A configuration or intent-set file is invalid."""


class InputError(RouterError, ValueError):
    """A query or batch the router refuses to classify."""


class ModelError(RouterError):
    """An encoder model is missing, corrupt or cannot be loaded."""


class IndexError_(RouterError):  # noqa: N801 - trailing underscore avoids shadowing builtin
    """A built index is missing or unreadable."""


class StaleIndexError(IndexError_):
    """A built index does not match the configured encoder or intent set."""
