"""Events: everything the outside world can tell a connection machine.

Each event is a small frozen value, validated at construction (h11 style). Its
``trigger`` class attribute is the name of the trigger in the transition table.
Time enters only through :class:`ClockTick`; token-bearing events carry the
wall-clock time their tokens were received inside the :class:`TokenSet`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs

from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import TokenSet, TokenState

__all__ = [
    "EVENT_TYPES",
    "AuthorizationFailed",
    "AuthorizationSucceeded",
    "AuthorizationTimedOut",
    "ClockTick",
    "Close",
    "ConfigChanged",
    "ConfigRemoved",
    "Event",
    "InsufficientScope",
    "RefreshFailed",
    "RefreshSucceeded",
    "RefreshSuperseded",
    "SessionLost",
    "SessionUp",
    "StorageFailed",
    "TokenAccepted",
    "TokensChanged",
    "TokensLoaded",
    "Unauthorized",
    "UseRequested",
]


def _finite(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number of seconds, not {value!r}")


@attrs.frozen(kw_only=True)
class ClockTick:
    """Wall-clock time passed; ``now`` is seconds since the epoch."""

    trigger: ClassVar[str] = "clock_tick"
    now: float = attrs.field(validator=_finite)


@attrs.frozen(kw_only=True)
class UseRequested:
    """A caller needs this server (tool call, schema look-up, eager start)."""

    trigger: ClassVar[str] = "use_requested"


@attrs.frozen(kw_only=True)
class TokensLoaded:
    """The token log was read; ``state`` is its fold (``state.tokens`` may be None)."""

    trigger: ClassVar[str] = "tokens_loaded"
    state: TokenState


@attrs.frozen(kw_only=True)
class TokensChanged:
    """Another process (or the log re-read under the refresh lock) holds newer tokens."""

    trigger: ClassVar[str] = "tokens_changed"
    state: TokenState


@attrs.frozen(kw_only=True)
class RefreshSucceeded:
    """The token endpoint answered a refresh (or client-credentials) request with tokens."""

    trigger: ClassVar[str] = "refresh_succeeded"
    tokens: TokenSet
    grant: str = "refresh_token"


@attrs.frozen(kw_only=True)
class RefreshSuperseded:
    """The refresh protocol re-read the log under the lock and found tokens another
    process issued a moment ago; no request was made. ``state`` is the log's fold."""

    trigger: ClassVar[str] = "refresh_superseded"
    state: TokenState


@attrs.frozen(kw_only=True)
class RefreshFailed:
    """A refresh failed; ``failure`` says whether it is worth retrying."""

    trigger: ClassVar[str] = "refresh_failed"
    failure: FailureClass
    reason: str
    retry_after: float | None = attrs.field(default=None)

    @retry_after.validator
    def _check_retry_after(self, _attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"retry_after must be a non-negative number of seconds, not {value!r}")


@attrs.frozen(kw_only=True)
class AuthorizationSucceeded:
    """A (browser or client-credentials) authorization produced tokens."""

    trigger: ClassVar[str] = "authorization_succeeded"
    tokens: TokenSet
    grant: str = "authorization_code"


@attrs.frozen(kw_only=True)
class AuthorizationFailed:
    """Authorization ended without tokens: denied, refused, or a person is needed
    but the pool is not interactive (``url`` is what a person could open)."""

    trigger: ClassVar[str] = "authorization_failed"
    reason: str
    url: str | None = None


@attrs.frozen(kw_only=True)
class AuthorizationTimedOut:
    """Nobody completed the browser authorization within its deadline."""

    trigger: ClassVar[str] = "authorization_timed_out"


@attrs.frozen(kw_only=True)
class SessionUp:
    """The MCP session is initialized and usable."""

    trigger: ClassVar[str] = "session_up"


@attrs.frozen(kw_only=True)
class SessionLost:
    """The MCP session failed to open or went away (server restarted, process died)."""

    trigger: ClassVar[str] = "session_lost"
    cause: str


@attrs.frozen(kw_only=True)
class Unauthorized:
    """The resource server answered 401 to a request made with ``access_token``
    (None when the request carried no token)."""

    trigger: ClassVar[str] = "unauthorized"
    access_token: str | None = attrs.field(default=None, repr=False)
    www_authenticate: str | None = None


@attrs.frozen(kw_only=True)
class InsufficientScope:
    """The resource server answered 403 ``insufficient_scope``; ``scope`` is what it asked for."""

    trigger: ClassVar[str] = "insufficient_scope"
    scope: str | None = None
    www_authenticate: str | None = None


@attrs.frozen(kw_only=True)
class TokenAccepted:
    """A request succeeded with the current token after a 401 streak."""

    trigger: ClassVar[str] = "token_accepted"


@attrs.frozen(kw_only=True)
class StorageFailed:
    """The token log could not be read or written (corrupt line, permissions, disk full).

    Tokens that cannot be made durable must not be used, so the connection fails
    with the store's message, which names the file and what to do."""

    trigger: ClassVar[str] = "storage_failed"
    reason: str


@attrs.frozen(kw_only=True)
class ConfigChanged:
    """The server's configuration entry changed; the connection starts over."""

    trigger: ClassVar[str] = "config_changed"
    requires_auth: bool


@attrs.frozen(kw_only=True)
class ConfigRemoved:
    """The server is no longer configured."""

    trigger: ClassVar[str] = "config_removed"


@attrs.frozen(kw_only=True)
class Close:
    """The pool is closing."""

    trigger: ClassVar[str] = "close"


Event = (
    ClockTick
    | UseRequested
    | TokensLoaded
    | TokensChanged
    | RefreshSucceeded
    | RefreshSuperseded
    | RefreshFailed
    | AuthorizationSucceeded
    | AuthorizationFailed
    | AuthorizationTimedOut
    | SessionUp
    | SessionLost
    | Unauthorized
    | InsufficientScope
    | TokenAccepted
    | StorageFailed
    | ConfigChanged
    | ConfigRemoved
    | Close
)

#: Every event class, in the order the specification lists them.
EVENT_TYPES: tuple[type[Event], ...] = (
    ClockTick,
    UseRequested,
    TokensLoaded,
    TokensChanged,
    RefreshSucceeded,
    RefreshSuperseded,
    RefreshFailed,
    AuthorizationSucceeded,
    AuthorizationFailed,
    AuthorizationTimedOut,
    SessionUp,
    SessionLost,
    Unauthorized,
    InsufficientScope,
    TokenAccepted,
    StorageFailed,
    ConfigChanged,
    ConfigRemoved,
    Close,
)
