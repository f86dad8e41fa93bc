"""An MCP tool server (``router mcp``, over stdio): ``classify``, one tool per registered skill, and
``approve`` / ``reject`` for the skills that write. The official ``mcp`` SDK is the ``[mcp]`` extra; it is
imported only when a server is built or run, so importing this package needs nothing more."""

from router.mcp._server import McpOptions, build_server, open_tools, run, serve_stdio
from router.mcp._tools import RouterTools, ToolAnswer, ToolSpec

__all__ = ["McpOptions", "RouterTools", "ToolAnswer", "ToolSpec", "build_server", "open_tools", "run", "serve_stdio"]
