"""The states of one server's connection, and what each means.

Kept apart from :mod:`mcp_tether.statemachine.machine` so that naming a state
(``ServerPool.state`` of a server that was never used) loads no table, no
``transitions`` machine and no event classes.
"""

from __future__ import annotations

import enum

__all__ = ["STATE_MEANING", "State", "closed_message", "initial_state"]


class State(enum.Enum):
    """The states of one server's connection."""

    LAZY = "lazy"
    CONNECTING = "connecting"
    VALID = "valid"
    EXPIRING = "expiring"
    REFRESHING = "refreshing"
    BROWSER_AUTH = "browser_auth"
    CONNECTED = "connected"
    NEEDS_AUTH = "needs_auth"
    FAILED = "failed"
    CLOSED = "closed"


#: What each state means; the specification is generated from this and the table.
STATE_MEANING: dict[State, str] = {
    State.LAZY: "Configured, nothing open, nothing loaded (or reset): costs nothing until a caller needs it.",
    State.CONNECTING: "The token log is being read (first use, reconnect, or a 401 that another process may "
    "already have answered).",
    State.VALID: "A usable access token (or no OAuth at all) is in hand; the MCP session is being opened.",
    State.EXPIRING: "The access token is inside its refresh window but still usable: a background refresh is in "
    "flight or scheduled while requests keep using the token.",
    State.REFRESHING: "No usable access token; a refresh is in flight or scheduled, and callers wait for it.",
    State.BROWSER_AUTH: "Nothing a refresh can answer: an authorization (browser, or the client-credentials grant) "
    "is in flight for a waiting caller.",
    State.CONNECTED: "The session is up and the access token is usable; a timer is set for the refresh window.",
    State.NEEDS_AUTH: "A person must authorize, but no caller was waiting (a background refresh was refused, or "
    "an authorization was denied or timed out); the next call decides.",
    State.FAILED: "Connecting failed, the session was lost, or the entry is misconfigured; callers get a clear "
    "error until the retry time, then the next call reconnects.",
    State.CLOSED: "The pool closed or the server was removed from the configuration (terminal).",
}


def initial_state(*, misconfigured: bool) -> State:
    """Where a connection starts: ``lazy``, or ``failed`` for an unusable configuration entry."""
    return State.FAILED if misconfigured else State.LAZY


def closed_message(server: str) -> str:
    """What callers of a server are told once its pool is closed."""
    return f"the pool holding {server!r} is closed"
