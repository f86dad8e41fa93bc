"""What ``router mcp`` offers, without the SDK: each tool's name, input schema and hints, and what a call does.

``classify`` answers the Decision. Each registered skill is a tool whose input schema is the skill's
parameter schema: the agent gives the parameters, so no extraction call is made, and the dispatcher
validates them strictly before the handler runs. A ``writes`` skill answers ``pending_approval`` with its
``approval_id`` and writes nothing; ``approve`` runs it once (``approved_by="mcp"``), ``reject`` drops it.
Both act only on this server's session, so an agent cannot settle another session's pending actions in a
shared (Redis) state. ``dispatch`` is the service's text-only ``/v1/dispatch``: classify, then extract.

Approval relies on the human, not on the agent that calls ``approve``: ``approve`` names the action in full
(``approval_id``, ``skill``, ``params``, refused unless they are the pending action's), so a client's
per-call confirmation dialog shows what will run; and when the client can ask its user (MCP elicitation),
``confirm`` asks "Run payments.transfer(amount=20.0, to_account='sam')?" and only an accept runs it.

A refused call (bad parameters, an unknown approval id, a budget) is an error answer whose text names
the field and the value; nothing a caller sends ends the server. ``router/mcp/_server.py`` puts these
tools on the official SDK's server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from router._decision import Decision
from router._router import Router
from router._strict import Strict, format_validation_error
from router.dispatch import Dispatcher, DispatchResult, Skill
from router.dispatch._extraction import params_schema, validate_params
from router.errors import ApprovalError, ConfigError, InputError, RouterError
from router.state import PendingAction

log = logging.getLogger("router.mcp")

# SEP-986: the tool names MCP clients accept.
_TOOL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
BUILTIN = ("classify", "dispatch", "approve", "reject")


class TextArgs(Strict):
    text: str = Field(min_length=1, description="the user's message")


class ApprovalArgs(Strict):
    approval_id: str = Field(min_length=1, max_length=256, description="the id a writes skill answered with")


class ApproveArgs(ApprovalArgs):
    skill: str = Field(min_length=1, max_length=128, description="the pending action's skill")
    params: dict[str, Any] = Field(description="the pending action's parameters, as its tool answered them")


# Asks the client's user to confirm an action: "accept", "decline" or "cancel". None: the client cannot ask.
Confirm = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as listed; the hints are MCP's ToolAnnotations (hints to the client, not guarantees)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    title: str | None = None


@dataclass(frozen=True)
class ToolAnswer:
    """A call's outcome: ``data`` is the structured content, ``text`` the short line for the model."""

    data: dict[str, Any]
    text: str
    error: bool = False


@dataclass
class RouterTools:
    """The tools over one Router (``classify``) and, with skills, one Dispatcher; ``session`` meters them."""

    router: Router
    session: str
    dispatcher: Dispatcher | None = None
    approve_tool: bool = True
    _calls: dict[str, Callable[[dict[str, Any], Confirm | None], Awaitable[ToolAnswer]]] = field(init=False,
                                                                                                 repr=False)

    def __post_init__(self) -> None:
        self._calls = {"classify": self._classify}
        if self.dispatcher is None:
            return
        for skill in self.dispatcher.skills:
            if skill.name in BUILTIN or not _TOOL_NAME.fullmatch(skill.name):
                raise ConfigError(f"skills: skill {skill.name!r} cannot be an MCP tool name: use 1-128 of A-Z a-z "
                                  f"0-9 _ - . and none of {', '.join(BUILTIN)}")
            self._calls[skill.name] = self._skill_call(skill)
        self._calls["dispatch"] = self._dispatch
        if self.approve_tool:
            self._calls["approve"] = self._approve
            self._calls["reject"] = self._reject

    async def aclose(self) -> None:
        """Close the dispatcher (its steps in flight finish first, then its connections and trace) and the Router."""
        try:
            if self.dispatcher is not None:
                await self.dispatcher.aclose()
        finally:
            await self.router.aclose()

    # -- listing -----------------------------------------------------------------------------------
    def specs(self) -> list[ToolSpec]:
        specs = [ToolSpec("classify", "Classify a user's message into one of the router's intents (or out of "
                                      "scope): the Decision, with the skill it maps to, the tier that decided "
                                      "and the candidates.", _schema(TextArgs), read_only=True, idempotent=True)]
        if self.dispatcher is None:
            return specs
        for skill in self.dispatcher.skills:
            specs.append(ToolSpec(skill.name, _skill_description(skill, self.approve_tool), params_schema(skill),
                                  read_only=not skill.writes, destructive=skill.writes))
        specs.append(ToolSpec("dispatch", "Classify a user's message, extract the parameters of its skill with "
                                          "the configured model and run the skill (a writes skill waits for "
                                          "approval). The skill's own tool is cheaper when you know the "
                                          "parameters.", _schema(TextArgs), read_only=False))
        if self.approve_tool:
            specs.append(ToolSpec("approve", "Run a pending action of a writes skill, once: the approval_id, skill "
                                             "and params its tool answered with (all three must match). The user "
                                             "is asked to confirm when the client supports it; call it only "
                                             "after the user agreed.",
                                  _schema(ApproveArgs), read_only=False, destructive=True))
            specs.append(ToolSpec("reject", "Drop a pending action of a writes skill; it never runs.",
                                  _schema(ApprovalArgs), read_only=False, destructive=False, idempotent=True))
        return specs

    # -- calling -----------------------------------------------------------------------------------
    async def call(self, name: str, arguments: dict[str, Any] | None, confirm: Confirm | None = None) -> ToolAnswer:
        """Run one tool; every refusal is an error answer, never an exception (the server keeps serving).
        ``confirm``: how ``approve`` asks the client's user (None: the client cannot ask)."""
        run = self._calls.get(name)
        if run is None:
            return _error(f"tool {name!r} is not offered here; tools: {', '.join(self._calls)}", "UnknownTool")
        try:
            return await run(arguments or {}, confirm)
        except RouterError as exc:
            return _error(str(exc), type(exc).__name__)
        except Exception as exc:  # a bug must not end the session: logged (stderr), answered as an error
            log.exception("tool %r failed", name)
            return _error(f"tool {name!r} failed: {type(exc).__name__}: {exc}", "InternalError")

    async def _classify(self, arguments: dict[str, Any], confirm: Confirm | None) -> ToolAnswer:
        args = _parse(TextArgs, arguments, "classify")
        decision = await self.router.aclassify(args.text)
        return ToolAnswer(decision.to_dict(), _describe(decision))

    def _skill_call(self, skill: Skill) -> Callable[[dict[str, Any], Confirm | None], Awaitable[ToolAnswer]]:
        async def run(arguments: dict[str, Any], confirm: Confirm | None) -> ToolAnswer:
            assert self.dispatcher is not None
            return self._answer(await self.dispatcher.adispatch(self.session, skill.name, params=arguments))

        return run

    async def _dispatch(self, arguments: dict[str, Any], confirm: Confirm | None) -> ToolAnswer:
        assert self.dispatcher is not None
        args = _parse(TextArgs, arguments, "dispatch")
        decision = await self.router.aclassify(args.text)
        skill = None if decision.out_of_scope else decision.skill
        if skill is None or skill not in self.dispatcher.skills:
            note = ("out of scope" if decision.out_of_scope
                    else f"intent {decision.intent!r} has no registered skill" + (f" ({skill!r})" if skill else ""))
            result = DispatchResult(status="no_skill", session_id=self.session, skill=None, note=note)
        else:
            result = await self.dispatcher.adispatch(self.session, skill, text=args.text)
        answer = self._answer(result)
        answer.data["decision"] = decision.to_dict()
        return answer

    async def _approve(self, arguments: dict[str, Any], confirm: Confirm | None) -> ToolAnswer:
        assert self.dispatcher is not None
        args = _parse(ApproveArgs, arguments, "approve")
        action = await self._own(args.approval_id)
        self._same_action(action, args)
        if confirm is not None:
            answer = await confirm(f"Run {action.skill}({_shown_params(action.params)})?")
            if answer != "accept":
                what = "declined" if answer == "decline" else "did not confirm"
                return _error(f"the user {what} {action.skill} ({args.approval_id}): it did not run and is still "
                              "pending; `approve` asks again, `reject` drops it", "NotApproved")
        return self._answer(await self.dispatcher.aapprove(args.approval_id, approved_by="mcp"))

    def _same_action(self, action: PendingAction, args: ApproveArgs) -> None:
        """Refuse an approve whose skill or params are not the pending action's (what a confirmation shows)."""
        assert self.dispatcher is not None
        if args.skill != action.skill:
            raise ApprovalError(f"skill: {args.skill!r} is not the skill of approval {args.approval_id!r} "
                                f"({action.skill!r})")
        given = validate_params(self.dispatcher.skills.get(action.skill), args.params).model_dump(mode="json")
        if given != action.params:
            raise ApprovalError(f"params: {_shown_params(args.params)} are not the parameters of approval "
                                f"{args.approval_id!r} ({_shown_params(action.params)})")

    async def _reject(self, arguments: dict[str, Any], confirm: Confirm | None) -> ToolAnswer:
        assert self.dispatcher is not None
        args = _parse(ApprovalArgs, arguments, "reject")
        await self._own(args.approval_id)
        action = await self.dispatcher.areject(args.approval_id, approved_by="mcp")
        return ToolAnswer({"status": "rejected", "approval_id": args.approval_id, "skill": action.skill},
                          f"rejected: {action.skill} ({args.approval_id}) will not run")

    async def _own(self, approval_id: str) -> PendingAction:
        """The pending action of this server's session with this id; refused when there is none."""
        assert self.dispatcher is not None
        for action in await self.dispatcher.apending(self.session):
            if action.approval_id == approval_id:
                return action
        raise ApprovalError(f"approval_id: {approval_id!r} is not pending in this session (unknown, expired, "
                                "already approved or rejected); a writes skill's tool answers with a fresh one")

    def _answer(self, result: DispatchResult) -> ToolAnswer:
        data = result.model_dump(mode="json")
        if result.status == "pending_approval":
            how = (f"call `approve` with approval_id {result.approval_id!r}, skill {result.skill!r} and these params "
                   "once the user agrees (or `reject`)"
                   if self.approve_tool else
                   f"approval {result.approval_id!r} is settled outside this server (the HTTP service's approver)")
            return ToolAnswer(data, f"pending approval: {result.skill}({_params(result)}) has not run; {how}")
        if result.status == "no_skill":
            return ToolAnswer(data, f"no skill ran: {result.note}")
        return ToolAnswer(data, result.reply if result.reply is not None else f"{result.skill}: ok")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def _parse(model: type[Strict], arguments: dict[str, Any], tool: str) -> Any:
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, tool)) from None


def _skill_description(skill: Skill, approve_tool: bool) -> str:
    if not skill.writes:
        return skill.description
    how = "`approve` it" if approve_tool else "it is approved outside this server"
    return (f"{skill.description} Writes: the call returns status pending_approval and an approval_id, and "
            f"nothing happens until {how}.")


def _params(result: DispatchResult) -> str:
    return _shown_params(result.params or {})


def _shown_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _describe(decision: Decision) -> str:
    if decision.out_of_scope:
        return f"out of scope (confidence {decision.confidence:.2f}, tier {decision.tier})"
    head = f"intent {decision.intent}" + (f" (skill {decision.skill})" if decision.skill else "")
    tail = ", escalate: not sure" if decision.escalate else ""
    return f"{head}, confidence {decision.confidence:.2f}, tier {decision.tier}{tail}"


def _error(message: str, kind: str) -> ToolAnswer:
    return ToolAnswer({"error": kind, "message": message}, message, error=True)
