"""The HTTP service (`router serve`): FastAPI on uvicorn.

``models`` (request/response schemas), ``app`` (thin routes), ``guard`` (limits), ``service``
(the Router behind micro-batching), ``batcher``, ``metrics``, ``server`` (uvicorn, draining).
FastAPI and uvicorn are imported only when this package is.
"""

from router.service.app import create_app
from router.service.config import ServeConfig
from router.service.server import build_server, serve
from router.service.service import ClassifierService

__all__ = ["ClassifierService", "ServeConfig", "build_server", "create_app", "serve"]
