"""The skill dispatcher: a resolved intent's skill, its parameters, approval, handler and checks.

Async first: the ``a``-prefixed methods run on the caller's event loop (the HTTP service's), over
one shared ``httpx`` client per loop (``router.providers.HttpClients``). Each synchronous method is
the same coroutine run through one ``router._sync.SyncBridge`` (a loop on one thread, started on
first use); both share one state (budgets, approvals, breakers: ``router.state``, in this process
or in Redis) and one trace sink.

Time: each dispatch and each approval runs within ``dispatch_timeout_s``, its model calls cut to
fit around the handler's ``handler_timeout_s`` (``deadline.py``); a model-routing file where they cannot
fit is refused when the Dispatcher is made. A caller that stops waiting (an HTTP request cut
short) does not cancel the step: each step is a task the dispatcher keeps, which runs to its end
and leaves its records. ``aclose`` (``close``) lets steps in flight finish, then cuts what is
left; a cut step still meters its
provider calls and writes its trace record (``status: "timeout"``). An approval is consumed when
its handler has finished, whatever the outcome, which the skill record's ``handler`` field gives;
the skill record of an approval or a rejection names who decided (``approved_by``) and when
(``approved_at``, ISO 8601 UTC). A state that cannot be reached (``StateUnavailable``) refuses the
step before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from router._sync import Lifecycle, SyncBridge
from router.dispatch import _extraction as extraction
from router.dispatch._caller import CallResult, ModelCaller
from router.dispatch._config import ModelRef, ModelRoutingConfig, Stage, load_model_routing
from router.dispatch._deadline import check as check_deadline
from router.dispatch._records import Run, SkillRecords, decided
from router.dispatch._result import CallSummary, DispatchResult
from router.dispatch._skills import Skill, SkillContext, SkillRegistry
from router.dispatch._steps import Steps
from router.dispatch._trace import TraceSink, build_sink
from router.errors import ConfigError, InputError, InvalidParameters, RouterError, SkillFailed, StateUnavailable
from router.providers import ChatRequest, Deadline, HttpClients, Message, Provider, build_provider
from router.state import PendingAction, SessionTotals, State, build_state

log = logging.getLogger("router.dispatch")
T = TypeVar("T")


class Dispatcher(Lifecycle):
    def __init__(
        self,
        config: ModelRoutingConfig,
        skills: SkillRegistry,
        *,
        sink: TraceSink | None = None,
        providers: Mapping[str, Provider] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        drill_stages: frozenset[str] = frozenset(),
        handler_timeout_s: float | None = None,
        state: State | None = None,
    ) -> None:
        """``handler_timeout_s``: None takes the model-routing file's. ``providers`` replaces the ones the
        model-routing file would build (tests, custom adapters). ``state``: where budgets, approvals and
        breakers live; by default built from the model-routing file's ``state:`` (memory unless it names
        a Redis URL), its limits the file's (``config.state_limits()``), on the ``monotonic`` clock in
        memory. A given state must enforce the same limits. ``aclose`` closes it."""
        self.config = config
        self.skills = skills
        self.handler_timeout_s = config.handler_timeout_s if handler_timeout_s is None else handler_timeout_s
        limits = config.state_limits()
        if state is not None and state.limits != limits:
            raise ConfigError("the state given to the Dispatcher enforces other limits than its model-routing "
                              "file: build it with build_state(config.state, config.state_limits())")
        self.state = state if state is not None else build_state(config.state, limits, clock=monotonic)
        self.sink = sink if sink is not None else build_sink(config.trace)
        self._records = SkillRecords(self.sink, self.state)
        self._steps = Steps()  # every step running, on whichever loop, for aclose()
        self._clock = clock
        self._closed = False
        self.http = HttpClients()
        self._bridge = SyncBridge()
        if providers is None:
            providers = {name: build_provider(name, pc, self.http) for name, pc in config.providers.items()}
        self.providers = dict(providers)
        self.caller = ModelCaller(config, self.providers, self.state, self.sink, sleep=sleep,
                                  drill_stages=drill_stages)
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
    async def aclose(self, wait_s: float | None = None) -> None:
        """Let the steps in flight finish (at most ``wait_s``; by default ``dispatch_timeout_s``, which
        bounds each of them), then cut what is left, on whichever loop it runs: a cut step meters its
        provider calls and writes its trace record. Then this loop's connections, the providers, the
        state (a Redis state flushes what it owes first) and the trace sink are closed. Call it on the
        loop that made the calls (the service's lifespan)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._steps.drain(self.config.dispatch_timeout_s + 1.0 if wait_s is None else wait_s)
            for provider in self.providers.values():
                await provider.aclose()
            await self.http.aclose()
            await self.state.aclose()
        finally:
            self.sink.close()

    def close(self, wait_s: float | None = None) -> None:
        """``aclose`` for synchronous callers: on the bridge's loop when the sync methods ran there,
        else on a loop of its own. Called from a coroutine it only closes the sink and warns: await
        ``aclose`` there instead, which drains the steps and closes that loop's connections."""
        if self._closed:
            return
        if self._bridge.running:
            self._bridge.close(last=lambda: self.aclose(wait_s))
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.aclose(wait_s))
        else:
            log.warning("Dispatcher.close() called on a running event loop: await aclose() there instead")
            self._closed = True
            self.sink.close()

    async def aopen(self) -> None:
        """Open the pooled connections on the running loop now rather than on the first call (the HTTP
        service does it in its lifespan); ``aclose`` closes them, and so does the loop's own shutdown."""
        await self.http.aopen()

    # -- public API: async on the caller's loop, and the same through the sync bridge ---------------
    async def adispatch(self, session_id: str, skill: str, text: str | None = None,
                        params: dict[str, Any] | None = None) -> DispatchResult:
        return await self._steps.run(self._dispatch(session_id, skill, text, params))

    def dispatch(self, session_id: str, skill: str, text: str | None = None,
                 params: dict[str, Any] | None = None) -> DispatchResult:
        return self._bridge.call(self.adispatch, session_id, skill, text, params)

    async def aapprove(self, approval_id: str, approved_by: str = "library") -> DispatchResult:
        """Run a pending action's handler, once; ``approved_by`` (who approved) goes to its trace record."""
        return await self._steps.run(self._approve(approval_id, *decided(approved_by)))

    def approve(self, approval_id: str, approved_by: str = "library") -> DispatchResult:
        return self._bridge.call(self.aapprove, approval_id, approved_by)

    async def areject(self, approval_id: str, approved_by: str = "library") -> PendingAction:
        """Drop a pending action; its handler never runs. ``approved_by`` (who rejected) goes to the trace."""
        by, at = decided(approved_by)
        action = await self.state.approvals.take(approval_id)
        await self._records.write(Run(action.session_id, action.skill, approval_id=approval_id, approved_by=by,
                                     approved_at=at), "rejected")
        return action

    def reject(self, approval_id: str, approved_by: str = "library") -> PendingAction:
        return self._bridge.call(self.areject, approval_id, approved_by)

    async def acomplete(self, stage: Stage, skill: str, session_id: str, request: ChatRequest) -> CallResult:
        """One model call for any stage (e.g. diagnostic), with the same chain, retries and budgets."""
        return await self._steps.run(self.caller.call(stage=stage, skill=skill, session=session_id, request=request),
                                shield=False)

    def complete(self, stage: Stage, skill: str, session_id: str, request: ChatRequest) -> CallResult:
        return self._bridge.call(self.acomplete, stage, skill, session_id, request)

    async def aextract(self, session_id: str, skill: str, text: str,
                       chain: list[ModelRef] | None = None) -> tuple[BaseModel, list[CallSummary]]:
        """The extraction stage alone (no handler): the parameters and the calls made; ``chain`` pins models."""
        calls: list[CallSummary] = []
        step = self._extract(self.skills.get(skill), session_id, text, calls, chain)
        model = await self._steps.run(step, shield=False)
        return model, calls

    def extract(self, session_id: str, skill: str, text: str,
                chain: list[ModelRef] | None = None) -> tuple[BaseModel, list[CallSummary]]:
        return self._bridge.call(self.aextract, session_id, skill, text, chain)

    async def asession_totals(self, session_id: str) -> SessionTotals:
        return await self.state.budgets.totals(session_id)

    def session_totals(self, session_id: str) -> SessionTotals:
        return self._bridge.call(self.asession_totals, session_id)

    async def apending(self, session_id: str | None = None) -> list[PendingAction]:
        """Pending approvals, oldest first: of one session, or of all."""
        return await self.state.approvals.pending(session_id)

    def pending(self, session_id: str | None = None) -> list[PendingAction]:
        return self._bridge.call(self.apending, session_id)

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

    # -- the steps ---------------------------------------------------------------------------------
    def _formatting(self, skill: Skill) -> list[ModelRef]:
        return self.caller.chain(skill.name, "formatting") if skill.format_reply else []

    def _deadline(self, skill: Skill, handler: bool) -> Deadline:
        """This step's budget; ``handler``: the handler runs in it (then so does formatting)."""
        if not handler:
            return Deadline(self.config.dispatch_timeout_s)
        return Deadline(self.config.dispatch_timeout_s, self.handler_timeout_s,
                        [r.target for r in self._formatting(skill)])

    async def _dispatch(self, session_id: str, name: str, text: str | None,
                        params: dict[str, Any] | None) -> DispatchResult:
        skill = self.skills.get(name)
        if text is not None and len(text) > self.config.max_text_chars:
            raise InputError(f"text: {len(text)} characters is over max_text_chars={self.config.max_text_chars}")
        if skill.writes:  # a session at its cap: refused before a step or a model is paid for
            await self.state.approvals.check(session_id)
        await self.state.budgets.step(session_id)
        run = Run(session_id, skill.name, self._deadline(skill, handler=not skill.writes))
        async with self._records.traced(run):
            if params is not None:
                model = extraction.validate_params(skill, params)
            elif text is not None and text.strip():
                model = await self._extract(skill, session_id, text, run.calls, deadline=run.deadline)
            else:
                raise InvalidParameters(skill.name, "nothing to act on", ["give `text` or `params`"])
            if skill.writes:
                action = await self.state.approvals.create(session_id, skill.name, model.model_dump(mode="json"),
                                                           text)
                run.approval_id = action.approval_id
                await self._records.write(run, "pending_approval")
                return self._result("pending_approval", session_id, skill, model, run.calls,
                                    approval_id=action.approval_id)
            return await self._run_skill(skill, model, SkillContext(session_id, skill.name, text), run)

    async def _approve(self, approval_id: str, approved_by: str, approved_at: str) -> DispatchResult:
        # Running: a second approve, on any process sharing the state, is refused until it is finished.
        action = await self.state.approvals.claim(approval_id)
        run = Run(action.session_id, action.skill, approval_id=approval_id, approved_by=approved_by,
                   approved_at=approved_at)
        try:
            async with self._records.traced(run):
                skill = self.skills.get(action.skill)
                run.deadline = self._deadline(skill, handler=True)
                model = extraction.validate_params(skill, action.params)
                ctx = SkillContext(action.session_id, skill.name, action.text, approval_id)
                return await self._run_skill(skill, model, ctx, run)
        finally:
            # Consumed once its handler was entered, whatever came of it (it may have acted); an
            # approval whose handler never started is pending again.
            try:
                await self.state.approvals.finish(approval_id, consumed=run.handler is not None)
            except StateUnavailable as exc:  # the step's own outcome stands; the state lets it go after hold_s
                log.error("approval %s: its end (consumed=%s) could not be recorded: %s", approval_id,
                          run.handler is not None, exc.detail)

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

    async def _run_skill(self, skill: Skill, params: BaseModel, ctx: SkillContext, run: Run) -> DispatchResult:
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
        await self._records.write(run, "ok")
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

    async def _format(self, skill: Skill, ctx: SkillContext, result: Any, run: Run) -> str:
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
