"""``POST /v1/admin/reload``'s serving logic: the service's reload, answered 200 or 409."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response

from router.service._service import ClassifierService
from router.service.admin._protocol import ReloadRequest

# Without a key every caller could swap the index: the admin routes are off unless one is configured.
NO_KEY = ("admin routes need an API key: start `router serve --api-key-env VAR` with the key in $VAR "
          "(to reload without one, send the server SIGHUP)")


class AdminServing:
    def __init__(self, service: ClassifierService, keyed: bool) -> None:
        self.service = service
        self.keyed = keyed  # the Guard checks the bearer key itself; here only whether there is one

    async def allowed(self) -> None:
        if not self.keyed:
            raise HTTPException(403, NO_KEY)

    async def reload(self, body: ReloadRequest | None) -> Response:
        outcome = await self.service.reload(None if body is None else body.index)
        # 409: the request was fine, the index it names is not servable; the old one keeps serving.
        return JSONResponse(outcome, status_code=200 if outcome["status"] == "reloaded" else 409)
