"""A simulated MCP resource server: the mcp SDK's server, protected by bearer tokens.

:class:`SimulatedResourceServer` serves one MCP server (built with the SDK's
:class:`~mcp.server.mcpserver.MCPServer`, streamable HTTP transport) at two
endpoints of one Starlette app:

* ``/mcp``, protected: every request needs ``Authorization: Bearer <token>``
  with a token that the in-process :class:`SimulatedAuthorizationServer`
  reports active (:meth:`~SimulatedAuthorizationServer.introspect`) and that
  was issued for this resource (RFC 8707 audience). Otherwise the answer is
  401 with ``WWW-Authenticate: Bearer resource_metadata="..."`` (RFC 9728), or
  403 ``insufficient_scope`` when the token lacks a required scope;
* ``/open/mcp``, unprotected, the same tools, so benchmarks can compare the
  cost of authorization on identical work;
* ``/legacy/sse`` (with ``/legacy/messages/``), unprotected, the same tools over
  the older HTTP+SSE transport (``"type": "sse"`` entries);
* ``/secure/sse`` (with ``/secure/messages/``), the HTTP+SSE transport protected
  like ``/mcp``, as its own resource (``/secure/sse``, with its own metadata).

RFC 9728 protected resource metadata naming the authorization server is at
``/.well-known/oauth-protected-resource/mcp`` (and at the root well-known path),
and at ``/.well-known/oauth-protected-resource/secure/sse`` for the SSE resource.

The tools (shared with :mod:`mcp_tether.testing.stdio_server`) are ``echo``,
``add``, ``sleep``, ``whoami`` and ``needs_scope``; the last one demands the
step-up scope (403 ``insufficient_scope`` at the HTTP layer on the protected
endpoint, per the MCP authorization spec's step-up flow).
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import anyio
import attrs
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_tether.testing.authserver import SimulatedAuthorizationServer, TokenInfo

__all__ = [
    "LEGACY_SSE_PATH",
    "MAX_SLEEP_MS",
    "MCP_PATH",
    "OPEN_MCP_PATH",
    "SECURE_SSE_PATH",
    "ResourceServerCounters",
    "SimulatedResourceServer",
    "build_tool_server",
]

#: Path of the protected MCP endpoint.
MCP_PATH = "/mcp"
#: Path of the unprotected MCP endpoint serving the same tools.
OPEN_MCP_PATH = "/open/mcp"
#: Path of the unprotected endpoint of the HTTP+SSE transport (messages go to ``/legacy/messages/``).
LEGACY_SSE_PATH = "/legacy/sse"
#: Path of the protected endpoint of the HTTP+SSE transport (messages go to ``/secure/messages/``).
SECURE_SSE_PATH = "/secure/sse"
#: Longest ``sleep`` the tool accepts, in milliseconds.
MAX_SLEEP_MS = 60_000

_PRM_PATH = "/.well-known/oauth-protected-resource"
_MAX_INSPECTED_BODY = 1024 * 1024


def build_tool_server(
    name: str = "mcp-tether-simulated",
    *,
    on_tool_call: Callable[[str], None] | None = None,
) -> MCPServer:
    """Build the MCP server with the simulated tools.

    Tools:

    * ``echo(text) -> text``;
    * ``add(a, b) -> a + b``;
    * ``sleep(ms) -> ms`` after an asynchronous sleep of ``ms`` milliseconds
      (0..:data:`MAX_SLEEP_MS`);
    * ``whoami() -> {"client_id", "scopes"}`` from the bearer token (both
      None without one);
    * ``needs_scope() -> "granted"``, which the protected endpoint only lets
      through with the step-up scope.

    Args:
        name: the server name reported at initialization.
        on_tool_call: called with the tool name on every call (for counters).

    Returns:
        The SDK server; serve it over stdio or streamable HTTP.
    """
    server = MCPServer(name, log_level="WARNING")

    def called(tool: str) -> None:
        if on_tool_call is not None:
            on_tool_call(tool)

    @server.tool()
    def echo(text: str) -> str:
        """Return ``text`` unchanged."""
        called("echo")
        return text

    @server.tool()
    def add(a: float, b: float) -> float:
        """Return the sum of ``a`` and ``b``."""
        called("add")
        return a + b

    @server.tool()
    async def sleep(ms: int) -> int:
        """Sleep ``ms`` milliseconds without blocking the server, then return ``ms``."""
        called("sleep")
        if not 0 <= ms <= MAX_SLEEP_MS:
            raise ValueError(f"sleep: ms must be between 0 and {MAX_SLEEP_MS}, got {ms}")
        await anyio.sleep(ms / 1000)
        return ms

    @server.tool()
    def whoami() -> dict[str, object]:
        """Return the client id and scopes of the bearer token (None without a token)."""
        called("whoami")
        token = get_access_token()
        if token is None:
            return {"client_id": None, "scopes": None}
        return {"client_id": token.client_id, "scopes": list(token.scopes)}

    @server.tool()
    def needs_scope() -> str:
        """Return "granted"; on the protected endpoint this needs the step-up scope."""
        called("needs_scope")
        return "granted"

    return server


@attrs.frozen(kw_only=True)
class ResourceServerCounters:
    """A consistent snapshot of the resource server's counters.

    Attributes:
        mcp_requests: requests let through to the protected endpoint.
        open_requests: requests to the unprotected endpoint.
        unauthorized: 401 answers (no, unknown, expired or foreign token).
        forbidden: 403 ``insufficient_scope`` answers.
        tool_calls: tool calls per tool name, both endpoints together.
    """

    mcp_requests: int
    open_requests: int
    unauthorized: int
    forbidden: int
    tool_calls: Mapping[str, int]


class SimulatedResourceServer:
    """An MCP server on streamable HTTP, protected by a simulated authorization server.

    Serve :attr:`app` once (it runs the SDK's session manager in its
    lifespan). The resource identifier is derived from each request:
    ``<scheme://host:port>/mcp``.

    Args:
        authorization_server: checks tokens in-process (``introspect``).
        issuer: the authorization server's issuer URL, named in the protected
            resource metadata (``authorization_servers``).
        required_scopes: scopes every request to ``/mcp`` needs (403 otherwise).
        step_up_scope: the scope the ``needs_scope`` tool needs.
        scopes_supported: ``scopes_supported`` in the resource metadata; None
            omits it.
        challenge_scope: the ``scope`` parameter of the 401 challenge; None
            leaves it out.
        check_audience: refuse tokens whose RFC 8707 resource is not this
            server's resource identifier.
        name: the MCP server name.
        json_response: answer each POST with one JSON body when the result is
            ready, instead of an SSE stream whose headers come at once (both
            are streamable HTTP; a client that holds a lock until the response
            headers behaves very differently under the two).
    """

    def __init__(
        self,
        authorization_server: SimulatedAuthorizationServer,
        *,
        issuer: str,
        required_scopes: Sequence[str] = (),
        step_up_scope: str = "mcp:admin",
        scopes_supported: Sequence[str] | None = ("mcp", "mcp:admin"),
        challenge_scope: str | None = None,
        check_audience: bool = True,
        name: str = "mcp-tether-simulated",
        json_response: bool = False,
    ) -> None:
        self.authorization_server = authorization_server
        self.issuer = issuer
        self.required_scopes = tuple(required_scopes)
        self.step_up_scope = step_up_scope
        self.scopes_supported = None if scopes_supported is None else tuple(scopes_supported)
        self.challenge_scope = challenge_scope
        self.check_audience = check_audience
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._tool_calls: collections.Counter[str] = collections.Counter()
        self.mcp = build_tool_server(name, on_tool_call=self._count_tool)
        # Building the SDK's app creates its session manager; both endpoints share it.
        self.mcp.streamable_http_app(streamable_http_path=MCP_PATH, json_response=json_response)
        session_manager = self.mcp.session_manager

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with session_manager.run():
                yield

        self._known_sessions: set[str] = set()
        self._forgotten_sessions: set[str] = set()
        transport = _SessionGate(self, session_manager.handle_request)
        self.app = Starlette(
            routes=[
                Route(MCP_PATH, endpoint=_BearerGate(self, AuthContextMiddleware(transport), resource_path=MCP_PATH)),
                Route(OPEN_MCP_PATH, endpoint=_Counted(self, transport)),
                Mount(LEGACY_SSE_PATH.rsplit("/", 1)[0], app=_Counted(self, self.mcp.sse_app())),
                Mount(
                    SECURE_SSE_PATH.rsplit("/", 1)[0],
                    app=_BearerGate(self, AuthContextMiddleware(self.mcp.sse_app()), resource_path=SECURE_SSE_PATH),
                ),
                Route(f"{_PRM_PATH}{MCP_PATH}", self._metadata_for(MCP_PATH), methods=["GET"]),
                Route(f"{_PRM_PATH}{SECURE_SSE_PATH}", self._metadata_for(SECURE_SSE_PATH), methods=["GET"]),
                Route(_PRM_PATH, self._metadata_for(MCP_PATH), methods=["GET"]),
            ],
            lifespan=lifespan,
        )

    def counters(self) -> ResourceServerCounters:
        """Return a consistent snapshot of the counters (safe from any thread)."""
        with self._lock:
            return ResourceServerCounters(
                mcp_requests=self._counts["mcp_requests"],
                open_requests=self._counts["open_requests"],
                unauthorized=self._counts["unauthorized"],
                forbidden=self._counts["forbidden"],
                tool_calls=dict(self._tool_calls),
            )

    @staticmethod
    def resource_for(base_url: str) -> str:
        """The resource identifier (the protected MCP URL) when served at ``base_url``."""
        return base_url.rstrip("/") + MCP_PATH

    @staticmethod
    def metadata_url_for(base_url: str) -> str:
        """The RFC 9728 metadata URL named in 401 challenges when served at ``base_url``."""
        return base_url.rstrip("/") + _PRM_PATH + MCP_PATH

    def forget_sessions(self) -> int:
        """Forget every MCP session, as a restarted server would.

        From now on a request naming one of them is answered 404 with the
        JSON-RPC error the SDK's server sends for an unknown session; a client
        must initialize a new session (sessions opened later are unaffected).

        Returns:
            How many sessions were forgotten.
        """
        with self._lock:
            forgotten = self._known_sessions - self._forgotten_sessions
            self._forgotten_sessions |= forgotten
            return len(forgotten)

    def _session_seen(self, session_id: str) -> None:
        with self._lock:
            self._known_sessions.add(session_id)

    def _session_forgotten(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._forgotten_sessions

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _count_tool(self, tool: str) -> None:
        with self._lock:
            self._tool_calls[tool] += 1

    def _metadata_for(self, resource_path: str) -> Callable[[Request], Awaitable[Response]]:
        async def metadata(request: Request) -> Response:
            document: dict[str, object] = {
                "resource": _origin(request) + resource_path,
                "authorization_servers": [self.issuer],
                "bearer_methods_supported": ["header"],
            }
            if self.scopes_supported is not None:
                document["scopes_supported"] = list(self.scopes_supported)
            return JSONResponse(document)

        return metadata


def _origin(request: Request) -> str:
    """``scheme://host:port`` of the request, whatever app it is mounted under."""
    return f"{request.url.scheme}://{request.url.netloc}"


class _SessionGate:
    """In front of the SDK's transport: learns session IDs, and answers forgotten ones 404."""

    def __init__(self, owner: SimulatedResourceServer, app: ASGIApp) -> None:
        self._owner = owner
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self._owner
        session_id = Headers(scope=scope).get("mcp-session-id")
        if session_id is not None and owner._session_forgotten(session_id):
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
            await JSONResponse(error, status_code=404)(scope, receive, send)
            return

        async def learning(message: Message) -> None:
            if message["type"] == "http.response.start":
                assigned = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if assigned is not None:
                    owner._session_seen(assigned)
            await send(message)

        await self._app(scope, receive, learning)


class _Counted:
    """The unprotected endpoint: count, then hand over to the transport."""

    def __init__(self, owner: SimulatedResourceServer, app: ASGIApp) -> None:
        self._owner = owner
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._owner._count("open_requests")
        await self._app(scope, receive, send)


class _BearerGate:
    """ASGI gate in front of a protected endpoint: 401/403 or pass the token's user on.

    ``resource_path`` names the resource (its identifier is the origin plus the
    path; its metadata is at the well-known path plus it).
    """

    def __init__(self, owner: SimulatedResourceServer, app: ASGIApp, *, resource_path: str) -> None:
        self._owner = owner
        self._app = app
        self._resource_path = resource_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self._owner
        request = Request(scope)
        resource = _origin(request) + self._resource_path
        metadata_url = _origin(request) + _PRM_PATH + self._resource_path
        header = request.headers.get("authorization", "")
        info: TokenInfo | None = None
        token = ""
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
            info = owner.authorization_server.introspect(token)
        if info is None or (
            owner.check_audience and (info.resource or "").rstrip("/") != resource.rstrip("/")
        ):
            owner._count("unauthorized")
            error = 'error="invalid_token", ' if token else ""
            scope_part = f', scope="{owner.challenge_scope}"' if owner.challenge_scope else ""
            challenge = f'Bearer {error}resource_metadata="{metadata_url}"{scope_part}'
            await _send_json(send, 401, {"error": "invalid_token"}, challenge)
            return
        receive, tool = await _peek_tool_call(scope, receive)
        needed = set(owner.required_scopes)
        if tool == "needs_scope":
            needed.add(owner.step_up_scope)
        if not needed <= set(info.scopes):
            owner._count("forbidden")
            wanted = " ".join(sorted(needed | set(info.scopes)))
            challenge = (
                f'Bearer error="insufficient_scope", scope="{wanted}", '
                f'resource_metadata="{metadata_url}"'
            )
            await _send_json(send, 403, {"error": "insufficient_scope"}, challenge)
            return
        owner._count("mcp_requests")
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token=token,
                client_id=info.client_id,
                scopes=list(info.scopes),
                expires_at=None if info.expires_at is None else int(info.expires_at),
                resource=info.resource,
            )
        )
        scope["auth"] = AuthCredentials(list(info.scopes))
        await self._app(scope, receive, send)


async def _peek_tool_call(scope: Scope, receive: Receive) -> tuple[Receive, str | None]:
    """Read a POST body to learn which tool a ``tools/call`` names; return a receive that replays it."""
    if scope.get("method") != "POST":
        return receive, None
    read: list[Message] = []
    body = b""
    complete = False
    while not complete and len(body) <= _MAX_INSPECTED_BODY:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        complete = not message.get("more_body", False)
    tool: str | None = None
    if complete:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            payload = json.loads(body)
            if isinstance(payload, dict) and payload.get("method") == "tools/call":
                params = payload.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                tool = name if isinstance(name, str) else None
    queue = collections.deque(read)

    async def replaying() -> Message:
        if queue:
            return queue.popleft()
        return await receive()

    return replaying, tool


async def _send_json(send: Send, status: int, body: Mapping[str, object], challenge: str) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
