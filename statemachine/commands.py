"""Commands: what a connection machine asks its driver to do.

The driver executes them in the order given. The order carries meaning: an
:class:`AppendLog` of new tokens always precedes the :class:`OpenSession` or
:class:`WakeWaiters` that lets a request use them (tokens are durable before
they are used).
"""

from __future__ import annotations

import enum

import attrs

from mcp_tether.statemachine.tokenlog import LogEvent

__all__ = [
    "AppendLog",
    "AuthorizationReason",
    "CloseSession",
    "Command",
    "LoadTokens",
    "OpenSession",
    "Problem",
    "ProblemKind",
    "SetTimer",
    "StartAuthorization",
    "StartRefresh",
    "WakeWaiters",
]


class AuthorizationReason(enum.Enum):
    """Why a person (or a client-credentials grant) has to authorize again."""

    NO_TOKENS = "no tokens stored for this server"
    NO_REFRESH_TOKEN = "the access token expired and the server issued no refresh token"
    REFRESH_REJECTED = "the authorization server rejected the refresh token (invalid_grant)"
    CLIENT_INVALID = "the authorization server no longer knows this client (invalid_client)"
    INSUFFICIENT_SCOPE = "the server needs a scope the current tokens lack"
    TOKEN_REJECTED = "the server kept rejecting fresh tokens"


class ProblemKind(enum.Enum):
    """The kinds of answer a waiting caller can get instead of a go-ahead."""

    AUTHORIZATION_REQUIRED = "authorization_required"
    UNAVAILABLE = "unavailable"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    MISCONFIGURED = "misconfigured"
    REMOVED = "removed"
    CLOSED = "closed"


@attrs.frozen(kw_only=True)
class Problem:
    """Why waiting callers cannot proceed, and when trying again makes sense."""

    kind: ProblemKind
    message: str
    retry_at: float | None = None
    url: str | None = None


@attrs.frozen(kw_only=True)
class LoadTokens:
    """Read the server's token log and report :class:`~.events.TokensLoaded`."""

    reason: str


@attrs.frozen(kw_only=True)
class StartRefresh:
    """Refresh the tokens (under the cross-process lock: re-read the log first and
    report :class:`~.events.TokensChanged` if another process already did)."""

    reason: str


@attrs.frozen(kw_only=True)
class StartAuthorization:
    """Obtain a new grant: browser authorization (or the client-credentials grant
    for machine-to-machine servers). Only ever emitted while a caller waits."""

    reason: AuthorizationReason
    scope: str | None = None


@attrs.frozen(kw_only=True)
class OpenSession:
    """Open the MCP transport and session; report SessionUp or SessionLost."""


@attrs.frozen(kw_only=True)
class CloseSession:
    """Close the MCP session if one is open (or cancel one being opened)."""

    reason: str


@attrs.frozen(kw_only=True)
class AppendLog:
    """Append these events to the server's token log, durably, before anything else."""

    events: tuple[LogEvent, ...]


@attrs.frozen(kw_only=True)
class WakeWaiters:
    """Answer every caller waiting on this server: go ahead (``problem`` None) or fail."""

    problem: Problem | None = None


@attrs.frozen(kw_only=True)
class SetTimer:
    """Deliver a :class:`~.events.ClockTick` at wall-clock time ``at`` (replaces any earlier timer)."""

    at: float
    purpose: str


Command = (
    LoadTokens
    | StartRefresh
    | StartAuthorization
    | OpenSession
    | CloseSession
    | AppendLog
    | WakeWaiters
    | SetTimer
)
