"""``POST /v1/feedback``, the review routes and ``GET /v1/learning``: request and response models.

The response models mirror the Learner's dataclasses (``LearnResult``, ``ReviewItem``,
router/learn/_learner.py); they define the OpenAPI schema, the answers are the dataclasses' dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from router._strict import Strict
from router.service._models import NON_BLANK

# An id the server made (a Decision's, a review's): bounded, so a path or body cannot carry a novel.
MAX_ID_CHARS = 256
MAX_INTENT_CHARS = 256
# GET /v1/review?limit=: the queue holds up to learning.max_pending_review items; a page of them by default.
DEFAULT_REVIEW_LIMIT, MAX_REVIEW_LIMIT = 100, 10_000


class FeedbackRequest(Strict):
    """Exactly one of ``intent`` or ``out_of_scope: true``. Served as ``feedback_model(...)``, which adds the
    index's text limit (as ``/v1/classify`` states it)."""

    # Strict: JSON's own types only (``"override": 0`` is not false), as the schema states them.
    model_config = ConfigDict(strict=True, json_schema_extra={"oneOf": [
        {"required": ["intent"], "properties": {"out_of_scope": {"const": False}}},
        {"required": ["out_of_scope"], "properties": {"out_of_scope": {"const": True}},
         "not": {"required": ["intent"]}},
    ]})
    text: str
    intent: str | None = None
    out_of_scope: bool = Field(False, description="the text belongs to no intent (or give intent)")
    source: Literal["human", "llm"] = Field("human", description="who says so: the intents of skills that write "
                                                                 "learn only from human. With an approver key "
                                                                 "(--approver-key-env), human needs it")
    decision_id: str | None = None
    override: bool = Field(False, description="source human only: replace an example that says otherwise")

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackRequest:
        if self.out_of_scope == (self.intent is not None):
            given = "both" if self.out_of_scope else "neither"
            raise ValueError(f"give exactly one of 'intent' or 'out_of_scope': true (got {given})")
        return self  # the rest (override by a human only, the intent's existence) is the Learner's check


def feedback_model(max_text_chars: int, intents: Sequence[str]) -> type[FeedbackRequest]:
    """FeedbackRequest with the index's text limit and learnable intents (those with examples) in its schema.
    The intents are stated, not enforced here: a reload may serve other intents, and the Learner refuses an
    unknown one itself (422 naming it). As in ``ClassifyRequest``, the optional fields are plain types with a
    default of None: an explicit null is refused, and an error names the field alone rather than each branch
    of a union."""
    text: Any = Annotated[str, Field(min_length=1, max_length=max_text_chars, pattern=NON_BLANK,
                                     description=f"the query, at most {max_text_chars} characters (as classify)")]
    return create_model(
        "FeedbackRequest", __base__=FeedbackRequest,
        text=(text, ...),
        intent=(str, Field(None, min_length=1, max_length=MAX_INTENT_CHARS,
                           json_schema_extra={"enum": list(intents)} if intents else None,
                           description="the intent the text belongs to (or out_of_scope: true); one of the "
                                       "index's intents with examples (those of the index served at start)")),
        decision_id=(str, Field(None, min_length=1, max_length=MAX_ID_CHARS,
                                description="the Decision this corrects (its id)")),
    )


class LearnResultResponse(BaseModel):
    """One feedback item taken: ``queued`` (logged, learned shortly), ``held_out`` (logged, kept to re-check
    precision, never trained on), ``duplicate`` (already an example with that label: nothing logged); an
    approved review may also be ``learned`` or ``refused``."""

    id: str = Field(description="the log entry's id ('' for a duplicate)")
    status: Literal["queued", "held_out", "learned", "refused", "duplicate"]
    intent: str | None
    out_of_scope: bool
    source: str
    decision_id: str | None = None


class ReviewItemResponse(BaseModel):
    """A tier-2 answer waiting for a person (``learning.mode: review``)."""

    id: str = Field(description="the review id: approve or reject it by this")
    text: str
    intent: str | None
    out_of_scope: bool
    confidence: float | None
    decision_id: str | None
    at: float = Field(description="when it was queued (Unix time)")


class ReviewListResponse(BaseModel):
    items: list[ReviewItemResponse] = Field(description="pending, oldest first: at most ?limit= of them")
    total: int = Field(description="how many are pending in all")


class LearningResponse(BaseModel):
    """The Learner's figures (``Learner.stats``); keys beyond these may be added."""

    model_config = ConfigDict(extra="allow")
    mode: Literal["off", "review", "auto"]
    feedback: bool
    log: dict[str, Any] = Field(description="the log backend: backend, where it lives, entries")
    n_learned: int
    n_heldout: int
    n_out_of_scope: int
    n_pending_review: int
    n_unserved: int = Field(description="learned examples logged but not served yet")
    applies: int
    refused: int
    last_apply: dict[str, Any] | None
