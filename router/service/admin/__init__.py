"""``POST /v1/admin/reload``: ``_protocol`` (models), ``_routes`` (the APIRouter, locked without an API key),
``_serving`` (the reload, over ``ClassifierService.reload``)."""

from router.service.admin._protocol import ReloadRefused, ReloadRequest, ReloadResponse
from router.service.admin._routes import admin_router
from router.service.admin._serving import AdminServing

__all__ = ["AdminServing", "ReloadRefused", "ReloadRequest", "ReloadResponse", "admin_router"]
