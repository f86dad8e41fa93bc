"""One ``router mcp`` server per module, launched by the ``mcp`` SDK's own stdio client.

The client lives on an event loop in a thread of its own (an anyio blocking portal), so the SDK's task
groups enter and exit in one task while the tests stay synchronous. Model calls (the alarm skill's
formatting, the dispatch tool's extraction) reach loopback fakes started here, over 127.0.0.1.

``mcp_server``'s client declares no elicitation (the server cannot ask its user); ``asking_server``'s does,
and answers each elicitation with the next of ``answers`` (recording the question in ``asked``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.session import ElicitationFnT
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from router.testing import FakeAnthropic, FakeOpenAI
from tests.mcp.skills import LEDGER_ENV

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"OPENAI_API_KEY": "sk-test-mcp-openai", "ANTHROPIC_API_KEY": "sk-ant-test-mcp"}


@dataclass
class McpServer:
    portal: BlockingPortal
    session: ClientSession
    ledger: Path
    trace: Path
    stderr: Path
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    answers: list[ElicitResult] = field(default_factory=list)
    asked: list[ElicitRequestParams] = field(default_factory=list)

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        result = self.portal.call(self.session.call_tool, tool, arguments)
        assert isinstance(result, CallToolResult)
        return result


def routing_file(folder: Path, openai: FakeOpenAI, anthropic: FakeAnthropic) -> Path:
    model = {"timeout_s": 5, "max_tokens": 256}
    data = {
        "providers": {"openai": {"kind": "openai", "base_url": openai.url, "api_key_env": "OPENAI_API_KEY"},
                      "anthropic": {"kind": "anthropic", "base_url": anthropic.url,
                                    "api_key_env": "ANTHROPIC_API_KEY"}},
        "defaults": {"extraction": {"provider": "openai", "model": "gpt-5.4-nano", **model},
                     "formatting": {"provider": "anthropic", "model": "claude-haiku-4-5", **model}},
        "fallbacks": {"extraction": [], "formatting": []},
        "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
        "trace": {"sink": "jsonl", "path": str(folder / "trace.jsonl")},
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@asynccontextmanager
async def connected(params: StdioServerParameters, errlog: Any,
                    elicit: ElicitationFnT | None = None) -> AsyncIterator[ClientSession]:
    async with stdio_client(params, errlog=errlog) as (read, write), \
            ClientSession(read, write, elicitation_callback=elicit) as session:
        await session.initialize()
        yield session


@pytest.fixture(scope="module")
def mcp_server(mini_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    yield from _serve(mini_index, tmp_path_factory, asking=False)


@pytest.fixture(scope="module")
def asking_server(mini_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    yield from _serve(mini_index, tmp_path_factory, asking=True)


def _serve(mini_index: Path, tmp_path_factory: pytest.TempPathFactory, asking: bool) -> Iterator[McpServer]:
    folder = tmp_path_factory.mktemp("mcp")
    answered: list[McpServer] = []  # the server, once made: the callback answers from its queue

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        server = answered[0]
        server.asked.append(params)
        return server.answers.pop(0)

    openai, anthropic = FakeOpenAI(api_key=KEYS["OPENAI_API_KEY"]), FakeAnthropic(api_key=KEYS["ANTHROPIC_API_KEY"])
    ledger, stderr = folder / "ledger.jsonl", folder / "server.stderr"
    with openai, anthropic:
        args = ["-m", "router", "mcp", "--index", str(mini_index), "--skills", "tests.mcp.skills:registry",
                "--model-routing", str(routing_file(folder, openai, anthropic)), "--session", "mcp-test"]
        env = {**os.environ, **KEYS, LEDGER_ENV: str(ledger)}
        params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=ROOT)
        with stderr.open("w") as errlog, start_blocking_portal() as portal:
            try:
                with portal.wrap_async_context_manager(connected(params, errlog, elicit if asking else None)) \
                        as session:
                    answered.append(McpServer(portal, session, ledger, folder / "trace.jsonl", stderr, openai,
                                              anthropic))
                    yield answered[0]
            except BaseException:
                print(stderr.read_text(), file=sys.stderr)  # the server's own log, on a failure
                raise
