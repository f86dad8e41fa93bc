"""Pending actions of ``writes`` skills: an unguessable id each, single use, expiring, capped; in this
process (the ``memory`` state; ``_redis_approvals.py`` is the same across processes).

Limits (model-routing file): each pending action expires ``approval_ttl_s`` after it was made (15 min by
default); a session holds at most ``max_pending_approvals_per_session`` (10) and all sessions
together ``max_pending_approvals`` (10,000), the last line. Past a cap, ``create`` raises
``TooManyApprovals`` (HTTP 429, Retry-After: when the oldest in that scope expires); other
sessions are not affected by one session's cap.

An approval is *pending*, then *running* once claimed by an approve (a second approve gets
``ApprovalRunning``, so it never runs twice), then gone once its handler has finished, whatever the
outcome. If it is released without its handler having been entered, it is pending again.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from router.state._protocol import PendingAction, approval_gone, approval_running, too_many_approvals


class ApprovalStore:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_pending: int = 10_000,
                 max_per_session: int = 10) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_pending = max_pending
        self._max_per_session = max_per_session
        # Oldest first (the clock is monotonic), so expiry looks at the front only.
        self._pending: dict[str, PendingAction] = {}
        self._by_session: dict[str, dict[str, None]] = {}  # session -> its pending ids, oldest first
        self._running: dict[str, PendingAction] = {}
        self._lock = threading.Lock()

    def _drop(self, action: PendingAction) -> None:
        del self._pending[action.approval_id]
        ids = self._by_session[action.session_id]
        del ids[action.approval_id]
        if not ids:
            del self._by_session[action.session_id]

    def _expire(self) -> None:
        now = self._clock()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest.created <= self.ttl_s:
                return
            self._drop(oldest)

    def _retry_after(self, oldest: PendingAction) -> float:
        return max(1.0, math.ceil(oldest.created + self.ttl_s - self._clock()))

    def _check(self, session_id: str) -> None:
        ids = self._by_session.get(session_id, {})
        if len(ids) >= self._max_per_session:
            oldest = self._pending[next(iter(ids))]
            raise too_many_approvals(session_id, self._max_per_session, self._retry_after(oldest))
        if len(self._pending) >= self._max_pending:
            raise too_many_approvals(None, self._max_pending, self._retry_after(next(iter(self._pending.values()))))

    def check(self, session_id: str) -> None:
        """Raise ``TooManyApprovals`` now if ``create`` would: before any model is paid to extract parameters."""
        with self._lock:
            self._expire()
            self._check(session_id)

    def create(self, session_id: str, skill: str, params: dict[str, Any], text: str | None) -> PendingAction:
        with self._lock:
            self._expire()
            self._check(session_id)
            action = PendingAction(secrets.token_urlsafe(16), session_id, skill, params, text, self._clock())
            self._pending[action.approval_id] = action
            self._by_session.setdefault(session_id, {})[action.approval_id] = None
            return action

    def _take(self, approval_id: str) -> PendingAction:
        self._expire()
        action = self._pending.get(approval_id)
        if action is None:
            if approval_id in self._running:
                raise approval_running(approval_id)
            raise approval_gone(approval_id, self.ttl_s)
        self._drop(action)
        return action

    def take(self, approval_id: str) -> PendingAction:
        """Remove and return a pending action (a rejection); an id works once, within ``ttl_s``."""
        with self._lock:
            return self._take(approval_id)

    def claim(self, approval_id: str) -> PendingAction:
        """Pending -> running: the caller runs the handler, then calls ``finish``."""
        with self._lock:
            action = self._take(approval_id)
            self._running[approval_id] = action
            return action

    def finish(self, approval_id: str, consumed: bool) -> None:
        """Running -> gone when ``consumed`` (the handler was entered, whatever its outcome), else pending again."""
        with self._lock:
            action = self._running.pop(approval_id)
            if consumed:
                return
            self._pending[approval_id] = action
            self._by_session.setdefault(action.session_id, {})[approval_id] = None
            # Back in creation order, so that expiry from the front stays right (a rare path).
            self._pending = dict(sorted(self._pending.items(), key=lambda kv: kv[1].created))
            ids = self._by_session[action.session_id]
            self._by_session[action.session_id] = dict.fromkeys(sorted(ids, key=lambda k: self._pending[k].created))

    def pending(self, session_id: str | None = None) -> list[PendingAction]:
        with self._lock:
            self._expire()
            if session_id is None:
                return list(self._pending.values())
            return [self._pending[k] for k in self._by_session.get(session_id, {})]

    def running(self) -> list[PendingAction]:
        with self._lock:
            return list(self._running.values())
