"""``POST /v1/classify``: ``_protocol`` (request/response models), ``_routes`` (the APIRouter),
``_serving`` (the logic, over ``ClassifierService`` and the Router's ``aclassify``/``aclassify_many``)."""

from router.service.classify._protocol import ClassifyRequest, ClassifyResponse, request_model
from router.service.classify._routes import classify_router
from router.service.classify._serving import ClassifyServing

__all__ = ["ClassifyRequest", "ClassifyResponse", "ClassifyServing", "classify_router", "request_model"]
