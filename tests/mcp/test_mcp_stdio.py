"""`router mcp` over stdio, through the `mcp` SDK's own client: the tools it lists, classify, a read
skill, a writes skill that waits for approval (its handler observed through a ledger file), approve and
reject, and refusals that name the field and the value without ending the server. Approval: a client
without elicitation approves by calling `approve` with the action's skill and params (what its per-call
confirmation shows); a client with elicitation is asked, and only its user's accept runs the action."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ElicitRequestFormParams, ElicitResult
from pydantic import BaseModel

from router import Router
from router.dispatch import Dispatcher, SkillContext, SkillRegistry, model_routing_from_dict, read_jsonl
from router.errors import ConfigError, MissingDependency
from router.mcp import RouterTools, ToolAnswer, ToolSpec
from router.mcp._server import require_sdk
from tests.mcp import skills
from tests.mcp.conftest import ROOT, McpServer
from tests.mcp.skills import LEDGER_ENV, ledger_lines


def structured(result: Any) -> dict[str, Any]:
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def text(result: Any) -> str:
    return " ".join(block.text for block in result.content)


def balance(server: McpServer) -> float:
    result = server.call("banking.balance", {})
    assert not result.is_error, text(result)
    return float(structured(result)["result"]["balance"])


def test_lists_classify_the_skills_with_their_schemas_and_the_approval_tools(mcp_server: McpServer) -> None:
    tools = {tool.name: tool for tool in mcp_server.portal.call(mcp_server.session.list_tools).tools}
    assert set(tools) == {"classify", "banking.balance", "payments.transfer", "alarm", "dispatch", "approve",
                          "reject"}

    transfer = tools["payments.transfer"]
    assert transfer.description is not None and transfer.description.startswith("Send money to another account.")
    assert "pending_approval" in transfer.description
    schema = transfer.input_schema
    assert schema["type"] == "object" and schema["required"] == ["amount", "to_account"]
    assert schema["properties"]["amount"]["exclusiveMinimum"] == 0
    assert schema["additionalProperties"] is False  # strict params: an unknown key is refused, and says so here
    assert transfer.annotations is not None and transfer.annotations.destructive_hint is True
    assert transfer.annotations.read_only_hint is False

    assert tools["banking.balance"].description == "Read the balance of the user's account."
    assert tools["banking.balance"].input_schema["properties"]["account"]["enum"] == ["checking", "savings"]
    assert tools["banking.balance"].annotations is not None and tools["banking.balance"].annotations.read_only_hint
    assert tools["classify"].annotations is not None and tools["classify"].annotations.read_only_hint is True
    assert tools["classify"].input_schema["required"] == ["text"]
    assert tools["approve"].annotations is not None and tools["approve"].annotations.destructive_hint is True
    assert tools["approve"].input_schema["required"] == ["approval_id", "skill", "params"]
    # No skill claims a closed world: a handler may reach anything.
    assert all(tool.annotations is None or tool.annotations.open_world_hint is None for tool in tools.values())


def test_classify_answers_the_decision(mcp_server: McpServer) -> None:
    result = mcp_server.call("classify", {"text": "send 20 dollars to sam"})
    assert not result.is_error, text(result)
    decision = structured(result)
    assert decision["intent"] == "transfer" and decision["skill"] == "payments.transfer"
    assert decision["out_of_scope"] is False and decision["escalate"] is False and decision["tier"] == "rules"
    assert decision["slots"] == {"amount": "20", "recipient": "sam"}
    assert {"confidence", "candidates"} <= set(decision)
    assert text(result).startswith("intent transfer (skill payments.transfer)")


def test_classify_refuses_an_empty_text_and_the_server_keeps_serving(mcp_server: McpServer) -> None:
    result = mcp_server.call("classify", {"text": ""})
    assert result.is_error and "text" in text(result) and "''" in text(result)
    result = mcp_server.call("classify", {"query": "hello"})
    assert result.is_error and "unknown key 'query'" in text(result)
    assert not mcp_server.call("classify", {"text": "what's my savings balance at chase"}).is_error


def test_a_read_skill_runs_with_the_given_parameters(mcp_server: McpServer) -> None:
    result = mcp_server.call("banking.balance", {"account": "savings"})
    assert not result.is_error, text(result)
    answer = structured(result)
    assert answer["status"] == "ok" and answer["session_id"] == "mcp-test"
    assert answer["params"] == {"account": "savings"}
    assert answer["result"]["account"] == "savings" and answer["calls"] == []  # no extraction: the agent gave them


def test_a_skill_that_formats_calls_the_model_of_the_routing_file(mcp_server: McpServer) -> None:
    before = len(mcp_server.anthropic.requests)
    result = mcp_server.call("alarm", {"time": "6am"})
    assert not result.is_error, text(result)
    answer = structured(result)
    assert answer["result"] == {"set": True, "time": "6am"} and answer["reply"] == text(result) == "ok"
    assert [c["stage"] for c in answer["calls"]] == ["formatting"] and answer["calls"][0]["provider"] == "anthropic"
    assert len(mcp_server.anthropic.requests) == before + 1


def test_a_writes_skill_waits_for_approval_and_runs_once(mcp_server: McpServer) -> None:
    written, start = len(ledger_lines(mcp_server.ledger)), balance(mcp_server)
    result = mcp_server.call("payments.transfer", {"amount": 20, "to_account": "sam"})
    assert not result.is_error, text(result)
    pending = structured(result)
    assert pending["status"] == "pending_approval" and pending["params"] == {"amount": 20.0, "to_account": "sam"}
    approval_id = pending["approval_id"]
    assert approval_id and approval_id in text(result) and "has not run" in text(result)
    assert len(ledger_lines(mcp_server.ledger)) == written and balance(mcp_server) == start  # nothing written

    # This client cannot be asked (no elicitation): the call itself, naming skill and params, is the approval.
    approved = mcp_server.call("approve", _approval(pending))
    assert not approved.is_error, text(approved)
    assert structured(approved)["status"] == "ok" and structured(approved)["result"] == {"sent": 20.0, "to": "sam"}
    lines = ledger_lines(mcp_server.ledger)
    assert len(lines) == written + 1 and lines[-1] == {"amount": 20.0, "to": "sam", "approval_id": approval_id}
    assert balance(mcp_server) == start - 20

    again = mcp_server.call("approve", _approval(pending))
    assert again.is_error and approval_id in text(again) and "not pending" in text(again)
    assert len(ledger_lines(mcp_server.ledger)) == written + 1  # ran once
    records = [r for r in read_jsonl(mcp_server.trace) if r.get("approval_id") == approval_id]
    assert [r["status"] for r in records] == ["pending_approval", "ok"] and records[-1]["approved_by"] == "mcp"


def test_a_rejected_action_never_runs(mcp_server: McpServer) -> None:
    written = len(ledger_lines(mcp_server.ledger))
    pending = structured(mcp_server.call("payments.transfer", {"amount": 5, "to_account": "ana"}))
    approval_id = pending["approval_id"]
    rejected = mcp_server.call("reject", {"approval_id": approval_id})
    assert not rejected.is_error, text(rejected)
    assert structured(rejected) == {"status": "rejected", "approval_id": approval_id, "skill": "payments.transfer"}
    late = mcp_server.call("approve", _approval(pending))
    assert late.is_error and approval_id in text(late)
    assert len(ledger_lines(mcp_server.ledger)) == written


@pytest.mark.parametrize(("tool", "arguments", "named"), [
    ("payments.transfer", {"amount": -5, "to_account": "sam"}, ["amount", "-5"]),
    ("payments.transfer", {"amount": "20", "to_account": "sam"}, ["amount", "'20'"]),  # strict: no coercion
    ("payments.transfer", {"amount": 5, "to_account": "sam", "memo": "rent"}, ["memo", "'rent'"]),
    ("payments.transfer", {"amount": 5}, ["to_account", "Field required"]),
    ("banking.balance", {"account": "brokerage"}, ["account", "'brokerage'"]),
    ("approve", {"approval_id": "no-such-id", "skill": "payments.transfer", "params": {}},
     ["approval_id", "'no-such-id'"]),
    ("approve", {"approval_id": "no-such-id"}, ["skill", "Field required"]),
    ("reject", {"approval_id": "no-such-id"}, ["approval_id", "'no-such-id'"]),
    ("approve", {}, ["approval_id", "Field required"]),
    ("no_such_tool", {}, ["'no_such_tool'", "classify"]),
])
def test_a_refused_call_is_an_error_result_naming_the_field_and_the_value(
        mcp_server: McpServer, tool: str, arguments: dict[str, Any], named: list[str]) -> None:
    written = len(ledger_lines(mcp_server.ledger))
    result = mcp_server.call(tool, arguments)
    assert result.is_error
    for part in named:
        assert part in text(result), text(result)
    assert structured(result)["message"] == text(result)
    assert len(ledger_lines(mcp_server.ledger)) == written
    assert not mcp_server.call("classify", {"text": "hello"}).is_error  # the server still serves


def _approval(pending: dict[str, Any], **changed: Any) -> dict[str, Any]:
    """``approve``'s arguments for a pending answer: its id, skill and params (``changed`` replaces some)."""
    return {"approval_id": pending["approval_id"], "skill": pending["skill"], "params": pending["params"],
            **changed}


@pytest.mark.parametrize("changed", [{"params": {"amount": 2000, "to_account": "sam"}},
                                     {"params": {"amount": 20, "to_account": "mallory"}},
                                     {"skill": "banking.balance"}])
def test_an_approve_naming_other_parameters_or_skill_is_refused(mcp_server: McpServer,
                                                                changed: dict[str, Any]) -> None:
    written = len(ledger_lines(mcp_server.ledger))
    pending = structured(mcp_server.call("payments.transfer", {"amount": 20, "to_account": "sam"}))
    refused = mcp_server.call("approve", _approval(pending, **changed))
    assert refused.is_error and pending["approval_id"] in text(refused)
    assert ("params: " if "params" in changed else "skill: ") in text(refused)
    assert len(ledger_lines(mcp_server.ledger)) == written
    # Still pending: the matching approve runs it.
    assert structured(mcp_server.call("approve", _approval(pending)))["status"] == "ok"
    assert len(ledger_lines(mcp_server.ledger)) == written + 1


def test_an_asking_client_is_asked_and_its_accept_runs_the_action_once(asking_server: McpServer) -> None:
    server = asking_server
    written = len(ledger_lines(server.ledger))
    pending = structured(server.call("payments.transfer", {"amount": 20, "to_account": "sam"}))
    server.answers.append(ElicitResult(action="accept", content={"confirm": True}))
    approved = server.call("approve", _approval(pending))
    assert not approved.is_error, text(approved)
    [asked] = server.asked
    assert asked.message == "Run payments.transfer(amount=20.0, to_account='sam')?"
    assert isinstance(asked, ElicitRequestFormParams) and asked.requested_schema["properties"]["confirm"]["type"] == \
        "boolean"
    assert ledger_lines(server.ledger)[written:] == [{"amount": 20.0, "to": "sam",
                                                      "approval_id": pending["approval_id"]}]
    assert server.call("approve", _approval(pending)).is_error  # ran once; not asked again
    assert len(server.asked) == 1


@pytest.mark.parametrize("answer", [ElicitResult(action="decline"), ElicitResult(action="cancel"),
                                    ElicitResult(action="accept", content={"confirm": False})],
                         ids=["decline", "cancel", "unticked"])
def test_an_asking_client_that_does_not_confirm_runs_nothing_and_the_action_stays_pending(
        asking_server: McpServer, answer: ElicitResult) -> None:
    server = asking_server
    server.asked.clear()
    written = len(ledger_lines(server.ledger))
    pending = structured(server.call("payments.transfer", {"amount": 7, "to_account": "ana"}))
    server.answers.append(answer)
    refused = server.call("approve", _approval(pending))
    assert refused.is_error and "did not run and is still pending" in text(refused)
    assert structured(refused)["error"] == "NotApproved" and len(server.asked) == 1
    assert len(ledger_lines(server.ledger)) == written
    assert not server.call("reject", {"approval_id": pending["approval_id"]}).is_error  # it was still pending
    assert len(server.asked) == 1  # reject asks nothing: it runs nothing


def test_a_mismatched_approve_is_refused_before_the_user_is_asked(asking_server: McpServer) -> None:
    server = asking_server
    server.asked.clear()
    pending = structured(server.call("payments.transfer", {"amount": 9, "to_account": "bo"}))
    refused = server.call("approve", _approval(pending, params={"amount": 9000, "to_account": "bo"}))
    assert refused.is_error and "params: " in text(refused) and server.asked == []
    assert not server.call("reject", {"approval_id": pending["approval_id"]}).is_error


def test_dispatch_classifies_and_extracts(mcp_server: McpServer) -> None:
    query = "send 30 dollars to bo"
    mcp_server.openai.script(query, '{"amount": 30, "to_account": "bo"}')
    result = mcp_server.call("dispatch", {"text": query})
    assert not result.is_error, text(result)
    answer = structured(result)
    assert answer["status"] == "pending_approval" and answer["skill"] == "payments.transfer"
    assert answer["params"] == {"amount": 30.0, "to_account": "bo"} and answer["decision"]["intent"] == "transfer"
    assert [c["stage"] for c in answer["calls"]] == ["extraction"]
    assert not mcp_server.call("reject", {"approval_id": answer["approval_id"]}).is_error

    off = structured(mcp_server.call("dispatch", {"text": "what's the forecast like for pittsburgh"}))
    assert off["status"] == "no_skill" and off["note"] == "intent 'weather' has no registered skill ('info.weather')"


def test_a_bad_start_exits_with_the_error_on_stderr_and_nothing_on_stdout(tmp_path: Any) -> None:
    run = subprocess.run([sys.executable, "-m", "router", "mcp", "--index", str(tmp_path / "missing")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("router: error: ") and "missing" in run.stderr


def test_without_the_sdk_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(MissingDependency, match=r"pip install 'tiered-router\[mcp\]'"):
        require_sdk()


# -- the tools in this process (no server needed): the switches and the refusals at start ------------------
def _dispatcher(registry: SkillRegistry) -> Dispatcher:
    return Dispatcher(model_routing_from_dict({"trace": {"sink": "memory"}}), registry)


def test_approve_tool_off_leaves_approve_and_reject_out(mini_router: Router, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.jsonl"))

    async def scenario() -> tuple[list[ToolSpec], ToolAnswer, ToolAnswer]:
        tools = RouterTools(mini_router, "s1", _dispatcher(skills.registry()), approve_tool=False)
        try:
            pending = await tools.call("payments.transfer", {"amount": 5, "to_account": "ana"})
            return tools.specs(), pending, await tools.call("approve", {"approval_id": pending.data["approval_id"]})
        finally:
            assert tools.dispatcher is not None
            await tools.dispatcher.aclose()  # not tools.aclose(): the Router is the module's, shared

    specs, pending, approve = asyncio.run(scenario())
    assert {s.name for s in specs} == {"classify", "banking.balance", "payments.transfer", "alarm", "dispatch"}
    transfer = next(s for s in specs if s.name == "payments.transfer")
    assert "approved outside this server" in transfer.description
    assert pending.data["status"] == "pending_approval" and "outside this server" in pending.text
    assert approve.error and "'approve' is not offered here" in approve.text
    assert not (tmp_path / "ledger.jsonl").exists()


def test_without_skills_only_classify(mini_router: Router) -> None:
    assert [s.name for s in RouterTools(mini_router, "s1").specs()] == ["classify"]


@pytest.mark.parametrize("name", ["approve", "classify", "has space", "x" * 129])
def test_a_skill_whose_name_cannot_be_a_tool_is_refused_at_start(mini_router: Router, name: str) -> None:
    class Params(BaseModel):
        n: int = 1

    registry = SkillRegistry()

    @registry.skill(name, params=Params, description="clashes")
    async def handler(p: Params, ctx: SkillContext) -> dict[str, int]:
        return {"n": p.n}

    dispatcher = _dispatcher(registry)
    try:
        with pytest.raises(ConfigError, match="cannot be an MCP tool name"):
            RouterTools(mini_router, "s1", dispatcher)
    finally:
        dispatcher.close()
