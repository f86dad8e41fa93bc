"""``POST /v1/classify``'s serving logic: the Router (through the service), then one serialisation that
names the index which answered (a reload may swap it between two requests, never during one)."""

from __future__ import annotations

from dataclasses import replace

from fastapi.responses import Response

from router._decision import Decision
from router.service._service import ClassifierService
from router.service.classify._protocol import CLASSIFY_RESPONSE, ClassifyRequest, ClassifyResponse


def with_top_k(decision: Decision, top_k: int | None) -> Decision:
    """The Decision with at most ``top_k`` candidates (sliced before it is serialised)."""
    if top_k is None or len(decision.candidates) <= top_k:
        return decision
    return replace(decision, candidates=decision.candidates[:top_k])


class ClassifyServing:
    def __init__(self, service: ClassifierService) -> None:
        self.service = service

    async def classify(self, body: ClassifyRequest) -> Response:
        if body.text is not None:
            decisions, index = await self.service.classify([body.text], batch=False)
        else:
            assert body.texts is not None  # one of the two, by ClassifyRequest's validator
            decisions, index = await self.service.classify(body.texts, batch=True)
        if body.top_k is not None:
            decisions = [with_top_k(d, body.top_k) for d in decisions]
        # The label is made once per reload (IndexIdentity), not per request.
        content = CLASSIFY_RESPONSE.dump_json(ClassifyResponse(decisions, body.session_id, index.label))
        return Response(content, media_type="application/json")
