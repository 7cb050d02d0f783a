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
``read() -> TokenState`` and ``append(events, at)``; :class:`TokenStoreLog`
is the real file store in a temporary directory, where the simulation can
also tear an append in half (a crash mid-write) and check nothing is lost.

:func:`simulation_class` builds a variant with more processes sharing the log:
each extra process has its own real machine, driven to completion at once by
a driver that keeps the refresh lock discipline (re-read the log under the
lock, adopt tokens another process issued, refresh only when still stale), and
can crash and restart at any step. Every process is held to the invariants
that apply to it (no expired token offered, browser only as the last resort).

:func:`run_simulation` runs it with a given seed (reproducible) and returns a
:class:`SimulationReport`: the invariants checked, counts, and on a violation
the minimal failing sequence Hypothesis found.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mcp_tether.adapters.token_store import TokenStore
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
from mcp_tether.statemachine.tokenlog import LogEvent, LogRecord, TokensIssued, apply_events, fold
from mcp_tether.statemachine.tokens import Freshness, TokenSet, TokenState

__all__ = [
    "INVARIANTS",
    "MAX_PROCESSES",
    "ConnectionSimulation",
    "InvariantViolation",
    "MemoryLog",
    "ModelAuthorizationServer",
    "SimulatedLog",
    "SimulationCounts",
    "SimulationReport",
    "TokenStoreLog",
    "run_simulation",
    "simulation_class",
]

#: The invariants checked after every step, as :func:`run_simulation` reports them.
INVARIANTS: tuple[str, ...] = (
    "no process ever offers an expired or rejected access token to a request",
    "a browser authorization happens only as the last resort, and only while a caller waits",
    "at most one refresh is in flight per process, and the machine and its driver agree on it",
    "every waiting caller has an operation or a timer that will answer it",
    "the token state equals the fold (and a fresh replay) of the token log",
    "a process restarted from the log loses no token a request was sent with (the log is written first)",
)

START = 1_800_000_000.0
#: Most processes a simulation runs against one token log.
MAX_PROCESSES = 16


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


class TokenStoreLog:
    """The real token log (:class:`~mcp_tether.adapters.token_store.TokenStore`) in a directory.

    Args:
        token_dir: where the log lives (the caller owns and removes it).
        server: the server name the log belongs to.
    """

    def __init__(self, token_dir: Path, server: str = "sim") -> None:
        self.token_dir = token_dir
        self.log = TokenStore(token_dir).log(server)
        #: Warnings the store gave while reading (torn tails it repaired).
        self.warnings: list[str] = []

    def read(self) -> TokenState:
        replay = self.log.read()
        self.warnings.extend(replay.warnings)
        return replay.state

    def append(self, events: Sequence[LogEvent], at: float) -> None:
        self.log.append(events, at=at)

    def tear(self, data: bytes) -> None:
        """Leave a partial line at the end of the log, as a crash during an append does."""
        fd = os.open(self.log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@attrs.define
class SimulationCounts:
    """What happened during a simulation run, summed over all examples."""

    examples: int = 0
    steps: int = 0
    refreshes: int = 0
    authorizations: int = 0
    reuse_detections: int = 0
    restarts: int = 0
    torn_appends: int = 0
    peer_actions: int = 0


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

    #: Extra processes sharing the log (see :func:`simulation_class`).
    peer_count: ClassVar[int] = 0
    #: Use the real token log in a temporary directory instead of a list.
    real_log: ClassVar[bool] = False
    #: Where every instance adds what happened (replace it to collect per run).
    counts: ClassVar[SimulationCounts] = SimulationCounts()

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.token_dir: Path | None = None
        if self.real_log:
            self.token_dir = Path(tempfile.mkdtemp(prefix="mcp-tether-sim-"))
            self.log: SimulatedLog = TokenStoreLog(self.token_dir / "tokens")
        else:
            self.log = MemoryLog()
        self.server = ModelAuthorizationServer()
        self.machine = ConnectionMachine("sim", requires_auth=True)
        self.peers = [ConnectionMachine("sim", requires_auth=True) for _ in range(self.peer_count)]
        self.reset_process()
        self.trace: list[str] = []
        self.counts.examples += 1

    def teardown(self) -> None:
        self.counts.refreshes += self.server.refreshes
        self.counts.authorizations += self.server.authorizations
        self.counts.reuse_detections += self.server.reuse_detections
        if self.token_dir is not None:
            shutil.rmtree(self.token_dir, ignore_errors=True)

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
        self.counts.steps += 1
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
                    self.expected = apply_events(self.expected, events)
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
        superseded = self.superseded(sent)
        if superseded is not None:
            self.feed(superseded)
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
        self.counts.restarts += 1
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

    # --- rules: other processes sharing the log -------------------------------------------

    def drive_peer(self, index: int, event: Event) -> None:
        """Feed a peer process one event and execute its commands to completion, under the lock discipline."""
        machine = self.peers[index]
        queue: deque[Event] = deque([event])
        wrote = False
        for _ in range(64):  # bounded: a use settles in a handful of steps
            if not queue:
                break
            commands = machine.handle(queue.popleft())
            self.counts.steps += 1
            for command in commands:
                match command:
                    case LoadTokens():
                        queue.append(TokensLoaded(state=self.log.read()))
                    case StartRefresh():
                        queue.append(self.refresh_under_lock(machine))
                    case StartAuthorization(reason=reason):
                        if reason is not AuthorizationReason.INSUFFICIENT_SCOPE and machine.tokens.refresh_token:
                            raise InvariantViolation(
                                f"process {index + 2}: authorization ({reason.name}) although a usable refresh "
                                "token exists"
                            )
                        queue.append(AuthorizationSucceeded(tokens=self.server.authorize(self.now)))
                    case OpenSession():
                        queue.append(SessionUp())
                    case AppendLog(events=events):
                        self.log.append(events, self.now)
                        wrote = wrote or any(isinstance(item, TokensIssued) for item in events)
                    case _:
                        pass
            bearer = machine.bearer()
            if bearer is not None and machine.tokens.freshness(self.now) is Freshness.EXPIRED:
                raise InvariantViolation(f"process {index + 2}: an expired access token is offered to requests")
        if wrote:
            self.others_wrote = True
            self.feed(TokensChanged(state=self.log.read()))

    def superseded(self, sent: str | None) -> RefreshSuperseded | None:
        """The log holds a newer refresh token than ``sent`` (another process refreshed): adopt it."""
        on_disk = self.log.read()
        if on_disk.refresh_token is not None and on_disk.refresh_token != sent:
            return RefreshSuperseded(state=on_disk)
        return None

    def refresh_under_lock(self, machine: ConnectionMachine) -> Event:
        """The refresh protocol: re-read the log; adopt newer tokens; otherwise refresh what is stored."""
        sent = machine.tokens.refresh_token
        superseded = self.superseded(sent)
        if superseded is not None:
            return superseded
        if sent is None:
            raise InvariantViolation("a refresh started without a refresh token")
        tokens = self.server.refresh(sent, self.now)
        if tokens is None:
            return RefreshFailed(failure=FailureClass.FINAL, reason="invalid_grant")
        return RefreshSucceeded(tokens=tokens)

    @precondition(lambda self: bool(self.peers))
    @rule(index=st.integers(min_value=0, max_value=MAX_PROCESSES - 1), action=st.sampled_from(["use", "tick", "crash"]))
    def peer_acts(self, index: int, action: str) -> None:
        index %= len(self.peers)
        self.counts.peer_actions += 1
        if action == "crash":
            self.peers[index] = ConnectionMachine("sim", requires_auth=True)
            self.counts.restarts += 1
        elif action == "tick":
            self.drive_peer(index, ClockTick(now=self.now))
        else:
            self.drive_peer(index, ClockTick(now=self.now))
            self.drive_peer(index, UseRequested())

    @precondition(lambda self: isinstance(self.log, TokenStoreLog) and self.log.log.path.exists())
    @rule(cut=st.integers(min_value=1, max_value=60))
    def append_torn_by_a_crash(self, cut: int) -> None:
        assert isinstance(self.log, TokenStoreLog)
        self.log.tear(b'{"v":1,"seq":999,"at":1,"server":"sim","kind":"tokens_issued","data":{"tokens":'[:cut])
        self.counts.torn_appends += 1
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


def strip_seq(state: TokenState) -> TokenState:
    return attrs.evolve(state, last_seq=0)


def simulation_class(*, processes: int = 1, real_log: bool = False) -> type[ConnectionSimulation]:
    """A :class:`ConnectionSimulation` with ``processes`` processes sharing one log.

    Args:
        processes: how many processes share the token log (1 to :data:`MAX_PROCESSES`); the first is
            driven step by step, the others act atomically under the lock discipline.
        real_log: use the real file store in a temporary directory.

    Returns:
        A new subclass (its ``TestCase`` runs it under pytest).

    Raises:
        ValueError: ``processes`` is out of range.
    """
    if not 1 <= processes <= MAX_PROCESSES:
        raise ValueError(f"processes must be between 1 and {MAX_PROCESSES}, not {processes}")
    return type(
        f"ConnectionSimulation{processes}P{'File' if real_log else ''}",
        (ConnectionSimulation,),
        {"peer_count": processes - 1, "real_log": real_log, "__module__": __name__},
    )


@attrs.frozen(kw_only=True)
class SimulationReport:
    """The outcome of :func:`run_simulation`."""

    seed: int
    ok: bool
    counts: SimulationCounts
    invariants: tuple[str, ...] = INVARIANTS
    #: The violated invariant's message (None when all held).
    failure: str | None = None
    #: The minimal failing sequence of steps Hypothesis found, one per line.
    minimal_example: tuple[str, ...] = ()


@contextlib.contextmanager
def _collecting(cls: type[ConnectionSimulation], counts: SimulationCounts) -> Iterator[None]:
    previous = cls.counts
    cls.counts = counts
    try:
        yield
    finally:
        cls.counts = previous


def run_simulation(
    *,
    steps: int = 50,
    examples: int = 100,
    make: Callable[[], ConnectionSimulation] | None = None,
    seed: int = 0,
    processes: int = 1,
    real_log: bool = False,
    counts: SimulationCounts | None = None,
) -> SimulationReport:
    """Run the simulation; the same arguments give the same run.

    Args:
        steps: longest sequence of steps per example.
        examples: how many sequences to try.
        make: the simulation factory; default :func:`simulation_class` of
            ``processes`` and ``real_log``.
        seed: the random seed (runs are reproducible; no example database is used).
        processes: processes sharing the log (when ``make`` is None).
        real_log: use the real token log in a temporary directory (when ``make`` is None).
        counts: where to add counts while running (to show progress from another thread).

    Returns:
        The report; ``ok`` False with the minimal failing sequence on a violation.
    """
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as with_seed
    from hypothesis.reporting import with_reporter
    from hypothesis.stateful import get_state_machine_test

    factory: Any = make or simulation_class(processes=processes, real_log=real_log)
    counts = counts if counts is not None else SimulationCounts()
    test = get_state_machine_test(
        factory,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
            # The explain phase reruns the failure many times to annotate lines; too slow for a report.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        ),
    )
    test = with_seed(seed)(test)
    reported: list[str] = []

    def report(value: object) -> None:
        reported.append(str(value))

    owner = factory if isinstance(factory, type) else ConnectionSimulation
    with _collecting(owner, counts), with_reporter(report):
        try:
            test()
        except Exception as error:  # any exception is a failure the report must show
            failure = str(error) if isinstance(error, InvariantViolation) else f"{type(error).__name__}: {error}"
            return SimulationReport(
                seed=seed,
                ok=False,
                counts=counts,
                failure=failure,
                minimal_example=tuple(
                    line
                    for text in [*reported, *getattr(error, "__notes__", ())]
                    for line in str(text).splitlines()
                    if line.strip()
                ),
            )
    return SimulationReport(seed=seed, ok=True, counts=counts)
