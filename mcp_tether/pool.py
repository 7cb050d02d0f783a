"""ServerPool: the executor-facing API.

Config in, tool results out. One :class:`~mcp_tether.connection.Connection` per
configured server, each driving its own state machine; eager servers
(``CONNECTED_SERVERS``) connect in parallel when the pool is entered. One failing
server never affects the others.

Lazy servers cost nothing until something needs them: building the pool parses
the configuration and nothing else. A server's connection (its state machine,
token log and driver) is made the first time a call, ``connection()``,
``login()`` or ``logout()`` names it, and the modules behind connections (the
transition table, the token-log codec, the OAuth and browser adapters) are
imported then, once. Until then ``state()`` answers from the configuration:
``lazy``, or ``failed`` for an unusable entry (``problem()`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from mcp_tether.adapters.clock import Clock, SystemClock
from mcp_tether.adapters.config import PoolConfig, ServerConfig, load_config
from mcp_tether.adapters.filenames import token_directory
from mcp_tether.errors import ServerNotFound, ServerUnavailable, TetherError, ToolCallError, describe
from mcp_tether.statemachine.states import State, closed_message, initial_state
from mcp_tether.statemachine.tokens import DEFAULT_REFRESH_BUFFER

if TYPE_CHECKING:  # loaded with the first connection or session, not when the pool is built
    from mcp import types as mcp_types

    from mcp_tether.adapters.token_store import TokenStore
    from mcp_tether.connection import Connection, SharedTransport, TransitionRecord
    from mcp_tether.elicitation import ElicitationHandler

__all__ = ["ConnectionOptions", "ServerPool"]

_log = logging.getLogger("mcp_tether")


@attrs.frozen(kw_only=True)
class ConnectionOptions:
    """What every connection of a pool shares (see :meth:`ServerPool.from_config` for each field)."""

    clock: Clock
    refresh_buffer: float = DEFAULT_REFRESH_BUFFER
    open_url: Callable[[str], bool] | None = None
    authorization_timeout: float = 300.0
    call_timeout: float | None = 300.0
    on_transition: Callable[[TransitionRecord], None] | None = None
    on_url: Callable[[str], None] | None = None
    elicitation: ElicitationHandler | None = None


class ServerPool:
    """Connections to every configured MCP server, used as an async context manager.

    Build one with :meth:`from_config`.

    Example::

        pool = ServerPool.from_config()
        async with pool:
            result = await pool.call_tool("notion", "search", {"query": "q"})

    Args:
        config: the parsed configuration.
        token_dir: the token directory; None means ``$MCP_TETHER_TOKEN_DIR``,
            else ``~/.claude/mcp-tokens``.
        interactive: False raises :class:`AuthorizationRequired` instead of opening a browser.
        options: what every connection shares (clock, timeouts, callbacks); the defaults when None.
    """

    def __init__(
        self,
        config: PoolConfig,
        token_dir: Path | None = None,
        *,
        interactive: bool = True,
        options: ConnectionOptions | None = None,
    ) -> None:
        self.config = config
        #: Where the token logs are (nothing is read or created until a server is used).
        self.token_dir = token_directory(token_dir)
        self.interactive = interactive
        self.options = options if options is not None else ConnectionOptions(clock=SystemClock())
        self._store: TokenStore | None = None
        self._transport: SharedTransport | None = None
        #: The connections made so far (a server's first use makes its connection).
        self._connections: dict[str, Connection] = {}
        self._closed = False

    @property
    def store(self) -> TokenStore:
        """The token directory's logs (the token-log modules load on first use)."""
        if self._store is None:
            from mcp_tether.adapters.token_store import TokenStore

            self._store = TokenStore(self.token_dir)
        return self._store

    def _new_connection(self, server: ServerConfig, *, interactive: bool) -> Connection:
        from mcp_tether.connection import Connection, SharedTransport

        if self._transport is None:
            self._transport = SharedTransport()
        log = self.store.log(server.name)
        return Connection(server, log=log, transport=self._transport, options=self.options, interactive=interactive)

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
        call_timeout: float | None = 300.0,
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
            clock: the wall clock (tests and the demo pass one they can move).
            open_url: opens a validated authorization URL (default: the ``webbrowser`` module).
            authorization_timeout: seconds a person has to complete a browser authorization.
            call_timeout: seconds a request to a server (a tool call, a tool list) may take
                before it fails with :class:`ToolCallError`; None waits as long as the
                transport allows.
            on_transition: told about every state-machine step, for live timelines.
            on_url: told each authorization URL before it is opened.
            elicitation: answers servers' ``elicitation/create`` requests (e.g.
                :func:`mcp_tether.elicitation.accept_defaults`); None leaves the
                capability unadvertised.

        Raises:
            ConfigError: the file is missing, unreadable or malformed (the message names it).
        """
        config = load_config(
            Path(config_path) if config_path is not None else None, connected_servers=connected_servers
        )
        for name in config.unknown_eager:
            _log.warning("CONNECTED_SERVERS names %r, which is not configured in %s", name, config.path)
        options = ConnectionOptions(
            clock=clock or SystemClock(),
            refresh_buffer=refresh_buffer,
            open_url=open_url,
            authorization_timeout=authorization_timeout,
            call_timeout=call_timeout,
            on_transition=on_transition,
            on_url=on_url,
            elicitation=elicitation,
        )
        return cls(config, Path(token_dir) if token_dir is not None else None, interactive=interactive, options=options)

    def __repr__(self) -> str:
        return f"<ServerPool {len(self.config.servers)} servers from {str(self.config.path)!r}>"

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> ServerPool:
        """Connect the eager servers, in parallel; a failure is logged, not raised."""
        eager = [self._connection(name) for name in sorted(self.config.eager)]
        if not eager:
            return self
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
        self._closed = True
        await asyncio.gather(*(c.close() for c in self._connections.values()), return_exceptions=True)
        if self._transport is not None:
            await self._transport.aclose()

    # --- the executor API ----------------------------------------------------------

    def servers(self) -> list[str]:
        """The configured server names, in configuration order."""
        return list(self.config.servers)

    def state(self, server: str) -> str:
        """The connection's current state (``lazy``, ``connected``, ...).

        Raises:
            ServerNotFound: no such server is configured.
        """
        connection = self._connections.get(server)
        if connection is not None:
            state = connection.state
        else:  # never used: where its machine would start
            misconfigured = self._server(server).problem is not None
            state = State.CLOSED if self._closed else initial_state(misconfigured=misconfigured)
        return str(state.value)

    def problem(self, server: str) -> str | None:
        """Why the server is failed or misconfigured, if it is."""
        connection = self._connections.get(server)
        if connection is None:
            return self._server(server).problem
        problem = connection.machine.problem
        return problem.message if problem is not None else None

    def connection(self, server: str) -> Connection:
        """The server's connection driver (for counters and diagnostics), made now if it was never used."""
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

        The pool's ``call_timeout`` bounds the wait for the result; ``asyncio.timeout``
        around the call sets a shorter one.

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
        from mcp_tether.statemachine.tokenlog import LoggedOut

        connection = self._connection(server)
        replacement = self._new_connection(connection.config, interactive=True)
        await connection.close()
        self._connections[server] = replacement
        await asyncio.to_thread(replacement.log.append, [LoggedOut(revoked=False)], at=self.options.clock.now())
        await replacement.session()

    async def logout(self, server: str) -> bool:
        """Revoke the tokens where the server offers revocation, and log the logout.

        Returns:
            True when the authorization server confirmed revocation.
        """
        from mcp_tether.adapters.token_store import TokenLogError
        from mcp_tether.statemachine.tokenlog import LoggedOut

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
        await asyncio.to_thread(connection.log.append, [LoggedOut(revoked=revoked)], at=self.options.clock.now())
        return revoked

    # --- internals -------------------------------------------------------------------

    def _server(self, server: str) -> ServerConfig:
        try:
            return self.config.servers[server]
        except KeyError:
            raise ServerNotFound(server, list(self.config.servers)) from None

    def _connection(self, server: str) -> Connection:
        """The server's connection, made on its first use."""
        connection = self._connections.get(server)
        if connection is None:
            config = self._server(server)
            if self._closed:
                raise ServerUnavailable(server, cause=closed_message(server))
            connection = self._connections[server] = self._new_connection(config, interactive=self.interactive)
        return connection

    async def _with_session(self, server: str, what: str, action: Callable[[Any], Any]) -> None:
        """Run ``action(session)``; a broken session is reconnected and the action retried once."""
        connection = self._connection(server)
        # Loaded once a session exists; not at pool start.
        from mcp.shared.exceptions import MCPError
        from mcp.types import REQUEST_TIMEOUT

        for attempt in (1, 2):
            connection.auth_problem = None
            session = await connection.session()
            try:
                await action(session)
                return
            except MCPError as error:
                if connection.auth_problem is not None:
                    raise connection.auth_problem from None
                call_timeout = self.options.call_timeout
                if error.error.code == REQUEST_TIMEOUT and call_timeout is not None:
                    raise ToolCallError(
                        server,
                        what,
                        f"no answer within {call_timeout:g} s (the server may still be working on it); "
                        "a larger call_timeout gives it more time",
                    ) from None
                lost = await _lost_session(connection, error.error.code, session)
                if lost is None:
                    raise ToolCallError(server, what, error.error.message) from None
                cause = f"{lost} ({error.error.message})"
            except (TetherError, asyncio.CancelledError):
                raise
            except Exception as error:
                if connection.auth_problem is not None:
                    raise connection.auth_problem from None
                cause = describe(error)
            await connection.session_failed(cause, session)
            if attempt == 2:
                raise ServerUnavailable(server, cause=f"{server!r} failed during {what}: {cause}")


#: Seconds a session has to answer a ping before it counts as lost.
PING_TIMEOUT = 5.0


async def _lost_session(connection: Connection, code: int, session: Any) -> str | None:
    """Why an MCP error means the session itself is lost, or None when it is the server's answer.

    Two ways: the server answered 404 to the session's ID (it restarted or expired
    the session; the MCP transport spec says to start a new one), or the SDK
    answered ``CONNECTION_CLOSED`` because the transport is gone (a stdio server
    that exited). A server may send that code for its own errors too, so a
    session that still answers a ping is not lost.
    """
    from mcp.types import CONNECTION_CLOSED

    if connection.session_gone:
        return f"the server no longer knows the session with {connection.name!r} (HTTP 404)"
    if code != CONNECTION_CLOSED:
        return None
    try:
        await asyncio.wait_for(session.send_ping(), timeout=PING_TIMEOUT)
    except Exception:
        return f"the connection to {connection.name!r} closed"
    return None
