"""Serve ASGI apps on 127.0.0.1 from tests, in a background thread.

:class:`LoopbackServer` binds a free port on 127.0.0.1 as soon as it is
created, so its URL is known before the app is built (an authorization server
and a resource server that name each other can be wired up front), then runs
the app with uvicorn on its own event loop in a daemon thread. Because the
server has its own thread and loop, it serves sync tests, async tests (the
test's loop stays free) and child processes that connect by URL alike.

:func:`serve_loopback` and :func:`serve_loopback_async` are the context
manager forms; :class:`LoopbackOAuthEnvironment` starts a simulated
authorization server and a simulated MCP resource server together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from mcp_tether.testing.authserver import SimulatedAuthorizationServer
from mcp_tether.testing.resource_server import (
    LEGACY_SSE_PATH,
    OPEN_MCP_PATH,
    SECURE_SSE_PATH,
    SimulatedResourceServer,
)

__all__ = [
    "LoopbackOAuthEnvironment",
    "LoopbackServer",
    "serve_loopback",
    "serve_loopback_async",
]

_POLL = 0.01


class LoopbackServer:
    """One uvicorn server on an ephemeral 127.0.0.1 port, run in a daemon thread.

    The port is bound at construction; :attr:`url` is valid from then on.
    A server is started once and stopped once.

    Example::

        server = LoopbackServer()
        app = build_app(public_url=server.url)
        with server.running(app):
            httpx2.get(server.url + "/health")
    """

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        port = self._socket.getsockname()[1]
        #: Base URL of the server, ``http://127.0.0.1:PORT`` (no trailing slash).
        self.url = f"http://127.0.0.1:{port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LoopbackServer(url={self.url!r})"

    def start(self, app: ASGIApp, *, start_timeout: float = 10.0) -> None:
        """Run ``app`` on the bound port and return once it accepts connections.

        Args:
            app: the ASGI application (its lifespan is run).
            start_timeout: seconds to wait for start-up, lifespan included.

        Raises:
            RuntimeError: the server was already started, failed to start, or
                did not start within ``start_timeout``.
        """
        if self._server is not None:
            raise RuntimeError(f"loopback server {self.url} was already started; create a new one")
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name=f"loopback {self.url}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(
                    f"loopback server {self.url} failed to start (its lifespan start-up failed; "
                    "see the log output above)"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"loopback server {self.url} did not start within {start_timeout} s")
            time.sleep(_POLL)

    def stop(self, *, stop_timeout: float = 5.0) -> None:
        """Shut the server down and wait for its thread (idempotent).

        Open connections are given about a second to finish, then cancelled.

        Args:
            stop_timeout: seconds to wait for a graceful stop before forcing it.

        Raises:
            RuntimeError: the server thread did not end even after a forced exit.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            self._socket.close()
            return
        server.should_exit = True
        thread.join(stop_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(stop_timeout)
        if thread.is_alive():
            raise RuntimeError(f"loopback server {self.url} did not stop within {2 * stop_timeout} s")

    @contextlib.contextmanager
    def running(self, app: ASGIApp, *, start_timeout: float = 10.0) -> Iterator[str]:
        """Start ``app``, yield :attr:`url`, stop on exit.

        Args:
            app: the ASGI application.
            start_timeout: seconds to wait for start-up.

        Returns:
            A context manager yielding the base URL.
        """
        self.start(app, start_timeout=start_timeout)
        try:
            yield self.url
        finally:
            self.stop()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_loopback(app: ASGIApp, *, start_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port for the duration of a ``with`` block.

    Args:
        app: the ASGI application (its lifespan is run).
        start_timeout: seconds to wait for start-up.

    Returns:
        A context manager yielding the base URL, ``http://127.0.0.1:PORT``.

    Raises:
        RuntimeError: the server did not start or stop in time.
    """
    with LoopbackServer().running(app, start_timeout=start_timeout) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_loopback_async(app: ASGIApp, *, start_timeout: float = 10.0) -> AsyncIterator[str]:
    """Like :func:`serve_loopback`, without blocking the caller's event loop.

    The server still runs in its own thread; starting and stopping wait in a
    worker thread.

    Args:
        app: the ASGI application (its lifespan is run).
        start_timeout: seconds to wait for start-up.

    Returns:
        An async context manager yielding the base URL.

    Raises:
        RuntimeError: the server did not start or stop in time.
    """
    server = LoopbackServer()
    await asyncio.to_thread(server.start, app, start_timeout=start_timeout)
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


class LoopbackOAuthEnvironment:
    """A simulated authorization server and MCP resource server, each on its own loopback port.

    Use it as a context manager (``with`` or ``async with``); on entry both
    servers are running, on exit both are stopped. The two origins differ, so
    the issuer and the resource URL are distinct, as with real services.

    Example::

        with LoopbackOAuthEnvironment() as env:
            env.auth.script_token_answers([503], grant_type="refresh_token")
            ...connect an MCP client to env.mcp_url...
            assert env.auth.counters().refreshes == 1

    Args:
        auth: the authorization server to serve (build one to set its
            constructor knobs); a default one otherwise.
        required_scopes: scopes every request to the protected endpoint needs.
        challenge_scope: ``scope`` parameter of the resource server's 401 challenge.
        json_response: the MCP endpoints answer with one JSON body per request
            instead of an SSE stream (see :class:`SimulatedResourceServer`).

    Attributes:
        auth: the :class:`SimulatedAuthorizationServer` (knobs, counters, introspection).
        resource: the :class:`SimulatedResourceServer` (knobs, counters).
        auth_url: base URL the authorization server is served at.
        issuer: the authorization server's issuer (``auth_url`` plus its issuer path).
        resource_url: base URL the resource server is served at.
        mcp_url: the protected MCP endpoint, also the RFC 8707 resource identifier.
        open_mcp_url: the unprotected MCP endpoint with the same tools.
        sse_url: the same tools over the older HTTP+SSE transport, unprotected.
        secure_sse_url: the HTTP+SSE transport protected by OAuth, as its own resource.
        resource_metadata_url: the RFC 9728 metadata URL named in 401 challenges.
    """

    def __init__(
        self,
        auth: SimulatedAuthorizationServer | None = None,
        *,
        required_scopes: tuple[str, ...] = (),
        challenge_scope: str | None = None,
        json_response: bool = False,
    ) -> None:
        self.auth = auth if auth is not None else SimulatedAuthorizationServer()
        self._auth_server = LoopbackServer()
        self._resource_server = LoopbackServer()
        self.auth_url = self._auth_server.url
        self.issuer = self.auth.issuer_for(self.auth_url)
        self.resource_url = self._resource_server.url
        self.resource = SimulatedResourceServer(
            self.auth,
            issuer=self.issuer,
            required_scopes=required_scopes,
            challenge_scope=challenge_scope,
            json_response=json_response,
        )
        self.mcp_url = SimulatedResourceServer.resource_for(self.resource_url)
        self.open_mcp_url = self.resource_url + OPEN_MCP_PATH
        self.sse_url = self.resource_url + LEGACY_SSE_PATH
        self.secure_sse_url = self.resource_url + SECURE_SSE_PATH
        self.resource_metadata_url = SimulatedResourceServer.metadata_url_for(self.resource_url)

    def __repr__(self) -> str:
        return f"LoopbackOAuthEnvironment(issuer={self.issuer!r}, mcp_url={self.mcp_url!r})"

    def start(self) -> None:
        """Start both servers (each at most once).

        Raises:
            RuntimeError: a server did not start in time.
        """
        self._auth_server.start(self.auth.app)
        try:
            self._resource_server.start(self.resource.app)
        except BaseException:
            self._auth_server.stop()
            raise

    def stop(self) -> None:
        """Stop both servers.

        Raises:
            RuntimeError: a server did not stop in time.
        """
        try:
            self._resource_server.stop()
        finally:
            self._auth_server.stop()

    def __enter__(self) -> LoopbackOAuthEnvironment:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LoopbackOAuthEnvironment:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
