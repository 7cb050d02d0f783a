"""The errors executors can act on. Every message names the server, says what
happened and what to do next; none carries a secret."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuthorizationRequired",
    "ServerNotFound",
    "ServerUnavailable",
    "TetherError",
    "ToolCallError",
    "describe",
]


class TetherError(Exception):
    """Base class of mcp-tether's errors."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


class ServerNotFound(TetherError):
    """No server of that name is configured."""

    def __init__(self, server: str, configured: Sequence[str]) -> None:
        names = ", ".join(sorted(configured)) or "(none)"
        super().__init__(
            f"no MCP server named {server!r} is configured; configured servers: {names}. "
            "Add it to ~/.claude.json (mcpServers) or check the spelling.",
            server=server,
        )
        self.configured = tuple(configured)


class AuthorizationRequired(TetherError):
    """A person must authorize this server (the pool is not interactive, or the authorization failed).

    Attributes:
        url: where a person can start (None when no link could be prepared).
        reason: why authorization is needed.
    """

    def __init__(self, server: str, *, reason: str, url: str | None = None) -> None:
        where = f" Open {url} or run" if url else " Run"
        super().__init__(
            f"{server!r} needs a person to authorize it: {reason.rstrip('.')}.{where} `mcp-tether login {server}` "
            "in a terminal with a browser, then call again.",
            server=server,
        )
        self.url = url
        self.reason = reason


class ServerUnavailable(TetherError):
    """The server cannot be reached or used right now.

    Attributes:
        cause: what went wrong.
        retry_at: wall-clock time after which the next call tries again (None: next call).
    """

    def __init__(self, server: str, *, cause: str, retry_at: float | None = None) -> None:
        super().__init__(cause, server=server)
        self.cause = cause
        self.retry_at = retry_at


class ToolCallError(TetherError):
    """The server answered the tool call with an error."""

    def __init__(self, server: str, tool: str, message: str) -> None:
        super().__init__(f"tool {tool!r} on {server!r} failed: {message}", server=server)
        self.tool = tool
        self.detail = message


def describe(error: BaseException) -> str:
    """A one-line cause for an exception, unwrapping exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in error.exceptions)
    if isinstance(error, TetherError):
        return str(error)
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if type(error).__name__ not in text else text
