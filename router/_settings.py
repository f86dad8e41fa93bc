"""The one place the environment is read (and, for the workers' metrics folder, written).

Paths (``ROUTER_MODELS_DIR``, ``ROUTER_CACHE_DIR``, ``ROUTER_INDEX_DIR``, ``XDG_CACHE_HOME``), the
server's settings (``ROUTER_SERVE_*``: ``ServeConfig`` is a pydantic-settings model, which reads
its own variables; the names are checked here) and secrets. A secret is named by
its variable in the config (``api_key_env``), never written there, and is read when it is used,
so a rotated key is picked up; every value read is registered with ``router.redact`` so that no
error text, log or trace can echo it.
"""

from __future__ import annotations

import os

from router._redact import register_secret


def environ(name: str) -> str | None:
    """The variable's value; None when it is unset or empty."""
    return os.environ.get(name) or None


def environ_names(prefix: str) -> list[str]:
    """The set, non-empty variables whose name starts with ``prefix`` (to refuse a misspelt setting)."""
    return sorted(name for name, value in os.environ.items() if name.startswith(prefix) and value)


def export(name: str, value: str | None) -> None:
    """Set ``name`` for this process and the processes it starts from now on (None: unset it). Used for
    ``PROMETHEUS_MULTIPROC_DIR``, which prometheus_client reads in each ``--workers`` worker."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def secret(name: str | None) -> str | None:
    """The secret held by the variable ``name`` (None when unset or empty), masked from then on."""
    if not name:
        return None
    value = environ(name)
    register_secret(value)
    return value
