"""The HTTP service (`router serve`): FastAPI on uvicorn, from the ``[server]`` extra.

``config`` (ServeConfig, no server dependency), ``app`` (the app factory), one package per endpoint
family, vLLM-style (``classify/``, ``dispatch/``, ``admin/``: ``_protocol`` models, ``_routes`` thin routes,
``_serving`` logic), ``_errors`` (the one exception -> status table), ``models`` (shared models),
``guard`` (limits), ``service`` (the Router behind micro-batching), ``batcher``, ``metrics``,
``server`` (uvicorn, draining), ``workers`` (the ``--workers`` supervisor). FastAPI and uvicorn are
imported only when one of the names below other than ``ServeConfig`` is first used, so ``router
serve --help`` and the library work without the extra.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from router.service._config import ServeConfig

if TYPE_CHECKING:
    from router.service._app import create_app
    from router.service._server import build_server, serve
    from router.service._service import ClassifierService

__all__ = ["ClassifierService", "ServeConfig", "build_server", "create_app", "serve"]

_LAZY = {"create_app": "router.service._app", "build_server": "router.service._server",
         "serve": "router.service._server", "ClassifierService": "router.service._service"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router.service' has no attribute {name!r}")
