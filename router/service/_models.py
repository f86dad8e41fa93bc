"""Models every endpoint family shares (probes, errors); each family's own are in its ``_protocol.py``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# At least one character that is not blank in any regex dialect that reads this pattern: JSON Schema
# clients (ECMA: \ufeff is space, \x85 is not), pydantic-core (Rust, Unicode White_Space) and
# Python's str.strip() (also \x1c-\x1f). Plain \S disagreed across them, and schemathesis found it.
NON_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"


class HealthResponse(BaseModel):
    status: str


class IndexInfo(BaseModel):
    """The index serving: its manifest's name, version (the first 12 hex digits of its ``manifest_sha256``)
    and build time (ISO 8601)."""

    name: str
    version: str
    built_at: str


class ReadyResponse(BaseModel):
    ready: bool
    index: IndexInfo
    pid: int  # the worker process that answered (router serve --workers N)
    encoder_warm: bool
    draining: bool
    llm: dict[str, Any]
    state: dict[str, Any] | None = None  # the dispatcher's state backend, when dispatch is on
    learning: dict[str, Any] | None = None  # the serving index's Learner (GET /v1/learning), when it has one


class ErrorResponse(BaseModel):
    detail: Any
