"""The MCP and HTTP edge of a connection: transports, the session, and the bearer Auth.

Imported when a server's first session opens (or its first OAuth request is
made), so that a pool whose servers are all lazy never loads the MCP client
stack.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

import httpx2
from mcp import types as mcp_types
from mcp.client.auth.utils import extract_scope_from_www_auth
from mcp.client.session import ClientRequestContext, ClientSession, ElicitationFnT
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from mcp_tether.adapters.config import HttpServer, StdioServer
from mcp_tether.errors import ServerUnavailable

if TYPE_CHECKING:
    from mcp_tether.connection import Connection

__all__ = ["TetherAuth", "http_client", "open_session"]


def http_client(connection: Connection) -> httpx2.AsyncClient:
    """The server's HTTP client: the shared connection pool, its headers, and :class:`TetherAuth`."""
    if connection.http is None:
        transport = connection.config.transport
        headers = dict(transport.headers) if isinstance(transport, HttpServer) else {}
        connection.http = httpx2.AsyncClient(
            transport=_Lent(connection.shared_transport.get()),
            auth=TetherAuth(connection),
            headers=headers,
            timeout=httpx2.Timeout(30.0, read=300.0),
            follow_redirects=False,
        )
    client: httpx2.AsyncClient = connection.http
    return client


@contextlib.asynccontextmanager
async def open_session(connection: Connection) -> AsyncIterator[ClientSession]:
    """Open the server's transport and an (uninitialized) MCP session over it."""
    async with (
        _streams(connection) as (read, write),
        ClientSession(
            read,
            write,
            read_timeout_seconds=connection.options.call_timeout,
            elicitation_callback=_elicitation_callback(connection),
        ) as session,
    ):
        yield session


@contextlib.asynccontextmanager
async def _streams(connection: Connection) -> AsyncIterator[tuple[Any, Any]]:
    transport = connection.config.transport
    if isinstance(transport, StdioServer):
        params = StdioServerParameters(
            command=transport.command,
            args=list(transport.args),
            env=dict(transport.env) or None,
            cwd=transport.cwd,
        )
        async with stdio_client(params) as (read, write):
            yield read, write
    elif isinstance(transport, HttpServer) and transport.kind == "sse":
        auth = TetherAuth(connection)
        async with sse_client(transport.url, headers=dict(transport.headers), auth=auth) as (read, write):
            yield read, write
    elif isinstance(transport, HttpServer):
        async with streamable_http_client(transport.url, http_client=http_client(connection)) as (read, write):
            yield read, write
    else:
        cause = connection.config.problem or f"{connection.name!r} has no usable transport"
        raise ServerUnavailable(connection.name, cause=cause)


def _elicitation_callback(connection: Connection) -> ElicitationFnT | None:
    handler = connection.options.elicitation
    if handler is None:
        return None

    async def answer(context: ClientRequestContext, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return await handler(params)

    return answer


class TetherAuth(httpx2.Auth):
    """Attaches the connection's current bearer token; reports 401/403 to its machine.

    Holds no lock across a request. A refused request is retried once with the
    token the machine settles on (after re-reading the log, refreshing, or, as
    the last resort, authorizing).
    """

    requires_request_body = True

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("mcp-tether authenticates asynchronous clients only")

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        connection = self._connection
        token = await connection.token_for_request()
        _authorize(request, token)
        response = yield request
        if response.status_code == 401 or _insufficient_scope(response):
            await response.aread()
            token = await connection.recover(
                token,
                status=response.status_code,
                challenge=response.headers.get("WWW-Authenticate"),
                scope=extract_scope_from_www_auth(response),
            )
            _authorize(request, token)
            response = yield request
        if response.status_code < 400:
            await connection.accepted()
        elif response.status_code == 404 and request.headers.get("mcp-session-id"):
            connection.session_gone = True  # the server forgot the session (restarted): start a new one


def _authorize(request: httpx2.Request, token: str | None) -> None:
    if token is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {token}"


def _insufficient_scope(response: httpx2.Response) -> bool:
    return response.status_code == 403 and "insufficient_scope" in response.headers.get("WWW-Authenticate", "")


class _Lent(httpx2.AsyncBaseTransport):
    """The pool's shared transport, lent to one server's client: closing the client leaves it open."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None
