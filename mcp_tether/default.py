"""Module-level helpers over one default pool, for executors that want plain functions.

Example::

    from mcp_tether import call_mcp_tool, get_tool_schema

    schema = await get_tool_schema("notion", "search")
    result = await call_mcp_tool("notion", "search", {"query": "roadmap"})

The default pool is built on the first call, with
:meth:`ServerPool.from_config` and its defaults (``$MCP_CONFIG_PATH`` or
``~/.claude.json``, ``$MCP_TETHER_TOKEN_DIR`` or ``~/.claude/mcp-tokens``,
``$CONNECTED_SERVERS``), and entered then, so eager servers connect on that
first call; every other server stays lazy. Concurrent first calls build one
pool.

* :func:`configure_default_pool` sets the ``from_config`` options before the
  pool is built (``interactive=False`` for a headless executor).
* :func:`use_pool` hands the helpers a pool the caller built and entered.
* :func:`close_default_pool` closes the pool the helpers built (sessions,
  timers, stdio processes); the next call builds a fresh one.

A pool belongs to the event loop it was entered on. A call from a new loop
after the old one closed (one ``asyncio.run`` per execution) builds a fresh
pool; the old one's sessions ended with its loop. A call from a second loop
while the first is still running is refused: give each loop its own
:class:`ServerPool`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from mcp import types as mcp_types

    from mcp_tether.pool import ServerPool

__all__ = [
    "call_mcp_tool",
    "close_default_pool",
    "configure_default_pool",
    "default_pool",
    "get_tool_schema",
    "list_mcp_tools",
    "use_pool",
]

_log = logging.getLogger("mcp_tether")


@attrs.define
class _Default:
    pool: ServerPool
    loop: asyncio.AbstractEventLoop
    #: Resolves once the pool is entered (eager servers attempted).
    entered: asyncio.Future[Any]
    #: Built here (closed by close_default_pool) rather than handed in by use_pool.
    owned: bool


_guard = threading.Lock()
_current: _Default | None = None
_options: dict[str, Any] = {}


def configure_default_pool(**options: Any) -> None:
    """Set the :meth:`ServerPool.from_config` options of the default pool (replacing earlier ones).

    Raises:
        TypeError: an option ``from_config`` does not take.
        RuntimeError: the default pool is already built (close it first).
    """
    from mcp_tether.pool import ServerPool

    inspect.signature(ServerPool.from_config).bind(**options)
    global _options
    with _guard:
        if _current is not None:
            raise RuntimeError(
                "the default pool is already built; await close_default_pool() before configuring it again"
            )
        _options = dict(options)


def use_pool(pool: ServerPool) -> None:
    """Make the helpers use ``pool`` (built and entered by the caller, who also closes it).

    Must be called on the event loop the pool runs on.

    Raises:
        RuntimeError: no running event loop, or the helpers' own pool is still open.
    """
    loop = asyncio.get_running_loop()
    global _current
    with _guard:
        if _current is not None and _current.owned and not _current.loop.is_closed():
            raise RuntimeError("the default pool is open; await close_default_pool() before use_pool()")
        entered: asyncio.Future[Any] = loop.create_future()
        entered.set_result(None)
        _current = _Default(pool=pool, loop=loop, entered=entered, owned=False)


async def default_pool() -> ServerPool:
    """The default pool, built from the configuration and entered on first use.

    Raises:
        ConfigError: the configuration file is missing, unreadable or malformed.
        RuntimeError: the default pool runs on another event loop that is still running.
    """
    loop = asyncio.get_running_loop()
    global _current
    with _guard:
        current = _current
        if current is not None and current.loop is not loop:
            if not current.loop.is_closed():
                raise RuntimeError(
                    "the default pool runs on another event loop that is still running; "
                    "build a ServerPool for this loop instead"
                )
            if current.owned:
                _log.warning(
                    "the default pool's event loop closed without close_default_pool(); building a new pool"
                )
            current = _current = None
        if current is None:
            from mcp_tether.pool import ServerPool

            pool = ServerPool.from_config(**_options)
            current = _current = _Default(pool=pool, loop=loop, entered=loop.create_task(pool.__aenter__()), owned=True)
    await asyncio.shield(current.entered)
    return current.pool


async def close_default_pool() -> None:
    """Close the default pool if the helpers built it (a pool given to :func:`use_pool` is only let go)."""
    global _current
    with _guard:
        current, _current = _current, None
    if current is None or not current.owned or current.loop.is_closed():
        return
    if current.loop is not asyncio.get_running_loop():
        raise RuntimeError("close the default pool on the event loop it runs on")
    await asyncio.gather(current.entered, return_exceptions=True)
    await current.pool.aclose()


async def call_mcp_tool(
    server: str, tool: str, arguments: dict[str, Any] | None = None
) -> mcp_types.CallToolResult:
    """Call a tool on a configured server through the default pool (see :meth:`ServerPool.call_tool`).

    Raises:
        ServerNotFound, AuthorizationRequired, ServerUnavailable, ToolCallError.
    """
    pool = await default_pool()
    return await pool.call_tool(server, tool, arguments)


async def get_tool_schema(server: str, tool: str) -> dict[str, Any]:
    """A tool's input schema, through the default pool (see :meth:`ServerPool.get_tool_schema`).

    Raises:
        ServerNotFound, AuthorizationRequired, ServerUnavailable, ToolCallError.
    """
    pool = await default_pool()
    return await pool.get_tool_schema(server, tool)


async def list_mcp_tools(server: str) -> list[mcp_types.Tool]:
    """Every tool a server offers, through the default pool (see :meth:`ServerPool.list_tools`).

    Raises:
        ServerNotFound, AuthorizationRequired, ServerUnavailable, ToolCallError.
    """
    pool = await default_pool()
    return await pool.list_tools(server)
