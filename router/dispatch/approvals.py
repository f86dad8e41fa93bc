"""Pending actions of ``writes`` skills: an unguessable id each, single use, expiring."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.errors import ApprovalError


@dataclass(frozen=True)
class PendingAction:
    approval_id: str
    session_id: str
    skill: str
    params: dict[str, Any]
    text: str | None
    created: float


class ApprovalStore:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_pending: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_pending = max_pending
        self._pending: dict[str, PendingAction] = {}
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, a in self._pending.items() if now - a.created > self.ttl_s]:
            del self._pending[key]

    def create(self, session_id: str, skill: str, params: dict[str, Any], text: str | None) -> PendingAction:
        with self._lock:
            self._expire()
            if len(self._pending) >= self._max_pending:
                raise ApprovalError(f"too many pending approvals ({self._max_pending}); approve or reject some first")
            action = PendingAction(secrets.token_urlsafe(16), session_id, skill, params, text, self._clock())
            self._pending[action.approval_id] = action
            return action

    def take(self, approval_id: str) -> PendingAction:
        """Remove and return the action; an id works once, within ``ttl_s``."""
        with self._lock:
            self._expire()
            action = self._pending.pop(approval_id, None)
        if action is None:
            raise ApprovalError(f"approval_id {approval_id!r} is unknown, expired (ttl {self.ttl_s:g}s) or "
                                "already used")
        return action

    def pending(self, session_id: str | None = None) -> list[PendingAction]:
        with self._lock:
            self._expire()
            return [a for a in self._pending.values() if session_id is None or a.session_id == session_id]
