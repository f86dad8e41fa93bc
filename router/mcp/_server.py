"""``router mcp``: the tools of ``_tools.py`` on the official MCP SDK's server, over stdio.

The SDK's low-level ``Server`` is used rather than its decorator API because the skills' input schemas
come from a registry at run time, not from Python signatures. stdout is the protocol: the Router and the
Dispatcher load before the transport starts, with Python's stdout sent to stderr meanwhile, and while it
serves the SDK points file descriptor 1 at stderr, so a stray print cannot corrupt a message.

``approve`` asks the client's user to confirm (a form elicitation with one boolean) when the client declared
the elicitation capability; a client without it shows its own per-call confirmation of ``approve``, whose
arguments name the skill and the parameters. A client that approves every call on its own defeats both:
run it with ``--approve-tool off``.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

from router._strict import Strict
from router.errors import MissingDependency
from router.mcp._tools import Confirm, RouterTools, ToolSpec

if TYPE_CHECKING:
    from mcp.server import Server

INSTRUCTIONS = ("tiered-router: `classify` tells which intent (and skill) a user's message is. Each skill is a "
                "tool taking its parameters; a skill that writes answers pending_approval with an approval_id "
                "and does nothing until it is approved.")


class McpOptions(Strict):
    """What ``router mcp`` serves: the index (a name under ``index_dir`` or a folder), the skills
    (``module:registry``; None: ``classify`` only), the model-routing file (None: the shipped one), the
    session its budgets are metered on (None: a random one per process), and whether ``approve`` and
    ``reject`` are tools (off: approvals go through the HTTP service's approver key, on a shared state)."""

    index: str = "default"
    index_dir: str | None = None
    skills: str | None = None
    model_routing: str | None = None
    session: str | None = None
    approve_tool: bool = True

    model_config = ConfigDict(frozen=True)


def require_sdk() -> None:
    try:
        import mcp  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in {"mcp", "mcp_types"}:
            raise
        raise MissingDependency(f"router mcp needs the [mcp] extra ({exc.name} is not installed): "
                                "pip install 'tiered-router[mcp]'") from exc


def new_session() -> str:
    return f"mcp-{secrets.token_hex(8)}"


async def open_tools(options: McpOptions) -> RouterTools:
    """Load the Router as ``router classify`` does and the Dispatcher as ``router serve`` does, on this loop."""
    import anyio

    from router._router import Router
    from router.dispatch import Dispatcher, load_model_routing, load_registry

    router = await anyio.to_thread.run_sync(lambda: Router.load(options.index, index_dir=options.index_dir))
    dispatcher = None
    try:
        await router.aopen()
        await router.awarm()  # the encoder's first call is slow: paid now, not by the first tool call
        if options.skills:
            dispatcher = Dispatcher(load_model_routing(options.model_routing), load_registry(options.skills))
            await dispatcher.aopen()
        return RouterTools(router, options.session or new_session(), dispatcher, options.approve_tool)
    except BaseException:
        if dispatcher is not None:
            await dispatcher.aclose()
        await router.aclose()
        raise


def build_server(tools: RouterTools) -> Server[Any]:
    """The SDK's server answering ``tools/list`` and ``tools/call`` from ``tools``."""
    require_sdk()
    from mcp import types
    from mcp.server import Server

    from router import __version__

    def listed(spec: ToolSpec) -> types.Tool:
        hints = types.ToolAnnotations(title=spec.title, read_only_hint=spec.read_only,
                                      destructive_hint=None if spec.read_only else spec.destructive,
                                      idempotent_hint=spec.idempotent)  # open world: a skill may reach anything
        return types.Tool(name=spec.name, description=spec.description, input_schema=spec.input_schema,
                          annotations=hints)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[listed(spec) for spec in tools.specs()])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        answer = await tools.call(params.name, params.arguments, _confirm(ctx))
        return types.CallToolResult(content=[types.TextContent(text=answer.text)], structured_content=answer.data,
                                    is_error=answer.error)

    return Server("tiered-router", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool)


_CONFIRM_SCHEMA = {"type": "object", "properties": {"confirm": {
    "type": "boolean", "title": "Run it", "description": "Run this action now", "default": False}},
    "required": ["confirm"]}


def _confirm(ctx: Any) -> Confirm | None:
    """How ``approve`` asks this request's client's user; None when the client cannot be asked."""
    from mcp import types

    if not ctx.session.check_client_capability(types.ClientCapabilities(elicitation=types.ElicitationCapability())):
        return None

    async def confirm(message: str) -> str:
        result = await ctx.session.elicit_form(message, _CONFIRM_SCHEMA, related_request_id=ctx.request_id)
        if result.action == "accept" and not (result.content or {}).get("confirm"):
            return "decline"  # the form was sent with its box unticked
        return str(result.action)

    return confirm


async def serve_stdio(options: McpOptions) -> None:
    """Serve until the client closes stdin; then close the Dispatcher (steps in flight finish) and the Router."""
    require_sdk()
    from mcp.server.stdio import stdio_server

    with contextlib.redirect_stdout(sys.stderr):  # a print while loading must not reach the protocol
        tools = await open_tools(options)
    try:
        server = build_server(tools)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await tools.aclose()


def run(options: McpOptions) -> None:
    require_sdk()
    import anyio

    anyio.run(serve_stdio, options)
