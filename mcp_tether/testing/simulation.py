"""A Hypothesis-driven simulation of one server's connection under adversity.

:class:`ConnectionSimulation` is a ``RuleBasedStateMachine`` that drives the
real :class:`~mcp_tether.statemachine.machine.ConnectionMachine` with a fake
clock, a model authorization server (success, transient failures,
``invalid_grant``, slow answers, rotating refresh tokens with reuse detection),
other processes refreshing the same log, crashes and restarts, and checks the
design's invariants after every step:

* never an expired (or rejected) access token offered to a request;
* a browser authorization only as the last resort, and only while a caller waits;
* at most one refresh in flight;
* every waiting caller has an operation or a timer that will answer it;
* the machine's token state equals the fold of the log it read and appended.

Executor authors can subclass it, or run it through :func:`run_simulation`.
The token log is pluggable: an in-memory list by default, or any object with
``read() -> TokenState`` and ``append(events, at)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mcp_tether.statemachine.commands import (
    AppendLog,
    AuthorizationReason,
    Command,
    LoadTokens,
    OpenSession,
    SetTimer,
    StartAuthorization,
    StartRefresh,
    WakeWaiters,
)
from mcp_tether.statemachine.events import (
    AuthorizationFailed,
    AuthorizationSucceeded,
    AuthorizationTimedOut,
    ClockTick,
    Close,
    ConfigChanged,
    Event,
    InsufficientScope,
    RefreshFailed,
    RefreshSucceeded,
    RefreshSuperseded,
    SessionLost,
    SessionUp,
    TokenAccepted,
    TokensChanged,
    TokensLoaded,
    Unauthorized,
    UseRequested,
)
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.machine import SESSION_STATES, STABLE_STATES, ConnectionMachine, State
from mcp_tether.statemachine.tokenlog import LogEvent, LogRecord, TokensIssued, apply_event, fold
from mcp_tether.statemachine.tokens import Freshness, TokenSet, TokenState

__all__ = [
    "ConnectionSimulation",
    "InvariantViolation",
    "MemoryLog",
    "ModelAuthorizationServer",
    "SimulatedLog",
]

START = 1_800_000_000.0


class InvariantViolation(AssertionError):
    """One of the design's invariants did not hold."""


class SimulatedLog(Protocol):
    """The part of a token log the simulation needs."""

    def read(self) -> TokenState: ...

    def append(self, events: Sequence[LogEvent], at: float) -> None: ...


@attrs.define
class MemoryLog:
    """An in-memory token log (a list of records)."""

    records: list[LogRecord] = attrs.Factory(list)

    def read(self) -> TokenState:
        return fold(self.records)

    def append(self, events: Sequence[LogEvent], at: float) -> None:
        for event in events:
            self.records.append(LogRecord(seq=len(self.records) + 1, at=at, event=event))


@attrs.define
class ModelAuthorizationServer:
    """Strict refresh-token rotation with reuse detection, as the worst real servers do."""

    lifetime: float = 3600.0
    rotate: bool = True
    generation: int = 0
    current_refresh: str | None = None
    refreshes: int = 0
    reuse_detections: int = 0
    authorizations: int = 0

    def issue(self, now: float) -> TokenSet:
        self.generation += 1
        self.current_refresh = f"rt-{self.generation}"
        return TokenSet(
            access_token=f"at-{self.generation}",
            refresh_token=self.current_refresh,
            issued_at=now,
            expires_in=self.lifetime,
        )

    def authorize(self, now: float) -> TokenSet:
        self.authorizations += 1
        return self.issue(now)

    def refresh(self, refresh_token: str, now: float) -> TokenSet | None:
        """New tokens, or None for ``invalid_grant`` (a reused token revokes the family)."""
        self.refreshes += 1
        if refresh_token != self.current_refresh:
            self.reuse_detections += 1
            self.current_refresh = None
            return None
        if not self.rotate:
            self.generation += 1
            return TokenSet(
                access_token=f"at-{self.generation}",
                refresh_token=None,
                issued_at=now,
                expires_in=self.lifetime,
            )
        return self.issue(now)


_DELTAS = st.sampled_from([0.0, 0.5, 1.0, 5.0, 30.0, 200.0, 1700.0, 3000.0, 3400.0, 3599.0, 3600.0, 7200.0,
                           86_400.0, -60.0, -3600.0])


class ConnectionSimulation(RuleBasedStateMachine):
    """Drives one connection machine through random sequences and checks the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.log: SimulatedLog = MemoryLog()
        self.server = ModelAuthorizationServer()
        self.machine = ConnectionMachine("sim", requires_auth=True)
        self.reset_process()
        self.trace: list[str] = []

    # --- the simulated driver ------------------------------------------------------

    def reset_process(self) -> None:
        self.pending_load = False
        self.pending_refresh: str | None = None  # the refresh token sent, once started
        self.refresh_sent = False
        self.pending_authorization = False
        self.pending_open = False
        self.timer_at: float | None = None
        self.waiters = 0
        self.expected: TokenState | None = None
        self.others_wrote = False
        self.authorization_ok_reasons: set[AuthorizationReason] = set()
        self.refreshed_since_401 = False
        self.asked_scope = False

    def feed(self, event: Event) -> list[Command]:
        self.trace.append(f"{self.machine.state.value} <- {type(event).__name__}")
        if isinstance(event, UseRequested | Unauthorized | InsufficientScope):
            self.waiters += 1
        adopts = isinstance(event, RefreshSuperseded) or (
            isinstance(event, TokensLoaded) and self.machine.state is State.CONNECTING
        )
        if adopts:
            assert isinstance(event, TokensLoaded | RefreshSuperseded)
            self.expected = event.state
            self.others_wrote = False
        commands = self.machine.handle(event)
        for command in commands:
            self.execute(command)
        return commands

    def execute(self, command: Command) -> None:
        match command:
            case LoadTokens():
                self.pending_load = True
            case StartRefresh():
                if self.pending_refresh is not None:
                    raise InvariantViolation("a second refresh started while one was in flight")
                refresh_token = self.machine.tokens.refresh_token
                if refresh_token is None:
                    raise InvariantViolation("a refresh started without a refresh token")
                self.pending_refresh = refresh_token
            case StartAuthorization(reason=reason):
                self.check_authorization_allowed(reason)
                self.pending_authorization = True
            case OpenSession():
                self.check_usable("OpenSession")
                self.pending_open = True
            case AppendLog(events=events):
                self.log.append(events, self.now)
                if self.expected is not None:
                    self.expected = fold_events(self.expected, events)
            case WakeWaiters(problem=problem):
                if problem is None:
                    self.check_usable("WakeWaiters(ok)")
                self.waiters = 0
            case SetTimer(at=at):
                self.timer_at = at
            case _:
                pass

    def check_usable(self, what: str) -> None:
        if not self.machine.requires_auth:
            return
        if self.machine.bearer() is None and self.machine.state in SESSION_STATES:
            raise InvariantViolation(f"{what} in {self.machine.state.value} without a usable token")

    def check_authorization_allowed(self, reason: AuthorizationReason) -> None:
        if self.machine.waiters == 0:
            raise InvariantViolation("authorization started with no caller waiting (background)")
        refresh_token = self.machine.tokens.refresh_token
        if reason in {
            AuthorizationReason.NO_TOKENS,
            AuthorizationReason.NO_REFRESH_TOKEN,
            AuthorizationReason.REFRESH_REJECTED,
            AuthorizationReason.CLIENT_INVALID,
        } and refresh_token is not None:
            raise InvariantViolation(f"authorization ({reason.name}) although a usable refresh token exists")
        if reason is AuthorizationReason.TOKEN_REJECTED and not self.refreshed_since_401:
            raise InvariantViolation("authorization after a 401 without trying a refresh first")
        if reason is AuthorizationReason.INSUFFICIENT_SCOPE and not self.asked_scope:
            raise InvariantViolation("step-up authorization without an insufficient_scope answer")

    # --- rules: the world ---------------------------------------------------------------

    @initialize(lifetime=st.sampled_from([5.0, 60.0, 600.0, 3600.0]), rotate=st.booleans(),
                preloaded=st.booleans())
    def setup(self, lifetime: float, rotate: bool, preloaded: bool) -> None:
        self.server.lifetime = lifetime
        self.server.rotate = rotate
        if preloaded:
            self.log.append([TokensIssued(tokens=self.server.authorize(self.now - 10), grant="authorization_code")],
                            self.now)
        self.feed(ClockTick(now=self.now))

    @rule(delta=_DELTAS)
    def time_passes(self, delta: float) -> None:
        self.now += delta
        self.feed(ClockTick(now=self.now))

    @precondition(lambda self: self.timer_at is not None)
    @rule()
    def timer_fires(self) -> None:
        assert self.timer_at is not None
        self.now = max(self.now, self.timer_at)
        self.timer_at = None
        self.feed(ClockTick(now=self.now))

    @rule()
    def caller_uses_server(self) -> None:
        self.feed(UseRequested())

    @precondition(lambda self: self.pending_load)
    @rule()
    def log_read_completes(self) -> None:
        self.pending_load = False
        self.feed(TokensLoaded(state=self.log.read()))

    @precondition(lambda self: self.pending_refresh is not None)
    @rule(outcome=st.sampled_from(["wire", "transient", "retry_after", "lost_answer"]))
    def refresh_completes(self, outcome: str) -> None:
        sent = self.pending_refresh
        assert sent is not None
        self.pending_refresh = None
        # The driver's protocol: under the lock, re-read the log; adopt newer tokens.
        on_disk = self.log.read()
        if on_disk.refresh_token is not None and on_disk.refresh_token != sent:
            self.feed(RefreshSuperseded(state=on_disk))
            return
        if outcome == "transient":
            self.feed(RefreshFailed(failure=FailureClass.TRANSIENT, reason="HTTP 503"))
            return
        if outcome == "retry_after":
            self.feed(RefreshFailed(failure=FailureClass.TRANSIENT, reason="HTTP 429", retry_after=20.0))
            return
        tokens = self.server.refresh(sent, self.now)
        if outcome == "lost_answer" and tokens is not None:
            # The server rotated but the answer never arrived (a timeout).
            self.feed(RefreshFailed(failure=FailureClass.TRANSIENT, reason="read timeout"))
            return
        if tokens is None:
            self.feed(RefreshFailed(failure=FailureClass.FINAL, reason="invalid_grant"))
            return
        self.refreshed_since_401 = True
        self.feed(RefreshSucceeded(tokens=tokens))

    @precondition(lambda self: self.pending_authorization)
    @rule(outcome=st.sampled_from(["approved", "approved", "denied", "timeout", "other_process"]))
    def authorization_completes(self, outcome: str) -> None:
        self.pending_authorization = False
        if outcome == "approved":
            self.asked_scope = False
            self.feed(AuthorizationSucceeded(tokens=self.server.authorize(self.now)))
        elif outcome == "denied":
            self.feed(AuthorizationFailed(reason="access_denied"))
        elif outcome == "timeout":
            self.feed(AuthorizationTimedOut())
        else:
            self.log.append([TokensIssued(tokens=self.server.authorize(self.now), grant="authorization_code")],
                            self.now)
            self.others_wrote = True
            self.feed(TokensChanged(state=self.log.read()))

    @precondition(lambda self: self.pending_open)
    @rule(up=st.booleans())
    def session_open_completes(self, up: bool) -> None:
        self.pending_open = False
        self.feed(SessionUp() if up else SessionLost(cause="connection refused"))

    @precondition(lambda self: self.machine.state in SESSION_STATES and self.machine.session_up)
    @rule(stale=st.booleans())
    def request_rejected(self, stale: bool) -> None:
        token = self.machine.bearer()
        if stale:
            token = "at-0"
        if not stale and token is not None and not self.machine.awaiting_acceptance:
            self.refreshed_since_401 = False
        self.feed(Unauthorized(access_token=token, www_authenticate='Bearer error="invalid_token"'))

    @precondition(lambda self: self.machine.state in SESSION_STATES and self.machine.session_up)
    @rule()
    def request_needs_scope(self) -> None:
        self.asked_scope = True
        self.feed(InsufficientScope(scope="admin"))

    @precondition(lambda self: self.machine.awaiting_acceptance and self.machine.bearer() is not None)
    @rule()
    def request_accepted(self) -> None:
        self.feed(TokenAccepted())

    @precondition(lambda self: self.machine.session_up)
    @rule()
    def session_drops(self) -> None:
        self.feed(SessionLost(cause="server restarted"))

    @rule()
    def other_process_refreshes(self) -> None:
        on_disk = self.log.read()
        if on_disk.refresh_token is None:
            return
        tokens = self.server.refresh(on_disk.refresh_token, self.now)
        if tokens is None:
            return
        self.log.append([TokensIssued(tokens=tokens, grant="refresh_token")], self.now)
        self.others_wrote = True
        self.feed(TokensChanged(state=self.log.read()))

    @rule(answered=st.booleans())
    def process_restarts(self, answered: bool) -> None:
        if self.pending_refresh is not None and answered:
            # Crash after the server rotated but before the answer was logged.
            self.server.refresh(self.pending_refresh, self.now)
        self.machine = ConnectionMachine("sim", requires_auth=True)
        self.reset_process()
        self.feed(ClockTick(now=self.now))

    @rule()
    def configuration_changes(self) -> None:
        self.pending_open = False
        self.feed(ConfigChanged(requires_auth=True))

    @rule()
    def pool_closes(self) -> None:
        self.feed(Close())

    @precondition(lambda self: self.machine.state is State.CLOSED)
    @rule()
    def pool_reopens(self) -> None:
        self.process_restarts(answered=False)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def never_an_expired_token(self) -> None:
        bearer = self.machine.bearer()
        tokens = self.machine.tokens.tokens
        if bearer is not None:
            assert tokens is not None
            if tokens.freshness(self.now) is Freshness.EXPIRED:
                raise InvariantViolation("an expired access token is offered to requests")
        if self.machine.state in SESSION_STATES and self.machine.requires_auth and bearer is None:
            raise InvariantViolation(f"{self.machine.state.value} without a usable access token")

    @invariant()
    def waiters_are_answered(self) -> None:
        if self.machine.waiters != self.waiters:
            raise InvariantViolation(f"machine counts {self.machine.waiters} waiters, driver {self.waiters}")
        state = self.machine.state
        settled = state in STABLE_STATES or (state is State.EXPIRING and self.machine.session_up)
        if settled and self.waiters:
            raise InvariantViolation(f"{self.waiters} callers left waiting in {state.value}")
        if self.waiters and not (
            self.pending_load
            or self.pending_refresh is not None
            or self.pending_authorization
            or self.pending_open
            or self.timer_at is not None
        ):
            raise InvariantViolation(f"callers wait in {state.value} but nothing will answer them")

    @invariant()
    def one_refresh_in_flight(self) -> None:
        if self.machine.refresh_in_flight != (self.pending_refresh is not None):
            raise InvariantViolation("the machine and the driver disagree on the refresh in flight")

    @invariant()
    def state_is_the_fold_of_the_log(self) -> None:
        if self.expected is None or self.others_wrote:
            return
        if strip_seq(self.machine.tokens) != strip_seq(self.expected):
            raise InvariantViolation("the machine's token state differs from the fold of its log")
        if strip_seq(self.machine.tokens) != strip_seq(self.log.read()):
            raise InvariantViolation("the machine's token state differs from a replay of the log")


def fold_events(state: TokenState, events: Sequence[LogEvent]) -> TokenState:
    for event in events:
        state = apply_event(state, event)
    return state


def strip_seq(state: TokenState) -> TokenState:
    return attrs.evolve(state, last_seq=0)


def run_simulation(
    *,
    steps: int = 50,
    examples: int = 100,
    make: Callable[[], ConnectionSimulation] | None = None,
) -> None:
    """Run the simulation; raises the minimal failing example's error on a violation."""
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    factory = make or ConnectionSimulation
    run_state_machine_as_test(
        factory,
        settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                          print_blob=False),
    )
