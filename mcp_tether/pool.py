"""ServerPool: the executor-facing API.

Config in, tool results out. One :class:`~mcp_tether.connection.Connection` per
configured server, each driving its own state machine; lazy servers cost nothing
until a call needs them, eager ones (``CONNECTED_SERVERS``) connect in parallel
when the pool is entered. One failing server never affects the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mcp_tether.adapters.clock import Clock, SystemClock
from mcp_tether.adapters.config import PoolConfig, ServerConfig, load_config
from mcp_tether.adapters.token_store import TokenLogError, TokenStore
from mcp_tether.connection import Connection, SharedTransport, TransitionRecord, describe
from mcp_tether.errors import ServerNotFound, ServerUnavailable, TetherError, ToolCallError
from mcp_tether.statemachine.tokenlog import LoggedOut
from mcp_tether.statemachine.tokens import DEFAULT_REFRESH_BUFFER

if TYPE_CHECKING:  # loaded with the first session, not when the pool is built
    from mcp import types as mcp_types

    from mcp_tether.elicitation import ElicitationHandler

__all__ = ["ServerPool"]

_log = logging.getLogger("mcp_tether")


class ServerPool:
    """Connections to every configured MCP server, used as an async context manager.

    Example::

        pool = ServerPool.from_config()
        async with pool:
            result = await pool.call_tool("notion", "search", {"query": "q"})

    Args:
        config: the parsed configuration.
        store: the token directory.
        interactive: False raises :class:`AuthorizationRequired` instead of opening a browser.
        refresh_buffer: seconds before expiry that tokens are refreshed.
        clock: the wall clock (tests and the demo pass one they can move).
        open_url: opens a validated authorization URL (default: the ``webbrowser`` module).
        authorization_timeout: seconds a person has to complete a browser authorization.
        on_transition: told about every state-machine step, for live timelines.
        on_url: told each authorization URL before it is opened.
        elicitation: answers servers' ``elicitation/create`` requests (e.g.
            :func:`mcp_tether.elicitation.accept_defaults`); None leaves the
            capability unadvertised.
    """

    def __init__(
        self,
        config: PoolConfig,
        store: TokenStore,
        *,
        interactive: bool = True,
        refresh_buffer: float = DEFAULT_REFRESH_BUFFER,
        clock: Clock | None = None,
        open_url: Callable[[str], bool] | None = None,
        authorization_timeout: float = 300.0,
        on_transition: Callable[[TransitionRecord], None] | None = None,
        on_url: Callable[[str], None] | None = None,
        elicitation: ElicitationHandler | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.interactive = interactive
        self._clock = clock or SystemClock()
        self._transport = SharedTransport()
        self._refresh_buffer = refresh_buffer
        self._open_url = open_url
        self._authorization_timeout = authorization_timeout
        self._on_transition = on_transition
        self._on_url = on_url
        self._elicitation = elicitation
        self._connections = {
            name: self._new_connection(server, interactive=interactive) for name, server in config.servers.items()
        }

    def _new_connection(self, server: ServerConfig, *, interactive: bool) -> Connection:
        return Connection(
            server,
            log=self.store.log(server.name),
            transport=self._transport,
            clock=self._clock,
            interactive=interactive,
            refresh_buffer=self._refresh_buffer,
            open_url=self._open_url,
            authorization_timeout=self._authorization_timeout,
            on_transition=self._on_transition,
            on_url=self._on_url,
            elicitation=self._elicitation,
        )

    @classmethod
    def from_config(
        cls,
        config_path: str | Path | None = None,
        token_dir: str | Path | None = None,
        connected_servers: Iterable[str] | str | None = None,
        interactive: bool = True,
        refresh_buffer: float = DEFAULT_REFRESH_BUFFER,
        *,
        clock: Clock | None = None,
        open_url: Callable[[str], bool] | None = None,
        authorization_timeout: float = 300.0,
        on_transition: Callable[[TransitionRecord], None] | None = None,
        on_url: Callable[[str], None] | None = None,
        elicitation: ElicitationHandler | None = None,
    ) -> ServerPool:
        """Build a pool from ``~/.claude.json`` (or the given file).

        Args:
            config_path: the configuration file; default ``$MCP_CONFIG_PATH``, else ``~/.claude.json``.
            token_dir: the token directory; default ``$MCP_TETHER_TOKEN_DIR``, else ``~/.claude/mcp-tokens``.
            connected_servers: servers to connect on entry; default ``$CONNECTED_SERVERS`` (comma-separated).
            interactive: False raises :class:`AuthorizationRequired` instead of opening a browser.
            refresh_buffer: seconds before expiry that tokens are refreshed.
            clock, open_url, authorization_timeout, on_transition, on_url, elicitation: see the class.

        Raises:
            ConfigError: the file is missing, unreadable or malformed (the message names it).
        """
        config = load_config(
            Path(config_path) if config_path is not None else None, connected_servers=connected_servers
        )
        for name in config.unknown_eager:
            _log.warning("CONNECTED_SERVERS names %r, which is not configured in %s", name, config.path)
        return cls(
            config,
            TokenStore(Path(token_dir) if token_dir is not None else None),
            interactive=interactive,
            refresh_buffer=refresh_buffer,
            clock=clock,
            open_url=open_url,
            authorization_timeout=authorization_timeout,
            on_transition=on_transition,
            on_url=on_url,
            elicitation=elicitation,
        )

    def __repr__(self) -> str:
        return f"<ServerPool {len(self._connections)} servers from {str(self.config.path)!r}>"

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> ServerPool:
        """Connect the eager servers, in parallel; a failure is logged, not raised."""
        eager = [self._connections[name] for name in sorted(self.config.eager)]
        results = await asyncio.gather(*(c.session() for c in eager), return_exceptions=True)
        for connection, result in zip(eager, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("could not connect %r at start: %s", connection.name, describe(result))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every session and timer, end stdio processes, release locks and sockets."""
        await asyncio.gather(*(c.close() for c in self._connections.values()), return_exceptions=True)
        await self._transport.aclose()

    # --- the executor API ----------------------------------------------------------

    def servers(self) -> list[str]:
        """The configured server names, in configuration order."""
        return list(self._connections)

    def state(self, server: str) -> str:
        """The connection's current state (``lazy``, ``connected``, ...).

        Raises:
            ServerNotFound: no such server is configured.
        """
        return self._connection(server).state.value

    def problem(self, server: str) -> str | None:
        """Why the server is failed or misconfigured, if it is."""
        problem = self._connection(server).machine.problem
        return problem.message if problem is not None else None

    def connection(self, server: str) -> Connection:
        """The server's connection driver (for counters and diagnostics)."""
        return self._connection(server)

    async def list_tools(self, server: str) -> list[mcp_types.Tool]:
        """Every tool the server offers (all pages).

        Raises:
            ServerNotFound, AuthorizationRequired, ServerUnavailable, ToolCallError.
        """
        tools: list[mcp_types.Tool] = []

        async def fetch(session: Any) -> None:
            from mcp.types import PaginatedRequestParams  # loaded with the session already

            cursor: str | None = None
            tools.clear()
            for _ in range(1000):
                params = PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return

        await self._with_session(server, "tools/list", fetch)
        return tools

    async def get_tool_schema(self, server: str, tool: str) -> dict[str, Any]:
        """The tool's input schema.

        Raises:
            ToolCallError: the server has no such tool (the message lists the ones it has).
        """
        tools = await self.list_tools(server)
        for candidate in tools:
            if candidate.name == tool:
                return dict(candidate.input_schema)
        names = ", ".join(sorted(t.name for t in tools)) or "(none)"
        raise ToolCallError(server, tool, f"no such tool; {server!r} offers: {names}")

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any] | None = None
    ) -> mcp_types.CallToolResult:
        """Call a tool; returns the server's result (``is_error`` set when the tool reported failure).

        Raises:
            ServerNotFound, AuthorizationRequired, ServerUnavailable, ToolCallError.
        """
        result: list[mcp_types.CallToolResult] = []

        async def call(session: Any) -> None:
            result.append(await session.call_tool(tool, arguments or {}))

        await self._with_session(server, tool, call)
        return result[0]

    async def login(self, server: str) -> None:
        """Authorize now in the browser (even if tokens are stored), then connect."""
        connection = self._connection(server)
        replacement = self._new_connection(connection.config, interactive=True)
        await connection.close()
        self._connections[server] = replacement
        await asyncio.to_thread(replacement.log.append, [LoggedOut(revoked=False)], at=self._clock.now())
        await replacement.session()

    async def logout(self, server: str) -> bool:
        """Revoke the tokens where the server offers revocation, and log the logout.

        Returns:
            True when the authorization server confirmed revocation.
        """
        connection = self._connection(server)
        try:
            replay = await asyncio.to_thread(connection.log.read)
        except TokenLogError as error:
            raise ServerUnavailable(server, cause=str(error)) from None
        state = replay.state
        revoked = False
        if state.tokens is not None and state.discovery is not None and state.client is not None:
            oauth = connection.oauth_client()
            with contextlib.suppress(TetherError):
                revoked = await oauth.revoke(state.discovery, state.client, state.tokens)
        await connection.close()
        await asyncio.to_thread(connection.log.append, [LoggedOut(revoked=revoked)], at=self._clock.now())
        return revoked

    # --- internals -------------------------------------------------------------------

    def _connection(self, server: str) -> Connection:
        try:
            return self._connections[server]
        except KeyError:
            raise ServerNotFound(server, list(self._connections)) from None

    async def _with_session(self, server: str, what: str, action: Callable[[Any], Any]) -> None:
        """Run ``action(session)``; a broken session is reconnected and the action retried once."""
        connection = self._connection(server)
        from mcp.shared.exceptions import MCPError  # loaded once a session exists; not at pool start

        for attempt in (1, 2):
            connection.auth_problem = None
            session = await connection.session()
            try:
                await action(session)
                return
            except MCPError as error:
                if connection.auth_problem is not None:
                    raise connection.auth_problem from None
                raise ToolCallError(server, what, error.error.message) from None
            except (TetherError, asyncio.CancelledError):
                raise
            except Exception as error:
                if connection.auth_problem is not None:
                    raise connection.auth_problem from None
                cause = describe(error)
                await connection.session_failed(cause)
                if attempt == 2:
                    raise ServerUnavailable(server, cause=f"{server!r} failed during {what}: {cause}") from None
