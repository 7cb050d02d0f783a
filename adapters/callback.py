"""The loopback callback server that receives the authorization response (RFC 8252).

Theory of operation
-------------------
:class:`LoopbackCallbackServer` listens on ``127.0.0.1`` only, on an ephemeral
port unless one is given, and serves a single authorization:

* Only ``GET <path>`` with a ``Host`` of ``127.0.0.1:<port>`` or
  ``localhost:<port>`` is considered (DNS-rebinding defence); anything else gets
  a 4xx page and changes nothing.
* A callback whose ``state`` does not match (compared in constant time) is
  answered with a "state mismatch" page and **ignored**: a forged request that
  reaches the port first cannot end or hijack the authorization, and the real
  callback still succeeds. Its count is reported.
* The first callback with the right ``state`` settles the outcome: a code
  (after the RFC 9207 ``iss`` check), an error such as ``access_denied``, or an
  issuer mismatch. Later requests get an "already finished" page.
* :meth:`LoopbackCallbackServer.wait` is bounded; each connection has its own
  short deadline and a cap on the request size.

Every value echoed into a page is HTML-escaped, and pages forbid scripts
(``Content-Security-Policy``), caching and referrers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import html
import secrets
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import attrs

from mcp_tether.statemachine.tokens import ClientRegistration

__all__ = [
    "CALLBACK_PATH",
    "CallbackResult",
    "CallbackStatus",
    "LoopbackCallbackServer",
    "loopback_redirect_port",
]

#: Path of the redirect URI on the loopback server.
CALLBACK_PATH = "/callback"
#: Seconds a single connection may take to send its request.
_CONNECTION_TIMEOUT = 10.0
#: Largest request head accepted, in bytes.
_MAX_REQUEST_HEAD = 16 * 1024
_MAX_QUOTED = 300


class CallbackStatus(enum.Enum):
    """How a loopback authorization ended."""

    CODE = "code"  # a code arrived with the right state (and issuer)
    ERROR = "error"  # the authorization server sent error=... (e.g. access_denied)
    ISSUER_MISMATCH = "issuer_mismatch"  # RFC 9207 iss wrong, or missing although advertised
    TIMEOUT = "timeout"  # nothing valid arrived in time


@attrs.frozen(kw_only=True)
class CallbackResult:
    """The outcome of one loopback authorization.

    Attributes:
        status: how it ended.
        code: the authorization code (CODE only; never in ``repr``).
        error: the OAuth ``error`` (ERROR) or a description (ISSUER_MISMATCH).
        error_description: the server's ``error_description``, if any.
        iss: the ``iss`` parameter received, if any.
        forged: callbacks received with a wrong or missing ``state``.
    """

    status: CallbackStatus
    code: str | None = attrs.field(default=None, repr=False)
    error: str | None = None
    error_description: str | None = None
    iss: str | None = None
    forged: int = 0


def loopback_redirect_port(client: ClientRegistration | None) -> int | None:
    """The port of a registration's loopback redirect URI, to reuse it after a restart.

    Args:
        client: the registration on record, if any.

    Returns:
        The port of its first ``http://127.0.0.1:<port>/callback`` redirect URI, or None.
    """
    if client is None:
        return None
    for uri in client.redirect_uris:
        parts = urlsplit(uri)
        try:
            port = parts.port
        except ValueError:
            continue
        if parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.path == CALLBACK_PATH and port:
            return int(port)
    return None


def _page(title: str, message: str, server_name: str, detail: str | None = None) -> str:
    quoted = ""
    if detail:
        text = detail if len(detail) <= _MAX_QUOTED else detail[:_MAX_QUOTED] + "..."
        quoted = f"<p><code>{html.escape(text)}</code></p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;line-height:1.5}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p>{quoted}"
        f"<p>Server: <strong>{html.escape(server_name)}</strong></p></body></html>"
    )


class LoopbackCallbackServer:
    """A single-use HTTP server on 127.0.0.1 awaiting one authorization response.

    Use as an async context manager; the socket is bound on entry and closed on exit.

    Args:
        server_name: the configured MCP server name, shown on the pages.
        expected_state: the ``state`` of this authorization request.
        expected_issuer: the issuer the authorization request went to.
        issuer_required: the server advertised RFC 9207 ``iss``; its absence is refused.
        port: the port to bind (0 for an ephemeral port).
    """

    def __init__(
        self,
        *,
        server_name: str,
        expected_state: str,
        expected_issuer: str,
        issuer_required: bool,
        port: int = 0,
    ) -> None:
        self._server_name = server_name
        self._expected_state = expected_state
        self._expected_issuer = expected_issuer
        self._issuer_required = issuer_required
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._outcome: asyncio.Future[CallbackResult] | None = None
        self._forged = 0
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._port is None:
            raise RuntimeError("the loopback callback server is not running")
        return self._port

    @property
    def redirect_uri(self) -> str:
        """The redirect URI to register and send: ``http://127.0.0.1:<port>/callback``."""
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def __aenter__(self) -> LoopbackCallbackServer:
        self._outcome = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(
            self._serve, host="127.0.0.1", port=self._requested_port, limit=_MAX_REQUEST_HEAD
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CONNECTION_TIMEOUT):
                await server.wait_closed()

    async def wait(self, timeout: float) -> CallbackResult:  # noqa: ASYNC109  # the result on timeout is a value
        """Wait for the authorization response, at most ``timeout`` seconds.

        Args:
            timeout: seconds to wait.

        Returns:
            The outcome; TIMEOUT when no callback with the right state arrived.
        """
        assert self._outcome is not None, "use the server as an async context manager"
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._outcome)
        except TimeoutError:
            result = CallbackResult(status=CallbackStatus.TIMEOUT, forged=self._forged)
            if not self._outcome.done():
                self._outcome.set_result(result)
            return self._outcome.result()

    def _settle(self, result: CallbackResult) -> None:
        assert self._outcome is not None
        self._outcome.set_result(attrs.evolve(result, forged=self._forged))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            async with asyncio.timeout(_CONNECTION_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                status, body = self._respond(head)
                payload = body.encode()
                writer.write(
                    (
                        f"HTTP/1.1 {status}\r\n"
                        "Content-Type: text/html; charset=utf-8\r\n"
                        f"Content-Length: {len(payload)}\r\n"
                        "Cache-Control: no-store\r\n"
                        "Referrer-Policy: no-referrer\r\n"
                        "X-Content-Type-Options: nosniff\r\n"
                        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
                        "Connection: close\r\n\r\n"
                    ).encode()
                    + payload
                )
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str]:
        """Decide the answer to one request; settles the outcome when it is the callback."""
        name = self._server_name
        try:
            lines = head.decode("ascii").split("\r\n")
            method, target, _version = lines[0].split(" ")
        except (UnicodeDecodeError, ValueError):
            return "400 Bad Request", _page("Bad request", "The request could not be read.", name)
        hosts = [line.split(":", 1)[1].strip().lower() for line in lines[1:] if line.lower().startswith("host:")]
        allowed = {f"127.0.0.1:{self._port}", f"localhost:{self._port}"}
        if len(hosts) != 1 or hosts[0] not in allowed:
            return "421 Misdirected Request", _page(
                "Wrong host", "This sign-in page only answers on its loopback address.", name
            )
        parts = urlsplit(target)
        if method != "GET":
            return "405 Method Not Allowed", _page("Not allowed", "Only GET is answered here.", name)
        if parts.path != CALLBACK_PATH:
            return "404 Not Found", _page("Not found", "There is nothing here.", name)
        if self._outcome is None or self._outcome.done():
            return "410 Gone", _page(
                "Sign-in already finished",
                "This sign-in has already completed or expired. Return to the terminal; "
                "if you still need to sign in, start again there.",
                name,
            )
        try:
            query = parse_qs(parts.query, keep_blank_values=True, max_num_fields=32, strict_parsing=False)
        except ValueError:
            return "400 Bad Request", _page("Bad request", "The sign-in response could not be read.", name)
        params = {key: values[0] for key, values in query.items() if len(values) == 1}
        state = params.get("state")
        if state is None or not secrets.compare_digest(state.encode(), self._expected_state.encode()):
            self._forged += 1
            return "400 Bad Request", _page(
                "Sign-in link does not match",
                "This response does not belong to the sign-in mcp-tether is waiting for (state "
                "mismatch). It was ignored. If you started the sign-in yourself, use the most recent "
                "link from the terminal.",
                name,
            )
        return self._settle_from(params)

    def _settle_from(self, params: dict[str, str]) -> tuple[str, str]:
        name = self._server_name
        iss = params.get("iss")
        error = params.get("error")
        description = params.get("error_description")
        if (iss is not None and iss != self._expected_issuer) or (iss is None and self._issuer_required):
            self._settle(
                CallbackResult(
                    status=CallbackStatus.ISSUER_MISMATCH,
                    error=f"expected iss {self._expected_issuer!r}, got {iss!r}",
                    iss=iss,
                )
            )
            return "400 Bad Request", _page(
                "Sign-in refused",
                "The response came from a different authorization server than the one asked "
                "(RFC 9207 issuer mismatch), so it was not used. Return to the terminal.",
                name,
                detail=iss,
            )
        if error is not None or "code" not in params or not params["code"]:
            error = error or "invalid_request"
            self._settle(
                CallbackResult(status=CallbackStatus.ERROR, error=error, error_description=description, iss=iss)
            )
            denied = error == "access_denied"
            return "200 OK" if denied else "400 Bad Request", _page(
                "Access denied" if denied else "Sign-in failed",
                "Authorization was declined, so mcp-tether will not be connected to this server. "
                "You can close this tab."
                if denied
                else "The authorization server reported an error. Return to the terminal for details.",
                name,
                detail=error + (f": {description}" if description else ""),
            )
        self._settle(CallbackResult(status=CallbackStatus.CODE, code=params["code"], iss=iss))
        return "200 OK", _page(
            "Signed in",
            "Authorization received. You can close this tab and return to the terminal.",
            name,
        )
