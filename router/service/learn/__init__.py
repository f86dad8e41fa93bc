"""Learning over HTTP: ``POST /v1/feedback``, the review queue (``GET /v1/review``, ``POST
/v1/review/{review_id}/approve|reject``) and ``GET /v1/learning``. ``_protocol`` (models), ``_routes`` (the
APIRouter), ``_serving`` (the serving index's Learner, router/learn/, called off the event loop)."""

from router.service.learn._protocol import (
    FeedbackRequest,
    LearningResponse,
    LearnResultResponse,
    ReviewItemResponse,
    ReviewListResponse,
)
from router.service.learn._routes import PATHS, learn_router
from router.service.learn._serving import LearnServing

__all__ = ["PATHS", "FeedbackRequest", "LearnResultResponse", "LearnServing", "LearningResponse",
           "ReviewItemResponse", "ReviewListResponse", "learn_router"]
