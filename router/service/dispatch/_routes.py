"""``POST /v1/dispatch``, the approval and the session routes: thin, with the serving object by ``Depends``.

Without a dispatcher the routes stay out of the schema, but answer 404 saying why they are not there.
The approval routes pass on who approved (``approved_by``, set by ``create_app`` from the approver
credential, which the Guard has checked) for the trace.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from router.dispatch import DispatchResult
from router.service._errors import error_responses
from router.service.dispatch._protocol import DispatchRequest, DispatchResponse, RejectResponse, SessionResponse
from router.service.dispatch._serving import DispatchServing

PATHS = ("/v1/dispatch", "/v1/approvals/{approval_id}/approve", "/v1/approvals/{approval_id}/reject",
         "/v1/sessions/{session_id}")
_ERRORS = error_responses({
    403: "the skill is not allowlisted; on the approval routes, the service key given instead of the approver "
         "key", 404: "approval id unknown, expired or used",
    409: "the approval's handler is running now (it is never run twice)",
    422: "invalid request or parameters (the detail names the field)",
    429: "a budget would be exceeded (nothing was called), or too many pending approvals (Retry-After)",
    502: "every model of the chain failed, or the skill failed",
    503: "max_dispatch_in_flight reached, budgets.max_sessions live sessions, or the shared state "
         "unreachable (Retry-After)",
})


async def dispatch_serving(request: Request) -> DispatchServing:  # async: a sync one runs on a worker thread
    serving: DispatchServing = request.app.state.dispatch
    return serving


async def approved_by(request: Request) -> str:
    who: str = request.app.state.approved_by
    return who


Serving = Annotated[DispatchServing, Depends(dispatch_serving)]
ApprovedBy = Annotated[str, Depends(approved_by)]
router = APIRouter()


@router.post("/v1/dispatch", response_model=DispatchResponse, responses=_ERRORS)
async def dispatch(body: DispatchRequest, serving: Serving) -> Response:
    return await serving.dispatch(body)


@router.post("/v1/approvals/{approval_id}/approve", response_model=DispatchResult, responses=_ERRORS)
async def approve(approval_id: str, serving: Serving, who: ApprovedBy) -> Response:
    return await serving.approve(approval_id, approved_by=who)


@router.post("/v1/approvals/{approval_id}/reject", response_model=RejectResponse, responses=_ERRORS)
async def reject(approval_id: str, serving: Serving, who: ApprovedBy) -> Response:
    return await serving.reject(approval_id, approved_by=who)


@router.get("/v1/sessions/{session_id}", response_model=SessionResponse, responses=_ERRORS)
async def session(session_id: str, serving: Serving) -> Response:
    return await serving.session(session_id)


async def _not_configured(request: Request) -> Response:
    return JSONResponse({"detail": "dispatch is not configured: start `router serve --skills module:registry "
                                   "[--model-routing models.yaml]`"}, status_code=404)


not_configured = APIRouter()
for _path in PATHS:
    not_configured.add_api_route(_path, _not_configured, methods=["GET", "POST"], include_in_schema=False)
