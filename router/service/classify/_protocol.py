"""``POST /v1/classify``: request and response models (they also define the OpenAPI schema).

The response's Decisions are the library's ``Decision`` dataclass, serialised by its one
TypeAdapter (``router.decision.DECISION``): one shape for the library, the service and the client.
The response also names the index that answered (``index``: ``name@version``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, create_model, model_validator

from router._decision import Decision
from router._strict import Strict
from router.service._models import NON_BLANK


class ClassifyRequest(Strict):
    """Exactly one of ``text`` or ``texts``. Served as ``request_model(...)``, which adds the limits."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]})
    text: str | None = None
    texts: list[str] | None = None
    session_id: str | None = None
    top_k: int | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


def request_model(max_text_chars: int, max_batch: int) -> type[ClassifyRequest]:
    """ClassifyRequest with the index's limits in its schema, so the OpenAPI document states them.

    Fields are plain types with a default of None (not ``X | None``): an explicit null is refused,
    and an error names the field alone rather than each branch of a union.
    """
    text: Any = Annotated[str, Field(min_length=1, max_length=max_text_chars, pattern=NON_BLANK)]
    return create_model(
        "ClassifyRequest", __base__=ClassifyRequest,
        text=(text, Field(None, description=f"one query, at most {max_text_chars} characters")),
        texts=(list[text], Field(None, min_length=1, max_length=max_batch,
                                 description=f"a batch of at most {max_batch} queries")),
        session_id=(str, Field(None, max_length=256, description="echoed back; for tracing")),
        top_k=(int, Field(None, ge=1, le=100, description="candidates per Decision (at most the index's)")),
    )


@dataclass(slots=True)
class ClassifyResponse:
    decisions: list[Decision]
    session_id: str | None = None
    # The index that made the Decisions, ``name@version`` (version: the first 12 hex digits of its
    # manifest's sha256, as /readyz and router_index_info name it): after a reload, which one answered.
    index: str = ""


# A dataclass through its TypeAdapter: the fastest pydantic path (no validation on the way out).
CLASSIFY_RESPONSE: TypeAdapter[ClassifyResponse] = TypeAdapter(ClassifyResponse)
