"""``POST /v1/admin/reload``: request and response models (they also define the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from router._strict import Strict
from router.service._models import NON_BLANK, IndexInfo


class ReloadRequest(Strict):
    """The body is optional: without ``index``, the configured one (``--index``) is read from disk again."""

    index: str | None = Field(None, min_length=1, max_length=4096, pattern=NON_BLANK,
                              description="another index to serve: a name under --index-dir, or a folder")


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    index: IndexInfo
    previous: IndexInfo
    seconds: float = Field(description="to load, check and warm the new index")


class ReloadRefused(BaseModel):
    status: Literal["refused"]
    detail: str = Field(description="why: the load or check that failed")
    serving: IndexInfo = Field(description="the index still serving")
