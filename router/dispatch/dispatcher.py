"""The skill dispatcher: a resolved intent's skill, its parameters, approval, handler and checks.

All work runs on one private event loop (``LoopThread``) that owns the shared ``httpx`` client,
so the synchronous methods and the ``a``-prefixed coroutines share one connection pool and one
budget ledger whichever loop or thread calls them.

Time: each dispatch and each approval runs within ``dispatch_timeout_s``, its model calls cut to
fit around the handler's ``handler_timeout_s`` (``deadline.py``); a model-routing file where they cannot
fit is refused when the Dispatcher is made. A caller that stops waiting (an HTTP request cut
short) does not cancel the step: it runs to its end on the private loop and leaves its records.
``close`` lets steps in flight finish, then cuts what is left; a cut step still meters its
provider calls and writes its trace record (``status: "timeout"``). An approval is consumed when
its handler has finished, whatever the outcome, which the skill record's ``handler`` field gives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
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
from router.dispatch.config import ModelRef, ModelRoutingConfig, Stage, load_model_routing
from router.dispatch.deadline import Deadline
from router.dispatch.deadline import check as check_deadline
from router.dispatch.providers import ChatRequest, Message, Provider, build_provider
from router.dispatch.result import CallSummary, DispatchResult
from router.dispatch.skills import Skill, SkillContext, SkillRegistry
from router.dispatch.trace import TraceSink, build_sink
from router.errors import ConfigError, InputError, InvalidParameters, RouterError, SkillFailed
from router.llm.loop import LoopThread

log = logging.getLogger("router.dispatch")
T = TypeVar("T")


@dataclass
class _Run:
    """One dispatch or approval in flight: what its skill trace record needs, however it ends."""

    session_id: str
    skill: str
    deadline: Deadline | None = None
    approval_id: str | None = None
    calls: list[CallSummary] = field(default_factory=list)
    handler: str | None = None  # once entered: ok, error, timeout, or cancelled


class Dispatcher:
    def __init__(
        self,
        config: ModelRoutingConfig,
        skills: SkillRegistry,
        *,
        sink: TraceSink | None = None,
        providers: dict[str, Provider] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        drill_stages: frozenset[str] = frozenset(),
        handler_timeout_s: float | None = None,
    ) -> None:
        """``handler_timeout_s``: None takes the model-routing file's."""
        self.config = config
        self.skills = skills
        self.handler_timeout_s = config.handler_timeout_s if handler_timeout_s is None else handler_timeout_s
        self.sink = sink if sink is not None else build_sink(config.trace)
        self.ledger = Ledger(config.budgets, clock=monotonic)
        self.approvals = ApprovalStore(config.approval_ttl_s, clock=monotonic,
                                       max_pending=config.max_pending_approvals,
                                       max_per_session=config.max_pending_approvals_per_session)
        self._inflight: set[asyncio.Task[Any]] = set()  # steps on the private loop, for close()
        self._clock = clock
        self._loop = LoopThread("router-dispatch")
        self._http: httpx.AsyncClient | None = None
        self._given_providers = providers
        self.caller = ModelCaller(config, providers or {}, self.ledger, self.sink, sleep=sleep,
                                  breaker_clock=monotonic, drill_stages=drill_stages)
        try:
            self.check_deadlines()
        except ConfigError:
            self.sink.close()
            raise
        for name in config.budgets.switched_off():
            log.warning("budget %s is switched OFF by the model-routing file (explicit `off`)", name)

    @classmethod
    def from_config(cls, path: str | Path | None, skills: SkillRegistry, **kwargs: Any) -> Dispatcher:
        return cls(load_model_routing(path), skills, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------
    async def _ensure_client(self) -> None:
        if self._http is None:
            # One pool for every provider; per-call timeouts are set on each request.
            self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
            if self._given_providers is None:
                self.caller.providers = {name: build_provider(name, pc, self._http)
                                         for name, pc in self.config.providers.items()}

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            try:
                await self._ensure_client()
            except BaseException:
                coro.close()
                raise
            return await coro
        finally:
            self._inflight.discard(task)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(self._on_loop(coro))

    async def _arun(self, coro: Coroutine[Any, Any, T], shield: bool = False) -> T:
        future = asyncio.wrap_future(self._loop.submit(self._on_loop(coro)))
        # shield: a caller that stops waiting (its HTTP request cancelled) leaves the step running to
        # its end, within its own deadline, so no side effect loses its records half-way.
        return await (asyncio.shield(future) if shield else future)

    def close(self, wait_s: float | None = None) -> None:
        """Let the steps in flight finish (at most ``wait_s``; by default ``dispatch_timeout_s``, which
        bounds each of them), then cut what is left: a cut step meters its provider calls and writes
        its trace record. Then the connection pool and the trace sink are closed."""
        if self._http is not None:
            self._loop.run(self._drain(self.config.dispatch_timeout_s + 1.0 if wait_s is None else wait_s))
            self._loop.run(self._http.aclose())
            self._http = None
        self._loop.stop()
        self.sink.close()

    async def _drain(self, wait_s: float) -> None:
        tasks = set(self._inflight)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=wait_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5.0)  # a handler that swallows the cancellation is left behind

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
        return await self._arun(self._dispatch(session_id, skill, text, params), shield=True)

    def approve(self, approval_id: str) -> DispatchResult:
        return self._run(self._approve(approval_id))

    async def aapprove(self, approval_id: str) -> DispatchResult:
        return await self._arun(self._approve(approval_id), shield=True)

    def reject(self, approval_id: str) -> PendingAction:
        action = self.approvals.take(approval_id)
        self._trace_skill(_Run(action.session_id, action.skill, approval_id=approval_id), "rejected")
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

    def check_deadlines(self) -> None:
        """Refuse (``ConfigError``) a model-routing file whose ``dispatch_timeout_s`` cannot hold what one dispatch or
        approval of some skill may do: its handler's ``handler_timeout_s`` and a share of time for each model."""
        limit, handler = self.config.dispatch_timeout_s, self.handler_timeout_s
        for skill in self.skills:
            extract, formatting = self.caller.chain(skill.name, "extraction"), self._formatting(skill)
            if skill.writes:  # the dispatch extracts; the approval runs the handler, then formats
                check_deadline(limit, 0.0, extract, f"skill {skill.name!r} (dispatch)")
                check_deadline(limit, handler, formatting, f"skill {skill.name!r} (approval)")
            else:
                check_deadline(limit, handler, [*extract, *formatting], f"skill {skill.name!r} (dispatch)")

    def skill_for_intent(self, intent: str | None) -> str | None:
        if intent is None:
            return None
        name = self.config.skill_for(intent)
        return name if name in self.skills else None

    # -- the steps ---------------------------------------------------------------------------------
    def _formatting(self, skill: Skill) -> list[ModelRef]:
        return self.caller.chain(skill.name, "formatting") if skill.format_reply else []

    def _deadline(self, skill: Skill, handler: bool) -> Deadline:
        """This step's budget; ``handler``: the handler runs in it (then so does formatting)."""
        if not handler:
            return Deadline(self.config.dispatch_timeout_s)
        return Deadline(self.config.dispatch_timeout_s, self.handler_timeout_s, self._formatting(skill))

    async def _dispatch(self, session_id: str, name: str, text: str | None,
                        params: dict[str, Any] | None) -> DispatchResult:
        skill = self.skills.get(name)
        if text is not None and len(text) > self.config.max_text_chars:
            raise InputError(f"text: {len(text)} characters is over max_text_chars={self.config.max_text_chars}")
        if skill.writes:
            self.approvals.check(session_id)  # a session at its cap: refused before a step or a model is paid for
        self.ledger.step(session_id)
        run = _Run(session_id, skill.name, self._deadline(skill, handler=not skill.writes))
        try:
            if params is not None:
                model = extraction.validate_params(skill, params)
            elif text is not None and text.strip():
                model = await self._extract(skill, session_id, text, run.calls, deadline=run.deadline)
            else:
                raise InvalidParameters(skill.name, "nothing to act on", ["give `text` or `params`"])
            if skill.writes:
                action = self.approvals.create(session_id, skill.name, model.model_dump(mode="json"), text)
                run.approval_id = action.approval_id
                self._trace_skill(run, "pending_approval")
                return self._result("pending_approval", session_id, skill, model, run.calls,
                                    approval_id=action.approval_id)
            return await self._run_skill(skill, model, SkillContext(session_id, skill.name, text), run)
        except RouterError as exc:
            self._trace_skill(run, type(exc).__name__, error=str(exc))
            raise
        except asyncio.CancelledError:
            self._trace_skill(run, "timeout", error="cut before it finished: the dispatcher was closed")
            raise

    async def _approve(self, approval_id: str) -> DispatchResult:
        action = self.approvals.claim(approval_id)  # running: a second approve is refused until it is finished
        run = _Run(action.session_id, action.skill, approval_id=approval_id)
        try:
            skill = self.skills.get(action.skill)
            run.deadline = self._deadline(skill, handler=True)
            model = extraction.validate_params(skill, action.params)
            ctx = SkillContext(action.session_id, skill.name, action.text, approval_id)
            return await self._run_skill(skill, model, ctx, run)
        except RouterError as exc:
            self._trace_skill(run, type(exc).__name__, error=str(exc))
            raise
        except asyncio.CancelledError:
            self._trace_skill(run, "timeout", error="cut before it finished: the dispatcher was closed")
            raise
        finally:
            # Consumed once its handler was entered, whatever came of it (it may have acted); an
            # approval whose handler never started is pending again.
            self.approvals.finish(approval_id, consumed=run.handler is not None)

    async def _extract(self, skill: Skill, session_id: str, text: str, calls: list[CallSummary],
                       chain: list[ModelRef] | None = None, deadline: Deadline | None = None) -> BaseModel:
        request = extraction.first_request(skill, text)
        call = await self.caller.call(stage="extraction", skill=skill.name, session=session_id, request=request,
                                      chain=chain, deadline=deadline)
        calls.append(CallSummary.of("extraction", call))
        model, errors = extraction.parse_answer(skill, call.completion.text)
        if model is not None:
            return model
        retry = extraction.reask_request(request, call.completion.text, errors)
        call = await self.caller.call(stage="extraction", skill=skill.name, session=session_id, request=retry,
                                      chain=chain, deadline=deadline)
        calls.append(CallSummary.of("extraction", call))
        model, errors = extraction.parse_answer(skill, call.completion.text)
        if model is None:
            raise InvalidParameters(skill.name, "the extracted parameters fail the schema after one re-ask", errors)
        return model

    async def _run_skill(self, skill: Skill, params: BaseModel, ctx: SkillContext, run: _Run) -> DispatchResult:
        run.handler = "cancelled"  # stays so if the step is cut inside the handler
        try:
            async with asyncio.timeout(self.handler_timeout_s):
                raw = await skill.handler(params, ctx)
        except TimeoutError:
            run.handler = "timeout"
            raise SkillFailed(skill.name, f"handler gave no result within {self.handler_timeout_s:g}s "
                              "(handler_timeout_s)", "handler_timeout") from None
        except RouterError:
            run.handler = "error"
            raise
        except Exception as exc:
            run.handler = "error"
            raise SkillFailed(skill.name, f"handler raised {type(exc).__name__}: {exc}", "handler_error") from exc
        run.handler = "ok"
        if run.deadline is not None:
            run.deadline.handler_done()
        result = self._check_result(skill, raw)
        reply = await self._format(skill, ctx, result, run) if skill.format_reply else None
        self._trace_skill(run, "ok")
        return self._result("ok", ctx.session_id, skill, params, run.calls, result=result, reply=reply)

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

    async def _format(self, skill: Skill, ctx: SkillContext, result: Any, run: _Run) -> str:
        request = ChatRequest(
            system="Write a short, plain reply to the user from the result of the skill that served them. "
                   "State only what the result says.",
            messages=(Message("user", f"User asked: {ctx.text or ''}\nSkill: {skill.name}\n"
                                      f"Result: {json.dumps(result, sort_keys=True)}"),))
        call = await self.caller.call(stage="formatting", skill=skill.name, session=ctx.session_id, request=request,
                                      deadline=run.deadline)
        run.calls.append(CallSummary.of("formatting", call))
        return call.completion.text

    # -- records -----------------------------------------------------------------------------------
    def _result(self, status: Any, session_id: str, skill: Skill, params: BaseModel, calls: list[CallSummary],
                **extra: Any) -> DispatchResult:
        return DispatchResult(
            status=status, session_id=session_id, skill=skill.name, params=params.model_dump(mode="json"),
            calls=calls, tokens=sum(c.tokens for c in calls),
            cost_usd=float(sum((Decimal(str(c.cost_usd)) for c in calls), Decimal(0))),
            fallback_taken=any(c.fallback_from for c in calls), **extra)

    def _trace_skill(self, run: _Run, status: str, error: str | None = None) -> None:
        """The step's outcome; ``handler`` (once the handler was entered) says how the handler ended."""
        record: dict[str, Any] = {"ts": time.time(), "kind": "skill", "session": run.session_id, "skill": run.skill,
                                  "status": status, "calls": len(run.calls),
                                  "budget_left": self.ledger.left(run.session_id)}
        if run.approval_id:
            record["approval_id"] = run.approval_id
        if run.handler is not None:
            record["handler"] = run.handler
        if error:
            record["error"] = error
        self.sink.write(record)
