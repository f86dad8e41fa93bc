"""The skill dispatcher: a resolved intent's skill, its parameters, approval, handler and checks.

All work runs on one private event loop (``LoopThread``) that owns the shared ``httpx`` client,
so the synchronous methods and the ``a``-prefixed coroutines share one connection pool and one
budget ledger whichever loop or thread calls them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from router.dispatch import extraction
from router.dispatch.approvals import ApprovalStore, PendingAction
from router.dispatch.budget import Ledger, SessionTotals
from router.dispatch.caller import CallResult, ModelCaller
from router.dispatch.config import ModelRef, RoutingConfig, Stage, load_routing
from router.dispatch.providers import ChatRequest, Message, Provider, build_provider
from router.dispatch.result import CallSummary, DispatchResult
from router.dispatch.skills import Skill, SkillContext, SkillRegistry
from router.dispatch.trace import TraceSink, build_sink
from router.errors import InputError, InvalidParameters, RouterError, SkillFailed
from router.llm.loop import LoopThread

log = logging.getLogger("router.dispatch")
T = TypeVar("T")


class Dispatcher:
    def __init__(
        self,
        config: RoutingConfig,
        skills: SkillRegistry,
        *,
        sink: TraceSink | None = None,
        providers: dict[str, Provider] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        drill_stages: frozenset[str] = frozenset(),
        handler_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self.skills = skills
        self.sink = sink if sink is not None else build_sink(config.trace)
        self.ledger = Ledger(config.budgets, clock=monotonic)
        self.approvals = ApprovalStore(config.approval_ttl_s, clock=monotonic)
        self.handler_timeout_s = handler_timeout_s
        self._clock = clock
        self._loop = LoopThread("router-dispatch")
        self._http: httpx.AsyncClient | None = None
        self._given_providers = providers
        self.caller = ModelCaller(config, providers or {}, self.ledger, self.sink, sleep=sleep,
                                  breaker_clock=monotonic, drill_stages=drill_stages)
        for name in config.budgets.switched_off():
            log.warning("budget %s is switched OFF by the routing file (explicit `off`)", name)

    @classmethod
    def from_config(cls, path: str | Path | None, skills: SkillRegistry, **kwargs: Any) -> Dispatcher:
        return cls(load_routing(path), skills, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------
    async def _ensure_client(self) -> None:
        if self._http is None:
            # One pool for every provider; per-call timeouts are set on each request.
            self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
            if self._given_providers is None:
                self.caller.providers = {name: build_provider(name, pc, self._http)
                                         for name, pc in self.config.providers.items()}

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        await self._ensure_client()
        return await coro

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(self._on_loop(coro))

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._loop.arun(self._on_loop(coro))

    def close(self) -> None:
        if self._http is not None:
            self._loop.run(self._http.aclose())
            self._http = None
        self._loop.stop()
        self.sink.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------
    def dispatch(self, session_id: str, skill: str, text: str | None = None,
                 params: dict[str, Any] | None = None) -> DispatchResult:
        return self._run(self._dispatch(session_id, skill, text, params))

    async def adispatch(self, session_id: str, skill: str, text: str | None = None,
                        params: dict[str, Any] | None = None) -> DispatchResult:
        return await self._arun(self._dispatch(session_id, skill, text, params))

    def approve(self, approval_id: str) -> DispatchResult:
        return self._run(self._approve(approval_id))

    async def aapprove(self, approval_id: str) -> DispatchResult:
        return await self._arun(self._approve(approval_id))

    def reject(self, approval_id: str) -> PendingAction:
        action = self.approvals.take(approval_id)
        self._trace_skill(action.session_id, action.skill, "rejected", approval_id=approval_id)
        return action

    async def acomplete(self, stage: Stage, skill: str, session_id: str, request: ChatRequest) -> CallResult:
        """One model call for any stage (e.g. diagnostic), with the same chain, retries and budgets."""
        return await self._arun(self.caller.call(stage=stage, skill=skill, session=session_id, request=request))

    async def aextract(self, session_id: str, skill: str, text: str,
                       chain: list[ModelRef] | None = None) -> tuple[BaseModel, list[CallSummary]]:
        """The extraction stage alone (no handler): the parameters and the calls made; ``chain`` pins models."""
        calls: list[CallSummary] = []
        model = await self._arun(self._extract(self.skills.get(skill), session_id, text, calls, chain))
        return model, calls

    def session_totals(self, session_id: str) -> SessionTotals:
        return self.ledger.totals(session_id)

    def skill_for_intent(self, intent: str | None) -> str | None:
        if intent is None:
            return None
        name = self.config.skill_for(intent)
        return name if name in self.skills else None

    # -- the steps ---------------------------------------------------------------------------------
    async def _dispatch(self, session_id: str, name: str, text: str | None,
                        params: dict[str, Any] | None) -> DispatchResult:
        skill = self.skills.get(name)
        if text is not None and len(text) > self.config.max_text_chars:
            raise InputError(f"text: {len(text)} characters is over max_text_chars={self.config.max_text_chars}")
        self.ledger.step(session_id)
        calls: list[CallSummary] = []
        try:
            if params is not None:
                model = extraction.validate_params(skill, params)
            elif text is not None and text.strip():
                model = await self._extract(skill, session_id, text, calls)
            else:
                raise InvalidParameters(skill.name, "nothing to act on", ["give `text` or `params`"])
            if skill.writes:
                action = self.approvals.create(session_id, skill.name, model.model_dump(mode="json"), text)
                self._trace_skill(session_id, skill.name, "pending_approval", calls, approval_id=action.approval_id)
                return self._result("pending_approval", session_id, skill, model, calls,
                                    approval_id=action.approval_id)
            return await self._run_skill(skill, model, SkillContext(session_id, skill.name, text), calls)
        except RouterError as exc:
            self._trace_skill(session_id, skill.name, type(exc).__name__, calls, error=str(exc))
            raise

    async def _approve(self, approval_id: str) -> DispatchResult:
        action = self.approvals.take(approval_id)
        skill = self.skills.get(action.skill)
        model = extraction.validate_params(skill, action.params)
        ctx = SkillContext(action.session_id, skill.name, action.text, approval_id)
        calls: list[CallSummary] = []
        try:
            return await self._run_skill(skill, model, ctx, calls)
        except RouterError as exc:
            self._trace_skill(action.session_id, skill.name, type(exc).__name__, calls, error=str(exc))
            raise

    async def _extract(self, skill: Skill, session_id: str, text: str, calls: list[CallSummary],
                       chain: list[ModelRef] | None = None) -> BaseModel:
        request = extraction.first_request(skill, text)
        call = await self.caller.call(stage="extraction", skill=skill.name, session=session_id, request=request,
                                      chain=chain)
        calls.append(CallSummary.of("extraction", call))
        model, errors = extraction.parse_answer(skill, call.completion.text)
        if model is not None:
            return model
        retry = extraction.reask_request(request, call.completion.text, errors)
        call = await self.caller.call(stage="extraction", skill=skill.name, session=session_id, request=retry,
                                      chain=chain)
        calls.append(CallSummary.of("extraction", call))
        model, errors = extraction.parse_answer(skill, call.completion.text)
        if model is None:
            raise InvalidParameters(skill.name, "the extracted parameters fail the schema after one re-ask", errors)
        return model

    async def _run_skill(self, skill: Skill, params: BaseModel, ctx: SkillContext,
                         calls: list[CallSummary]) -> DispatchResult:
        try:
            async with asyncio.timeout(self.handler_timeout_s):
                raw = await skill.handler(params, ctx)
        except TimeoutError:
            raise SkillFailed(skill.name, f"handler gave no result within {self.handler_timeout_s:g}s",
                              "handler_timeout") from None
        except RouterError:
            raise
        except Exception as exc:
            raise SkillFailed(skill.name, f"handler raised {type(exc).__name__}: {exc}", "handler_error") from exc
        result = self._check_result(skill, raw)
        reply = await self._format(skill, ctx, result, calls) if skill.format_reply else None
        self._trace_skill(ctx.session_id, skill.name, "ok", calls, approval_id=ctx.approval_id)
        return self._result("ok", ctx.session_id, skill, params, calls, result=result, reply=reply)

    def _check_result(self, skill: Skill, raw: Any) -> Any:
        if skill.result is None:
            return raw.model_dump(mode="json") if isinstance(raw, BaseModel) else raw
        try:
            checked = skill.result.model_validate(raw.model_dump() if isinstance(raw, BaseModel) else raw)
        except ValidationError as exc:
            raise SkillFailed(skill.name, "result fails its schema: " + "; ".join(extraction.describe_errors(exc)),
                              "result_schema") from None
        if skill.max_age_s is not None:
            as_of = checked.as_of  # type: ignore[attr-defined]  # enforced by Skill.__post_init__
            stamp = as_of.timestamp() if isinstance(as_of, datetime) else float(as_of)
            age = self._clock() - stamp
            if age > skill.max_age_s:
                raise SkillFailed(skill.name, f"result is stale: its data is {age:.0f}s old, max_age_s is "
                                  f"{skill.max_age_s:g}", "stale")
        return checked.model_dump(mode="json")

    async def _format(self, skill: Skill, ctx: SkillContext, result: Any, calls: list[CallSummary]) -> str:
        request = ChatRequest(
            system="Write a short, plain reply to the user from the result of the skill that served them. "
                   "State only what the result says.",
            messages=(Message("user", f"User asked: {ctx.text or ''}\nSkill: {skill.name}\n"
                                      f"Result: {json.dumps(result, sort_keys=True)}"),))
        call = await self.caller.call(stage="formatting", skill=skill.name, session=ctx.session_id, request=request)
        calls.append(CallSummary.of("formatting", call))
        return call.completion.text

    # -- records -----------------------------------------------------------------------------------
    def _result(self, status: Any, session_id: str, skill: Skill, params: BaseModel, calls: list[CallSummary],
                **extra: Any) -> DispatchResult:
        return DispatchResult(
            status=status, session_id=session_id, skill=skill.name, params=params.model_dump(mode="json"),
            calls=calls, tokens=sum(c.tokens for c in calls),
            cost_usd=float(sum((Decimal(str(c.cost_usd)) for c in calls), Decimal(0))),
            fallback_taken=any(c.fallback_from for c in calls), **extra)

    def _trace_skill(self, session_id: str, skill: str, status: str, calls: list[CallSummary] | None = None,
                     approval_id: str | None = None, error: str | None = None) -> None:
        record: dict[str, Any] = {"ts": time.time(), "kind": "skill", "session": session_id, "skill": skill,
                                  "status": status, "calls": len(calls or []),
                                  "budget_left": self.ledger.left(session_id)}
        if approval_id:
            record["approval_id"] = approval_id
        if error:
            record["error"] = error
        self.sink.write(record)
