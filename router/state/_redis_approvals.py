"""Approvals in Redis: the rules of the in-process store (``_approval_store.py``), on any replica.

An action minted on one replica can be approved on another. ``claim`` takes it atomically
(``approval_take.lua`` renames ``approval:<id>`` to ``running:<id>``), so two approves at once,
on any replicas, run its handler once: the second gets ``ApprovalRunning``, or ``ApprovalError``
once it has finished. A running action whose process died is let go after ``hold_s``.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import TYPE_CHECKING, Any

from router.state._protocol import PendingAction, approval_gone, approval_running, too_many_approvals
from router.state._units import ms

if TYPE_CHECKING:
    from router.state._redis import RedisState


class RedisApprovals:
    def __init__(self, state: RedisState) -> None:
        self.state = state
        limits = state.limits
        self.ttl_s = limits.approval_ttl_s
        self._ttl_ms = ms(limits.approval_ttl_s)
        self._hold_ms = ms(limits.hold_s)
        self._max_pending = limits.max_pending_approvals
        self._max_per_session = limits.max_pending_approvals_per_session

    async def _add(self, mode: str, session_id: str, approval_id: str = "", action: str = "") -> list[Any]:
        k = self.state.key
        answer: list[Any] = await self.state.script("approval_add", [
            k("pending"), k("pending", session_id), k("approval", approval_id)], [
            mode, self._ttl_ms, self._max_pending, self._max_per_session, approval_id, action, session_id])
        if answer[0] == "ok":
            return answer
        oldest, now = int(answer[1]), int(answer[2])
        retry_after = max(1.0, math.ceil((oldest + self._ttl_ms - now) / 1000))
        if answer[0] == "session":
            raise too_many_approvals(session_id, self._max_per_session, retry_after)
        raise too_many_approvals(None, self._max_pending, retry_after)

    async def check(self, session_id: str) -> None:
        await self._add("check", session_id)

    async def create(self, session_id: str, skill: str, params: dict[str, Any], text: str | None) -> PendingAction:
        approval_id = secrets.token_urlsafe(16)
        action = json.dumps({"skill": skill, "params": params, "text": text})
        answer = await self._add("create", session_id, approval_id, action)
        return PendingAction(approval_id, session_id, skill, params, text, int(answer[1]) / 1000)

    @staticmethod
    def _action(approval_id: str, action: str, created: str, session_id: str) -> PendingAction:
        data = json.loads(action)
        return PendingAction(approval_id, session_id, data["skill"], data["params"], data["text"], int(created) / 1000)

    async def _take(self, mode: str, approval_id: str) -> PendingAction:
        k = self.state.key
        answer = await self.state.script("approval_take", [
            k("approval", approval_id), k("running", approval_id), k("pending")], [
            mode, approval_id, self.state.prefix, self._hold_ms])
        if answer[0] == "running":
            raise approval_running(approval_id)
        if answer[0] != "ok":
            raise approval_gone(approval_id, self.ttl_s)
        return self._action(approval_id, answer[1], answer[2], answer[3])

    async def claim(self, approval_id: str) -> PendingAction:
        return await self._take("claim", approval_id)

    async def take(self, approval_id: str) -> PendingAction:
        return await self._take("take", approval_id)

    async def finish(self, approval_id: str, consumed: bool) -> None:
        k = self.state.key
        await self.state.script("approval_finish", [k("running", approval_id), k("approval", approval_id),
                                                    k("pending")],
                                ["1" if consumed else "0", approval_id, self.state.prefix, self._ttl_ms])

    async def pending(self, session_id: str | None = None) -> list[PendingAction]:
        k = self.state.key
        scope = k("pending") if session_id is None else k("pending", session_id)
        flat = await self.state.script("approval_pending", [scope], [self._ttl_ms, self.state.prefix])
        return [self._action(*flat[i:i + 4]) for i in range(0, len(flat), 4)]
