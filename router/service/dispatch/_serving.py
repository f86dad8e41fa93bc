"""The dispatch routes' serving logic: classify -> skill -> dispatch, approvals and sessions.

A dispatch names its skill, or gives only ``text`` and lets the classifier pick: the skill is the
Decision's (``Decision.skill``: the intent's ``skill`` in the intents file, else the intent's own
name), when the registry has it. Errors map to statuses in one table (router/service/_errors.py).

The dispatch and approve routes run under their own deadline, ``request_timeout_s +
dispatch_timeout_s``, which the dispatcher keeps (router/dispatch/_deadline.py).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response

from router._decision import Decision
from router.dispatch import Dispatcher, DispatchResult
from router.service._service import ClassifierService
from router.service.dispatch._protocol import DispatchRequest


class DispatchServing:
    def __init__(self, service: ClassifierService, dispatcher: Dispatcher) -> None:
        self.service = service
        self.dispatcher = dispatcher
        # The Guard's deadline for the routes that run a dispatch step: the dispatcher plans each step to
        # end within dispatch_timeout_s; request_timeout_s covers the rest (classification, the response).
        request_s, dispatch_s = service.config.request_timeout_s, dispatcher.config.dispatch_timeout_s
        self.deadline = request_s + dispatch_s
        self.deadline_named = (f"its deadline of {self.deadline:g}s (request_timeout_s={request_s:g} + "
                               f"dispatch_timeout_s={dispatch_s:g})")
        service.deadline_for = self.deadline_for
        service.state = dispatcher.state  # /readyz reports it

    def deadline_for(self, path: str) -> tuple[float, str] | None:
        if path == "/v1/dispatch" or (path.startswith("/v1/approvals/") and path.endswith("/approve")):
            return self.deadline, self.deadline_named
        return None

    async def dispatch(self, body: DispatchRequest) -> Response:
        decision = None
        skill = body.skill
        if skill is None:
            assert body.text is not None  # by DispatchRequest's validator
            decision = await self.service.classify_one(body.text)
            skill = None if decision.out_of_scope else decision.skill
            if skill is None or skill not in self.dispatcher.skills:
                note = ("out of scope" if decision.out_of_scope
                        else f"intent {decision.intent!r} has no registered skill"
                        + (f" ({skill!r})" if skill is not None and skill != decision.intent else ""))
                result = DispatchResult(status="no_skill", session_id=body.session_id, skill=None, note=note)
                return self._respond(result, decision)
        result = await self.dispatcher.adispatch(body.session_id, skill, text=body.text, params=body.params)
        return self._respond(result, decision)

    async def approve(self, approval_id: str, approved_by: str) -> Response:
        return self._respond(await self.dispatcher.aapprove(approval_id, approved_by=approved_by), None)

    async def reject(self, approval_id: str, approved_by: str) -> Response:
        action = await self.dispatcher.areject(approval_id, approved_by=approved_by)
        return JSONResponse({"status": "rejected", "approval_id": approval_id, "skill": action.skill})

    async def session(self, session_id: str) -> Response:
        t = await self.dispatcher.asession_totals(session_id)
        return JSONResponse({"session_id": t.session_id, "tokens": t.tokens, "cost_usd": float(t.cost_usd),
                             "calls": t.calls, "steps": t.steps, "budget_left": t.budget_left})

    def _respond(self, result: DispatchResult, decision: Decision | None) -> Response:
        metrics = self.service.metrics
        metrics.dispatch.labels(result.status).inc()
        metrics.dispatch_cost.inc(result.cost_usd)
        if result.fallback_taken:
            metrics.dispatch_fallbacks.inc()
        payload = result.model_dump(mode="json")
        payload["decision"] = None if decision is None else decision.to_dict()
        return JSONResponse(payload)
