"""mcp-tether: lazy, self-refreshing connections from code executors to MCP servers.

The public names are imported lazily, so ``import mcp_tether`` (and the CLI's
read-only commands) do not pay for the MCP client stack until a pool is built.

Example::

    from mcp_tether import ServerPool

    async with ServerPool.from_config() as pool:
        result = await pool.call_tool("notion", "search", {"query": "q"})

or, over one default pool built from the configuration on first use::

    from mcp_tether import call_mcp_tool

    result = await call_mcp_tool("notion", "search", {"query": "q"})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_tether._lazy import lazy_getattr

__version__ = "0.1.0"

__all__ = [
    "AuthorizationRequired",
    "ServerNotFound",
    "ServerPool",
    "ServerUnavailable",
    "TetherError",
    "ToolCallError",
    "TransitionRecord",
    "call_mcp_tool",
    "close_default_pool",
    "configure_default_pool",
    "get_tool_schema",
    "list_mcp_tools",
    "use_pool",
]

_WHERE = {
    "ServerPool": "mcp_tether.pool",
    "TransitionRecord": "mcp_tether.connection",
    "AuthorizationRequired": "mcp_tether.errors",
    "ServerNotFound": "mcp_tether.errors",
    "ServerUnavailable": "mcp_tether.errors",
    "TetherError": "mcp_tether.errors",
    "ToolCallError": "mcp_tether.errors",
    **dict.fromkeys(
        (
            "call_mcp_tool",
            "close_default_pool",
            "configure_default_pool",
            "get_tool_schema",
            "list_mcp_tools",
            "use_pool",
        ),
        "mcp_tether.default",
    ),
}

if TYPE_CHECKING:
    from mcp_tether.connection import TransitionRecord
    from mcp_tether.default import (
        call_mcp_tool,
        close_default_pool,
        configure_default_pool,
        get_tool_schema,
        list_mcp_tools,
        use_pool,
    )
    from mcp_tether.errors import (
        AuthorizationRequired,
        ServerNotFound,
        ServerUnavailable,
        TetherError,
        ToolCallError,
    )
    from mcp_tether.pool import ServerPool


__getattr__ = lazy_getattr(__name__, _WHERE, globals())
