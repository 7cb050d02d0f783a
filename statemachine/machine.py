"""The per-server connection state machine.

Theory of operation
===================

Everything that affects a connection's state lives in this module, and as much
of it as possible lives in :data:`TABLE`, one declarative list of rows
``(trigger, sources, destination, conditions, actions)``. The table is built
into a private ``transitions`` machine (``auto_transitions=False``: nothing can
jump past the table). :meth:`ConnectionMachine.handle` takes one event and
returns the commands the driver must execute, in order; it performs no IO,
reads no clock and never awaits.

For every (state, trigger) pair the rows are tried in order; the first whose
conditions hold fires. Each pair ends with an unconditional row (a transition,
an explicit ignore, or an error state), so the table is total: nothing the
outside world can send makes ``handle`` raise (``tests/test_machine_table.py``
checks the product).

A first use walks ``lazy -> connecting`` (read the token log) and then, by the
tokens found: ``valid`` (fresh token, or no OAuth at all: open the session),
``expiring`` (inside the refresh window: refresh in the background while the
still-valid token opens the session), ``refreshing`` (expired or rejected
token, refresh token available), or ``browser_auth`` (nothing a refresh can
answer). The session coming up makes it ``connected``. While connected, a timer
at the refresh point moves it to ``expiring`` and refreshes in the background;
a 401 re-reads the log first (another process may have refreshed), then
refreshes, then retries; only when no refresh token can help does a *waiting
caller* cause a browser authorization. With no caller waiting (a background
refresh), a person-needing situation parks the machine in ``needs_auth`` and
the next call decides.

Timers: the machine never sleeps. It emits :class:`SetTimer` and expects a
:class:`ClockTick` at or after that time (ticks may also come at any other
time, and the wall clock may jump either way).

Waiters: callers that need the server register with the driver and feed
:class:`UseRequested` (or a 401/403 from their request). :class:`WakeWaiters`
answers all of them at once, with a go-ahead or a :class:`Problem`.
"""

from __future__ import annotations

import enum
import random
import weakref
import zlib
from typing import Any

import attrs
from transitions import EventData, Machine

from mcp_tether.statemachine.commands import (
    AppendLog,
    AuthorizationReason,
    CloseSession,
    Command,
    LoadTokens,
    OpenSession,
    Problem,
    ProblemKind,
    SetTimer,
    StartAuthorization,
    StartRefresh,
    WakeWaiters,
)
from mcp_tether.statemachine.events import (
    EVENT_TYPES,
    AuthorizationSucceeded,
    ClockTick,
    ConfigChanged,
    Event,
    InsufficientScope,
    RefreshFailed,
    RefreshSuperseded,
    Unauthorized,
)
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.states import STATE_MEANING, State, closed_message, initial_state
from mcp_tether.statemachine.tokenlog import (
    AuthorizationFailedEvent,
    AuthorizationStarted,
    ClientInvalidated,
    LogEvent,
    RefreshFailedEvent,
    TokensIssued,
    apply_events,
)
from mcp_tether.statemachine.tokens import DEFAULT_REFRESH_BUFFER, Freshness, TokenState

__all__ = [
    "SESSION_STATES",
    "STABLE_STATES",
    "STATE_MEANING",
    "TABLE",
    "TRIGGERS",
    "ConnectionMachine",
    "RetryPolicy",
    "Row",
    "State",
    "callback_names",
]


#: States in which no operation is outstanding, so no caller may be waiting.
STABLE_STATES = frozenset({State.LAZY, State.CONNECTED, State.NEEDS_AUTH, State.FAILED, State.CLOSED})

#: Trigger names, in event order.
TRIGGERS: tuple[str, ...] = tuple(event_type.trigger for event_type in EVENT_TYPES)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Bounds on retries; every loop the machine can enter is bounded by one of these."""

    #: Refresh attempts in the foreground (callers waiting) before giving up.
    max_refresh_attempts: int = 4
    #: First backoff delay; doubles per attempt up to ``max_backoff``.
    base_backoff: float = 1.0
    max_backoff: float = 30.0
    #: Longest a waiting caller is kept waiting for a scheduled refresh retry.
    max_foreground_wait: float = 30.0
    #: Fraction of random jitter added to backoff delays and the refresh point.
    jitter: float = 0.2
    #: Step-up authorizations for ``insufficient_scope`` before the call fails.
    max_step_ups: int = 2
    #: Longest backoff between reconnects after failures.
    max_connect_backoff: float = 60.0


@attrs.frozen(kw_only=True)
class Row:
    """One row of the transition table.

    ``dest`` None is an internal transition (the state does not change); a row
    with no actions and ``dest`` None is an explicit ignore.
    """

    trigger: str
    sources: tuple[State, ...]
    dest: State | None
    conditions: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()

    @property
    def unconditional(self) -> bool:
        return not self.conditions and not self.unless

    @property
    def is_ignore(self) -> bool:
        return self.dest is None and not self.actions and not self.prepare


def _row(
    trigger: str,
    sources: State | tuple[State, ...],
    dest: State | None,
    *,
    when: tuple[str, ...] | str = (),
    unless: tuple[str, ...] | str = (),
    do: tuple[str, ...] | str = (),
    prepare: tuple[str, ...] | str = (),
) -> Row:
    def tup(value: tuple[str, ...] | str) -> tuple[str, ...]:
        return (value,) if isinstance(value, str) else value

    return Row(
        trigger=trigger,
        sources=(sources,) if isinstance(sources, State) else sources,
        dest=dest,
        conditions=tup(when),
        unless=tup(unless),
        actions=tup(do),
        prepare=tup(prepare),
    )


S = State
_ALL = tuple(State)
_OPEN = tuple(s for s in State if s is not S.CLOSED)
_USING = (S.VALID, S.CONNECTED, S.EXPIRING)
#: States in which requests may use the current token.
SESSION_STATES = frozenset(_USING)
_WAITING = (S.CONNECTING, S.REFRESHING, S.BROWSER_AUTH)
_WAITER_EVENTS = ("use_requested", "unauthorized", "insufficient_scope")
_SETTLED_AFTER_SUCCESS = (S.LAZY, S.CONNECTING, S.VALID, S.CONNECTED, S.FAILED, S.CLOSED)

# The table. Rows for one (state, trigger) pair are tried in order; the last
# row of every pair is unconditional. Rows are grouped by trigger.
TABLE: tuple[Row, ...] = (
    # --- a caller needs the server (or its request was refused) -----------------
    *(
        _row(t, (S.LAZY, S.NEEDS_AUTH), S.CONNECTING, do=("add_waiter", "load_tokens"))
        for t in _WAITER_EVENTS
    ),
    *(_row(t, _WAITING, None, do=("add_waiter", "note_rejection")) for t in _WAITER_EVENTS),
    _row("use_requested", S.VALID, None, do="add_waiter"),
    _row("use_requested", S.CONNECTED, None, do=("add_waiter", "wake_ok")),
    _row("use_requested", S.EXPIRING, None, when="session_is_up", do=("add_waiter", "wake_ok")),
    _row("use_requested", S.EXPIRING, None, do="add_waiter"),
    _row(
        "unauthorized",
        _USING,
        S.FAILED,
        when=("rejects_current_token", "authorized_since_rejection"),
        do=("add_waiter", "fail_rejected"),
    ),
    _row(
        "unauthorized",
        _USING,
        S.BROWSER_AUTH,
        when=("rejects_current_token", "refreshed_since_rejection"),
        do=("add_waiter", "note_rejection", "start_authorization"),
    ),
    _row(
        "unauthorized",
        S.EXPIRING,
        S.REFRESHING,
        when=("rejects_current_token", "refresh_in_flight"),
        do=("add_waiter", "note_rejection"),
    ),
    _row(
        "unauthorized",
        _USING,
        S.CONNECTING,
        when="rejects_current_token",
        do=("add_waiter", "note_rejection", "load_tokens"),
    ),
    _row("unauthorized", _USING, None, do=("add_waiter", "wake_ok")),
    _row(
        "insufficient_scope", _USING, None, when="step_ups_exhausted", do=("add_waiter", "wake_scope_error")
    ),
    _row(
        "insufficient_scope", _USING, S.BROWSER_AUTH, do=("add_waiter", "note_scope", "start_authorization")
    ),
    *(
        _row(t, S.FAILED, None, when="misconfigured", do=("add_waiter", "wake_failure"))
        for t in _WAITER_EVENTS
    ),
    *(
        _row(t, S.FAILED, S.CONNECTING, when="retry_allowed", do=("add_waiter", "load_tokens"))
        for t in _WAITER_EVENTS
    ),
    *(_row(t, S.FAILED, None, do=("add_waiter", "wake_failure")) for t in _WAITER_EVENTS),
    *(_row(t, S.CLOSED, None, do=("add_waiter", "wake_closed")) for t in _WAITER_EVENTS),
    # --- the token log was read (its fold is adopted before the guards look) ----
    *(
        attrs.evolve(row, prepare=("adopt_event_state",))
        for row in (
            _row(
                "tokens_loaded",
                S.CONNECTING,
                S.CONNECTED,
                when=("needs_no_auth", "session_is_up"),
                do="wake_ok",
            ),
            _row("tokens_loaded", S.CONNECTING, S.VALID, when="needs_no_auth", do="open_session"),
            _row(
                "tokens_loaded",
                S.CONNECTING,
                S.CONNECTED,
                when=("token_fresh", "session_is_up"),
                do=("arm_timer", "wake_ok"),
            ),
            _row("tokens_loaded", S.CONNECTING, S.VALID, when="token_fresh", do="open_session"),
            _row(
                "tokens_loaded",
                S.CONNECTING,
                S.EXPIRING,
                when=("token_expiring", "session_is_up"),
                do=("start_refresh", "wake_ok"),
            ),
            _row(
                "tokens_loaded",
                S.CONNECTING,
                S.EXPIRING,
                when="token_expiring",
                do=("start_refresh", "open_session"),
            ),
            _row("tokens_loaded", S.CONNECTING, S.REFRESHING, when="can_refresh", do="start_refresh"),
            _row("tokens_loaded", S.CONNECTING, S.BROWSER_AUTH, when="has_waiters", do="start_authorization"),
            _row("tokens_loaded", S.CONNECTING, S.NEEDS_AUTH),
        )
    ),
    _row("tokens_loaded", tuple(s for s in _ALL if s is not S.CONNECTING), None),
    # --- another process wrote tokens (or the refresh lock's re-read found them) ---
    _row("tokens_changed", (S.LAZY, S.CONNECTING, S.FAILED), None, do="adopt_event_state"),
    _row(
        "tokens_changed",
        (S.VALID, S.CONNECTED),
        None,
        when="event_tokens_usable",
        do=("adopt_event_state", "arm_timer"),
    ),
    _row("tokens_changed", (S.VALID, S.CONNECTED), None),
    _row(
        "tokens_changed",
        (S.EXPIRING, S.REFRESHING, S.BROWSER_AUTH, S.NEEDS_AUTH),
        S.CONNECTED,
        when=("event_tokens_usable", "session_is_up"),
        do=("adopt_event_state", "arm_timer", "wake_ok"),
    ),
    _row("tokens_changed", S.EXPIRING, S.VALID, when="event_tokens_usable", do="adopt_event_state"),
    _row(
        "tokens_changed",
        (S.REFRESHING, S.BROWSER_AUTH),
        S.VALID,
        when="event_tokens_usable",
        do=("adopt_event_state", "open_session"),
    ),
    _row("tokens_changed", S.NEEDS_AUTH, S.LAZY, when="event_tokens_usable", do="adopt_event_state"),
    _row(
        "tokens_changed",
        (S.EXPIRING, S.REFRESHING, S.BROWSER_AUTH, S.NEEDS_AUTH),
        None,
        do="adopt_event_state",
    ),
    _row("tokens_changed", S.CLOSED, None),
    # --- a refresh (or client-credentials grant) answered, or the log already had newer tokens ---
    # Newer tokens on disk that are no longer usable themselves (another process refreshed, then
    # time passed: a suspended laptop): adopt them and refresh again, with their refresh token, at once.
    _row(
        "refresh_superseded",
        S.REFRESHING,
        None,
        when="superseding_tokens_stale",
        do=("accept_refresh", "reset_refresh", "refresh_again"),
    ),
    *(
        row
        for trigger in ("refresh_succeeded", "refresh_superseded")
        for row in (
            _row(
                trigger,
                (S.REFRESHING, S.EXPIRING),
                S.CONNECTED,
                when="session_is_up",
                do=("accept_refresh", "reset_refresh", "arm_timer", "wake_ok"),
            ),
            _row(trigger, S.REFRESHING, S.VALID, do=("accept_refresh", "reset_refresh", "open_session")),
            _row(trigger, S.EXPIRING, S.VALID, do=("accept_refresh", "reset_refresh")),
            _row(
                trigger,
                S.NEEDS_AUTH,
                S.CONNECTED,
                when="session_is_up",
                do=("accept_refresh", "reset_refresh", "arm_timer"),
            ),
            _row(trigger, S.NEEDS_AUTH, S.LAZY, do=("accept_refresh", "reset_refresh")),
            _row(trigger, S.CONNECTED, None, do=("accept_refresh", "reset_refresh", "arm_timer")),
            _row(
                trigger,
                (S.LAZY, S.CONNECTING, S.VALID, S.BROWSER_AUTH, S.FAILED, S.CLOSED),
                None,
                do=("accept_refresh", "reset_refresh"),
            ),
        )
    ),
    # --- a refresh failed --------------------------------------------------------
    _row(
        "refresh_failed",
        S.REFRESHING,
        S.BROWSER_AUTH,
        when=("failure_is_final", "has_waiters"),
        do=("record_refresh_failure", "reset_refresh", "start_authorization"),
    ),
    _row(
        "refresh_failed",
        S.REFRESHING,
        S.NEEDS_AUTH,
        when="failure_is_final",
        do=("record_refresh_failure", "reset_refresh"),
    ),
    _row(
        "refresh_failed",
        S.REFRESHING,
        None,
        when="foreground_retry_allowed",
        do=("record_refresh_failure", "schedule_refresh_retry"),
    ),
    _row(
        "refresh_failed",
        S.REFRESHING,
        S.FAILED,
        do=("record_refresh_failure", "reset_refresh", "fail_unavailable"),
    ),
    _row(
        "refresh_failed",
        S.EXPIRING,
        S.CONNECTED,
        when=("failure_is_final", "session_is_up"),
        do=("record_refresh_failure", "reset_refresh", "arm_timer"),
    ),
    _row(
        "refresh_failed",
        S.EXPIRING,
        S.VALID,
        when="failure_is_final",
        do=("record_refresh_failure", "reset_refresh"),
    ),
    _row("refresh_failed", S.EXPIRING, None, do=("record_refresh_failure", "schedule_refresh_retry")),
    _row(
        "refresh_failed",
        (S.LAZY, S.CONNECTING, S.VALID, S.CONNECTED, S.BROWSER_AUTH, S.NEEDS_AUTH, S.FAILED, S.CLOSED),
        None,
        do=("record_refresh_failure", "reset_refresh"),
    ),
    # --- an authorization answered ----------------------------------------------
    _row(
        "authorization_succeeded",
        S.BROWSER_AUTH,
        S.CONNECTED,
        when="session_is_up",
        do=("append_issued", "clear_scope", "arm_timer", "wake_ok"),
    ),
    _row(
        "authorization_succeeded",
        S.BROWSER_AUTH,
        S.VALID,
        do=("append_issued", "clear_scope", "open_session"),
    ),
    _row(
        "authorization_succeeded",
        S.NEEDS_AUTH,
        S.CONNECTED,
        when="session_is_up",
        do=("append_issued", "arm_timer"),
    ),
    _row("authorization_succeeded", S.NEEDS_AUTH, S.LAZY, do="append_issued"),
    _row("authorization_succeeded", S.CONNECTED, None, do=("append_issued", "arm_timer")),
    _row(
        "authorization_succeeded",
        (S.LAZY, S.CONNECTING, S.VALID, S.EXPIRING, S.REFRESHING, S.FAILED, S.CLOSED),
        None,
        do="append_issued",
    ),
    _row("authorization_failed", S.BROWSER_AUTH, S.NEEDS_AUTH, do="record_authorization_failure"),
    _row("authorization_failed", tuple(s for s in _ALL if s is not S.BROWSER_AUTH), None),
    _row("authorization_timed_out", S.BROWSER_AUTH, S.NEEDS_AUTH, do="record_authorization_failure"),
    _row("authorization_timed_out", tuple(s for s in _ALL if s is not S.BROWSER_AUTH), None),
    # --- the MCP session ----------------------------------------------------------
    _row(
        "session_up", S.VALID, S.CONNECTED, do=("mark_session_up", "reset_failures", "arm_timer", "wake_ok")
    ),
    _row("session_up", S.EXPIRING, None, do=("mark_session_up", "reset_failures", "wake_ok")),
    _row(
        "session_up", (S.CONNECTING, S.REFRESHING, S.BROWSER_AUTH, S.NEEDS_AUTH), None, do="mark_session_up"
    ),
    _row("session_up", S.CONNECTED, None),
    _row("session_up", (S.LAZY, S.FAILED, S.CLOSED), None, do="close_session"),
    _row(
        "session_lost",
        (S.CONNECTED, S.EXPIRING),
        S.FAILED,
        when="session_is_up",
        do=("close_session", "lose_session"),
    ),
    _row("session_lost", (S.VALID, S.EXPIRING), S.FAILED, do=("close_session", "fail_connect")),
    _row("session_lost", S.CONNECTED, S.FAILED, do=("close_session", "lose_session")),
    _row(
        "session_lost",
        (S.CONNECTING, S.REFRESHING, S.BROWSER_AUTH, S.NEEDS_AUTH),
        None,
        do="close_session",
    ),
    _row("session_lost", (S.LAZY, S.FAILED, S.CLOSED), None),
    # --- time passed ------------------------------------------------------------------
    _row(
        "clock_tick",
        (S.VALID, S.CONNECTED),
        S.EXPIRING,
        when=("needs_auth_tokens", "token_expiring"),
        do="start_refresh",
    ),
    _row("clock_tick", S.EXPIRING, S.REFRESHING, when="refresh_in_flight", unless="token_usable"),
    _row(
        "clock_tick",
        _USING,
        S.REFRESHING,
        when=("needs_auth_tokens", "can_refresh"),
        unless="token_usable",
        do="start_refresh",
    ),
    _row(
        "clock_tick",
        _USING,
        S.BROWSER_AUTH,
        when=("needs_auth_tokens", "has_waiters"),
        unless="token_usable",
        do="start_authorization",
    ),
    _row("clock_tick", _USING, S.NEEDS_AUTH, when="needs_auth_tokens", unless="token_usable"),
    _row("clock_tick", (S.EXPIRING, S.REFRESHING), None, when="refresh_retry_due", do="start_refresh"),
    _row("clock_tick", _ALL, None),
    # --- a request succeeded after a 401 -------------------------------------------
    _row("token_accepted", _OPEN, None, do="clear_rejections"),
    _row("token_accepted", S.CLOSED, None),
    # --- the token log failed ------------------------------------------------------------
    _row("storage_failed", _OPEN, S.FAILED, do=("close_session", "fail_storage")),
    _row("storage_failed", S.CLOSED, None),
    # --- configuration and shutdown ------------------------------------------------------
    _row(
        "config_changed",
        _OPEN,
        S.CONNECTING,
        when="has_waiters",
        do=("reset_for_config", "close_session", "load_tokens"),
    ),
    _row("config_changed", _OPEN, S.LAZY, do=("reset_for_config", "close_session")),
    _row("config_changed", S.CLOSED, None),
    _row("config_removed", _OPEN, S.CLOSED, do=("close_session", "wake_removed")),
    _row("config_removed", S.CLOSED, None),
    _row("close", _OPEN, S.CLOSED, do=("close_session", "wake_closed")),
    _row("close", S.CLOSED, None),
)


class _Recovery(enum.Enum):
    """Escalation of a run of 401s: reload/refresh first, then authorize, then fail."""

    NONE = 0
    REFRESHED = 1
    AUTHORIZED = 2


class _Model:
    """The machine's context: data the guards read and the actions change.

    A plain class (``transitions`` injects trigger methods into it). Guards and
    actions receive ``EventData``; the event value is ``data.kwargs["event"]``.
    """

    def __init__(
        self,
        server: str,
        *,
        requires_auth: bool,
        refresh_buffer: float,
        policy: RetryPolicy,
        misconfigured: str | None,
    ) -> None:
        self.server = server
        self.requires_auth = requires_auth
        self.refresh_buffer = refresh_buffer
        self.policy = policy
        self.tokens = TokenState()
        self.now = 0.0
        self.has_session = False
        self.waiters = 0
        self.refresh_in_flight = False
        self.refresh_attempts = 0
        self.refresh_retry_at: float | None = None
        self.rejected_token: str | None = None
        # How far recovery from a run of 401s has escalated (reset when a request succeeds).
        self.rejections = 0
        self.recovery = _Recovery.NONE
        self.pending_scope: str | None = None
        self.step_ups = 0
        self.failures = 0
        self.retry_at: float | None = None
        self.problem: Problem | None = None
        self.misconfigured_reason = misconfigured
        if misconfigured is not None:
            self.problem = Problem(kind=ProblemKind.MISCONFIGURED, message=misconfigured)
        self.last_failure: FailureClass | None = None
        self.commands: list[Command] = []
        self._random = random.Random(zlib.crc32(server.encode("utf-8", "surrogatepass")))
        self.state: State = initial_state(misconfigured=misconfigured is not None)

    # --- helpers -------------------------------------------------------------

    def emit(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def append(self, *events: LogEvent) -> None:
        """Ask for events to be logged, and fold them into the local state."""
        self.tokens = apply_events(self.tokens, events)
        self.emit(AppendLog(events=events))

    def usable(self, state: TokenState) -> bool:
        tokens = state.tokens
        if tokens is None or tokens.access_token == self.rejected_token:
            return False
        return tokens.freshness(self.now, self.refresh_buffer) in (Freshness.VALID, Freshness.EXPIRING)

    def jittered(self, delay: float) -> float:
        return delay * (1.0 + self.policy.jitter * self._random.random())

    def backoff(self, attempt: int, cap: float) -> float:
        """The un-jittered wait before retry number ``attempt`` (0: the first retry): doubling, capped."""
        return min(self.policy.base_backoff * 2.0 ** max(attempt, 0), cap)

    def refresh_delay(self, retry_after: float | None) -> float:
        delay = self.jittered(self.backoff(self.refresh_attempts - 1, self.policy.max_backoff))
        return max(delay, retry_after or 0.0)

    def wake(self, problem: Problem | None) -> None:
        self.waiters = 0
        self.emit(WakeWaiters(problem=problem))

    @staticmethod
    def event(data: EventData) -> Any:
        return data.kwargs["event"]

    # --- guards ----------------------------------------------------------------

    def needs_no_auth(self, data: EventData) -> bool:
        return not self.requires_auth

    def needs_auth_tokens(self, data: EventData) -> bool:
        return self.requires_auth

    def session_is_up(self, data: EventData) -> bool:
        return self.has_session

    def has_waiters(self, data: EventData) -> bool:
        return self.waiters > 0

    def can_refresh(self, data: EventData) -> bool:
        return self.tokens.refresh_token is not None

    def token_usable(self, data: EventData) -> bool:
        return self.usable(self.tokens)

    def superseding_tokens_stale(self, data: EventData) -> bool:
        """The newer tokens on disk are no longer usable, but carry a refresh token to try."""
        event: RefreshSuperseded = self.event(data)
        return not self.usable(event.state) and event.state.refresh_token is not None

    def token_fresh(self, data: EventData) -> bool:
        """Usable, and either outside the refresh window or not refreshable at all."""
        if not self.usable(self.tokens):
            return False
        fresh = self.tokens.freshness(self.now, self.refresh_buffer) is Freshness.VALID
        return fresh or self.tokens.refresh_token is None

    def token_expiring(self, data: EventData) -> bool:
        return (
            self.usable(self.tokens)
            and self.tokens.refresh_token is not None
            and self.tokens.freshness(self.now, self.refresh_buffer) is Freshness.EXPIRING
        )

    def event_tokens_usable(self, data: EventData) -> bool:
        state: TokenState = self.event(data).state
        return self.usable(state)

    def refresh_in_flight_(self, data: EventData) -> bool:
        return self.refresh_in_flight

    def refresh_retry_due(self, data: EventData) -> bool:
        return (
            not self.refresh_in_flight
            and self.refresh_retry_at is not None
            and self.now >= self.refresh_retry_at
        )

    def failure_is_final(self, data: EventData) -> bool:
        event: RefreshFailed = self.event(data)
        return event.failure is not FailureClass.TRANSIENT

    def foreground_retry_allowed(self, data: EventData) -> bool:
        event: RefreshFailed = self.event(data)
        if self.refresh_attempts >= self.policy.max_refresh_attempts:
            return False
        expected = self.backoff(self.refresh_attempts - 1, self.policy.max_backoff)
        return max(expected, event.retry_after or 0.0) <= self.policy.max_foreground_wait

    def rejects_current_token(self, data: EventData) -> bool:
        event: Unauthorized = self.event(data)
        current = self.tokens.tokens.access_token if self.tokens.tokens is not None else None
        return not self.requires_auth or event.access_token is None or event.access_token == current

    def refreshed_since_rejection(self, data: EventData) -> bool:
        return self.recovery is _Recovery.REFRESHED

    def authorized_since_rejection(self, data: EventData) -> bool:
        return self.recovery is _Recovery.AUTHORIZED

    def step_ups_exhausted(self, data: EventData) -> bool:
        return self.step_ups >= self.policy.max_step_ups

    def misconfigured(self, data: EventData) -> bool:
        return self.misconfigured_reason is not None

    def retry_allowed(self, data: EventData) -> bool:
        return self.retry_at is not None and self.now >= self.retry_at

    # --- actions ---------------------------------------------------------------

    def add_waiter(self, data: EventData) -> None:
        self.waiters += 1

    def wake_ok(self, data: EventData) -> None:
        self.wake(None)

    def load_tokens(self, data: EventData) -> None:
        self.emit(LoadTokens(reason=data.event.name))

    def adopt_event_state(self, data: EventData) -> None:
        state: TokenState = self.event(data).state
        self.tokens = state
        if state.tokens is not None or state.client is not None or state.discovery is not None:
            self.requires_auth = True

    def open_session(self, data: EventData) -> None:
        self.emit(OpenSession())

    def close_session(self, data: EventData) -> None:
        self.has_session = False
        self.emit(CloseSession(reason=data.event.name))

    def mark_session_up(self, data: EventData) -> None:
        self.has_session = True

    def start_refresh(self, data: EventData) -> None:
        if self.refresh_in_flight:
            return
        self.refresh_in_flight = True
        self.refresh_attempts += 1
        self.refresh_retry_at = None
        self.emit(StartRefresh(reason=data.event.name))

    def reset_refresh(self, data: EventData) -> None:
        self.refresh_in_flight = False
        self.refresh_attempts = 0
        self.refresh_retry_at = None

    def schedule_refresh_retry(self, data: EventData) -> None:
        event: RefreshFailed = self.event(data)
        at = self.now + self.refresh_delay(event.retry_after)
        expires_at = self.tokens.tokens.expires_at if self.tokens.tokens is not None else None
        if self.state is State.EXPIRING and expires_at is not None:
            at = min(at, expires_at)
        self.refresh_retry_at = at
        self.emit(SetTimer(at=at, purpose="retry refresh"))

    def refresh_again(self, data: EventData) -> None:
        """A refresh due now (the driver's tick starts it): the answer just handled settled nothing."""
        self.refresh_retry_at = self.now
        self.emit(SetTimer(at=self.now, purpose="refresh with the newer refresh token"))

    def accept_refresh(self, data: EventData) -> None:
        event = self.event(data)
        if isinstance(event, RefreshSuperseded):
            self.adopt_event_state(data)
            return
        self.append_issued(data)
        if self.rejections and self.recovery is _Recovery.NONE:
            self.recovery = _Recovery.REFRESHED

    def append_issued(self, data: EventData) -> None:
        event = self.event(data)
        self.append(TokensIssued(tokens=event.tokens, grant=event.grant))
        self.rejected_token = None
        if self.rejections and isinstance(event, AuthorizationSucceeded):
            self.recovery = _Recovery.AUTHORIZED

    def record_refresh_failure(self, data: EventData) -> None:
        event: RefreshFailed = self.event(data)
        self.refresh_in_flight = False
        self.last_failure = event.failure
        final = event.failure is not FailureClass.TRANSIENT
        events: list[LogEvent] = [RefreshFailedEvent(reason=event.reason, final=final)]
        if event.failure is FailureClass.CLIENT_INVALID:
            events.append(ClientInvalidated(reason=event.reason))
        self.append(*events)

    def arm_timer(self, data: EventData) -> None:
        tokens = self.tokens.tokens
        if not self.requires_auth or tokens is None or tokens.expires_at is None:
            return
        if self.tokens.refresh_token is None:
            self.emit(SetTimer(at=tokens.expires_at, purpose="access token expires"))
            return
        refresh_at = tokens.refresh_at(self.refresh_buffer)
        assert refresh_at is not None  # expires_at is known
        lead = tokens.expires_at - refresh_at
        # Spread refreshes of many processes a little, never past expiry.
        at = refresh_at - min(lead * self.policy.jitter * self._random.random(), 30.0)
        self.emit(SetTimer(at=at, purpose="refresh window opens"))

    def authorization_reason(self) -> AuthorizationReason:
        if self.pending_scope is not None:
            return AuthorizationReason.INSUFFICIENT_SCOPE
        if self.recovery is _Recovery.REFRESHED:
            return AuthorizationReason.TOKEN_REJECTED
        if self.tokens.tokens is None:
            return AuthorizationReason.NO_TOKENS
        if self.tokens.refresh_rejected:
            if self.last_failure is FailureClass.CLIENT_INVALID:
                return AuthorizationReason.CLIENT_INVALID
            return AuthorizationReason.REFRESH_REJECTED
        return AuthorizationReason.NO_REFRESH_TOKEN

    def start_authorization(self, data: EventData) -> None:
        reason = self.authorization_reason()
        self.append(AuthorizationStarted(reason=reason.name.lower()))
        self.emit(StartAuthorization(reason=reason, scope=self.pending_scope))

    def record_authorization_failure(self, data: EventData) -> None:
        event = self.event(data)
        reason = getattr(event, "reason", "nobody completed the authorization in time")
        self.append(AuthorizationFailedEvent(reason=reason))
        self.problem = Problem(
            kind=ProblemKind.AUTHORIZATION_REQUIRED,
            message=f"authorization of {self.server!r} did not complete: {reason}",
            url=getattr(event, "url", None),
        )
        self.wake(self.problem)

    def clear_scope(self, data: EventData) -> None:
        self.pending_scope = None

    def note_rejection(self, data: EventData) -> None:
        event = self.event(data)
        if isinstance(event, Unauthorized):
            self.requires_auth = True
            current = self.tokens.tokens
            if current is not None and event.access_token in (None, current.access_token):
                self.rejected_token = current.access_token
                self.rejections += 1
            elif current is None:
                self.rejections += 1

    def clear_rejections(self, data: EventData) -> None:
        self.rejections = 0
        self.recovery = _Recovery.NONE
        self.step_ups = 0

    def note_scope(self, data: EventData) -> None:
        event: InsufficientScope = self.event(data)
        granted = self.tokens.tokens.scopes() if self.tokens.tokens is not None else frozenset()
        wanted = (
            granted | frozenset((event.scope or "").split()) | frozenset((self.pending_scope or "").split())
        )
        self.pending_scope = " ".join(sorted(wanted)) or None
        self.step_ups += 1
        self.requires_auth = True

    def wake_scope_error(self, data: EventData) -> None:
        event: InsufficientScope = self.event(data)
        self.wake(
            Problem(
                kind=ProblemKind.INSUFFICIENT_SCOPE,
                message=(
                    f"{self.server!r} still refuses the call for lack of scope {event.scope or '(unnamed)'} "
                    f"after {self.step_ups} step-up authorizations; check the scopes configured for it"
                ),
            )
        )

    def fail_rejected(self, data: EventData) -> None:
        self.fail(
            f"{self.server!r} keeps rejecting freshly issued tokens (401); "
            "check the server's configuration or log in again with `mcp-tether login`"
        )

    def fail_unavailable(self, data: EventData) -> None:
        event: RefreshFailed = self.event(data)
        self.fail(
            f"could not refresh the tokens of {self.server!r} ({event.reason}); "
            "the stored tokens are kept and the next call tries again",
            minimum=event.retry_after or 0.0,
        )

    def fail_connect(self, data: EventData) -> None:
        self.fail(f"could not connect to {self.server!r}: {self.event(data).cause}")

    def fail_storage(self, data: EventData) -> None:
        self.failures = 0
        self.fail(f"the token log of {self.server!r} failed: {self.event(data).reason}")

    def lose_session(self, data: EventData) -> None:
        self.failures = 0
        self.fail(f"the session with {self.server!r} was lost: {self.event(data).cause}")

    def fail(self, message: str, *, minimum: float = 0.0) -> None:
        """Enter the failed state's data: count the failure, set when to retry, answer waiters."""
        self.failures += 1
        backoff = 0.0
        if self.failures > 1:
            backoff = self.jittered(self.backoff(self.failures - 2, self.policy.max_connect_backoff))
        self.retry_at = self.now + max(backoff, minimum)
        self.problem = Problem(kind=ProblemKind.UNAVAILABLE, message=message, retry_at=self.retry_at)
        if self.waiters:
            self.wake(self.problem)

    def reset_failures(self, data: EventData) -> None:
        self.failures = 0
        self.retry_at = None
        self.problem = None

    def wake_failure(self, data: EventData) -> None:
        problem = self.problem or Problem(
            kind=ProblemKind.UNAVAILABLE, message=f"{self.server!r} is unavailable"
        )
        self.wake(problem)

    def wake_closed(self, data: EventData) -> None:
        self.wake(Problem(kind=ProblemKind.CLOSED, message=closed_message(self.server)))

    def wake_removed(self, data: EventData) -> None:
        self.wake(
            Problem(kind=ProblemKind.REMOVED, message=f"{self.server!r} was removed from the configuration")
        )

    def reset_for_config(self, data: EventData) -> None:
        event: ConfigChanged = self.event(data)
        self.requires_auth = event.requires_auth
        self.misconfigured_reason = None
        self.reset_failures(data)
        self.clear_rejections(data)
        self.clear_scope(data)
        self.rejected_token = None
        # A refresh already sent stays in flight: its answer is logged whatever
        # the state, and no second refresh starts before it arrives.
        self.refresh_attempts = 0
        self.refresh_retry_at = None


def _transitions_config(table: tuple[Row, ...]) -> list[dict[str, Any]]:
    config: list[dict[str, Any]] = []
    for row in table:
        for source in row.sources:
            config.append(
                {
                    "trigger": row.trigger,
                    "source": source,
                    "dest": row.dest,
                    "conditions": [_GUARD_ALIASES.get(c, c) for c in row.conditions],
                    "unless": [_GUARD_ALIASES.get(c, c) for c in row.unless],
                    "after": list(row.actions),
                    "prepare": list(row.prepare),
                }
            )
    return config


#: Guard names that would clash with a data attribute of the same name.
_GUARD_ALIASES = {"refresh_in_flight": "refresh_in_flight_"}
#: The private transitions machine every ConnectionMachine's model is added to.
class _TableMachine(Machine):
    """A ``transitions`` machine that binds nothing to a model but ``trigger``.

    ``Machine.add_model`` otherwise binds a method per trigger, a ``may_``
    method per trigger and an ``is_`` method per state to every model: about
    fifty partials (some 15 KiB per connection) that nothing here calls; the
    driver fires events only through ``model.trigger(name, event=...)``.
    """

    def _add_trigger_to_model(self, trigger: str, model: Any) -> None:
        return None

    def _add_model_to_state(self, state: Any, model: Any) -> None:
        return None


_MACHINE = _TableMachine(
    model=None,
    states=State,
    transitions=_transitions_config(TABLE),
    initial=State.LAZY,
    auto_transitions=False,
    send_event=True,
    ignore_invalid_triggers=False,
)


def callback_names(table: tuple[Row, ...] = TABLE) -> frozenset[str]:
    """Every model attribute name the table refers to (guards, actions, prepares)."""
    names: set[str] = set()
    for row in table:
        names.update(_GUARD_ALIASES.get(c, c) for c in (*row.conditions, *row.unless))
        names.update(row.actions)
        names.update(row.prepare)
    return frozenset(names)


class ConnectionMachine:
    """One server's connection state machine.

    Args:
        server: the configured server name (used in messages only).
        requires_auth: whether the server is known to need OAuth. An HTTP server
            not known to need it becomes an OAuth server on its first 401, or
            when its token log holds tokens.
        refresh_buffer: seconds before expiry that tokens are refreshed.
        policy: retry and step-up bounds.
        misconfigured: a reason the configuration entry is unusable; the
            machine then starts in ``failed`` and answers every caller with it
            until the configuration changes.
    """

    def __init__(
        self,
        server: str,
        *,
        requires_auth: bool,
        refresh_buffer: float = DEFAULT_REFRESH_BUFFER,
        policy: RetryPolicy | None = None,
        misconfigured: str | None = None,
    ) -> None:
        self._model = _Model(
            server,
            requires_auth=requires_auth,
            refresh_buffer=refresh_buffer,
            policy=policy or RetryPolicy(),
            misconfigured=misconfigured,
        )
        # One transitions machine, built once from the table, serves every connection's model.
        self._machine = _MACHINE
        _MACHINE.add_model(self._model, initial=self._model.state)
        weakref.finalize(self, _MACHINE.remove_model, self._model)

    @property
    def server(self) -> str:
        return self._model.server

    @property
    def state(self) -> State:
        state: State = self._model.state
        return state

    @property
    def tokens(self) -> TokenState:
        """The token state as the machine knows it (the fold of the log it read and appended)."""
        return self._model.tokens

    @property
    def now(self) -> float:
        """The wall-clock time of the last tick."""
        return self._model.now

    @property
    def waiters(self) -> int:
        return self._model.waiters

    @property
    def session_up(self) -> bool:
        return self._model.has_session

    @property
    def refresh_in_flight(self) -> bool:
        return self._model.refresh_in_flight

    @property
    def requires_auth(self) -> bool:
        return self._model.requires_auth

    @property
    def problem(self) -> Problem | None:
        """The last problem callers were answered with (None once connected)."""
        return self._model.problem

    @property
    def awaiting_acceptance(self) -> bool:
        """True after a 401 until a request succeeds (the driver then feeds TokenAccepted)."""
        return self._model.rejections > 0

    def bearer(self) -> str | None:
        """The access token a request may carry now, or None (expired, rejected, absent)."""
        model = self._model
        if not model.usable(model.tokens):
            return None
        assert model.tokens.tokens is not None
        return model.tokens.tokens.access_token

    def handle(self, event: Event) -> list[Command]:
        """Feed one event; return the commands to execute, in order."""
        model = self._model
        model.commands = []
        if isinstance(event, ClockTick):
            model.now = event.now
        model.trigger(event.trigger, event=event)  # type: ignore[attr-defined]  # injected by transitions
        commands, model.commands = model.commands, []
        return commands

    def __repr__(self) -> str:
        return f"<ConnectionMachine {self.server!r} {self.state.value}>"
