"""``POST /v1/dispatch``, the approval and the session routes: ``_protocol`` (models), ``_routes`` (the
APIRouter, and the 404 routes served when no dispatcher is configured), ``_serving`` (classify -> skill ->
dispatch, over the Dispatcher's async methods)."""

from router.service.dispatch._protocol import DispatchRequest, DispatchResponse, SessionResponse
from router.service.dispatch._routes import not_configured, router
from router.service.dispatch._serving import DispatchServing

__all__ = ["DispatchRequest", "DispatchResponse", "DispatchServing", "SessionResponse", "not_configured", "router"]
