"""The driver of one server's connection: pumps events into its state machine and
executes the commands that come out.

Theory of operation
===================

All decisions are the machine's. This module only does what commands say, and
turns what happens (a log read, an HTTP answer, a session coming up, a timer)
into events. Events are handled one at a time under an asyncio lock, and a
batch's commands run in order, so an ``AppendLog`` is on disk before the
``WakeWaiters`` or ``OpenSession`` after it runs.

The cross-process protocol for a refresh or an authorization: a dedicated thread
takes the server's file lock and holds it while the event loop re-reads the log
(another process may have refreshed a moment ago), makes the HTTP requests,
feeds the outcome to the machine and appends what the machine asks, through the
held lock. Only then is the lock released. Long operations (a person in a
browser) never block the event loop, and the lock never spans a tool call.

Requests carry the token through ``mcp_tether.session.TetherAuth`` (an ``httpx2.Auth``), which
holds no lock across a request: concurrent calls on one session run concurrently.
A 401 or 403 ``insufficient_scope`` is reported to the machine, the request waits
for a new token (or a clear error) and is retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from mcp_tether.adapters.config import HttpServer, ServerConfig
from mcp_tether.adapters.oauth_settings import OAuthSettings
from mcp_tether.adapters.token_store import LockedLog, ServerLog, TokenLogError
from mcp_tether.errors import AuthorizationRequired, ServerUnavailable, TetherError, describe
from mcp_tether.statemachine.commands import (
    AppendLog,
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
    AuthorizationFailed,
    AuthorizationSucceeded,
    AuthorizationTimedOut,
    ClockTick,
    Close,
    Event,
    InsufficientScope,
    RefreshFailed,
    RefreshSucceeded,
    RefreshSuperseded,
    SessionLost,
    SessionUp,
    StorageFailed,
    TokenAccepted,
    TokensChanged,
    TokensLoaded,
    Unauthorized,
    UseRequested,
)
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.machine import ConnectionMachine, State
from mcp_tether.statemachine.tokenlog import ClientRegistered, DiscoveryRecorded, LogEvent
from mcp_tether.statemachine.tokens import Freshness, TokenState

if TYPE_CHECKING:  # the MCP and HTTP stacks load with the first session (mcp_tether.session)
    import httpx2
    from mcp.client.session import ClientSession

    from mcp_tether.adapters.oauth import OAuthClient
    from mcp_tether.pool import ConnectionOptions

__all__ = ["Connection", "SharedTransport", "TransitionRecord"]

_log = logging.getLogger("mcp_tether")

#: Seconds to wait for another process's refresh or authorization to finish.
LOCK_WAIT = 30.0
#: Seconds to open a transport and initialize the MCP session.
CONNECT_TIMEOUT = 30.0
#: Seconds a caller waits for a connection that needs no person.
WAIT_TIMEOUT = 90.0


_FRESH = frozenset({Freshness.VALID})
_DUE = frozenset({Freshness.EXPIRING, Freshness.EXPIRED})
_UNEXPIRED = frozenset({Freshness.VALID, Freshness.EXPIRING})


class SharedTransport:
    """One HTTP connection pool for every server of a pool, created on first use."""

    def __init__(self) -> None:
        self._transport: httpx2.AsyncHTTPTransport | None = None

    def get(self) -> httpx2.AsyncBaseTransport:
        import httpx2  # loaded with the first HTTP session, not when the pool is built

        if self._transport is None:
            self._transport = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=200))
        return self._transport

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()


@attrs.frozen(kw_only=True)
class TransitionRecord:
    """One handled event, for live timelines (``ServerPool.from_config(on_transition=...)``)."""

    server: str
    before: str
    event: str
    after: str
    at: float
    note: str = ""


class Connection:
    """Drives one configured server's :class:`ConnectionMachine`.

    Args:
        config: the server's configuration entry.
        log: its token log (creating it did no IO).
        transport: the shared HTTP transport (one connection pool for all servers).
        options: what every connection of the pool shares (clock, timeouts, callbacks).
        interactive: whether a browser may be opened for a waiting caller.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        log: ServerLog,
        transport: SharedTransport,
        options: ConnectionOptions,
        interactive: bool = True,
    ) -> None:
        self.config = config
        self.name = config.name
        self.log = log
        self.options = options
        self.interactive = interactive
        transport_config = config.transport
        requires_auth = isinstance(transport_config, HttpServer) and transport_config.requires_auth
        self.machine = ConnectionMachine(
            self.name, requires_auth=requires_auth, refresh_buffer=options.refresh_buffer, misconfigured=config.problem
        )
        #: The pool's HTTP connection pool, and this server's client on it (made on first use).
        self.shared_transport = transport
        self.http: httpx2.AsyncClient | None = None
        self._oauth: OAuthClient | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._session_closing: asyncio.Event | None = None
        self._held: LockedLog | None = None
        self._www_authenticate: str | None = None
        self.auth_problem: TetherError | None = None
        #: The server answered 404 to this session's ID (it restarted or expired the session).
        self.session_gone = False
        self.counters: dict[str, int] = {"refreshes": 0, "authorizations": 0, "browser_launches": 0, "connects": 0}

    def __repr__(self) -> str:
        return f"<Connection {self.name!r} {self.machine.state.value}>"

    @property
    def oauth_settings(self) -> OAuthSettings:
        """The OAuth part of the server's configuration (defaults when it has none)."""
        return self.config.oauth or OAuthSettings()

    @property
    def state(self) -> State:
        return self.machine.state

    # --- what callers use -----------------------------------------------------------

    async def session(self) -> ClientSession:
        """A usable session, connecting (once, for all concurrent callers) if needed.

        Raises:
            AuthorizationRequired, ServerUnavailable: with the server's name and what to do.
        """
        if self.machine.state is State.CONNECTED and self._session is not None and not self._tick_due():
            return self._session
        with self._waiting() as waiter:
            await self.dispatch(UseRequested())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout=self._wait_timeout())
            except TimeoutError:
                raise ServerUnavailable(
                    self.name,
                    cause=f"{self.name!r} did not become ready within {self._wait_timeout():g} s "
                    f"(it is {self.machine.state.value}); try again later",
                ) from None
        if self._session is None:
            raise ServerUnavailable(self.name, cause=f"the session with {self.name!r} closed while connecting")
        return self._session

    async def session_failed(self, cause: str, session: ClientSession | None = None) -> None:
        """A call found ``session`` broken (server restarted, process died).

        A report about a session already replaced (another caller reported it
        first, and a new one is up or opening) changes nothing.
        """
        if session is not None and session is not self._session:
            return
        await self.dispatch(SessionLost(cause=cause))

    async def close(self) -> None:
        """Close the session, cancel timers and operations, release everything."""
        await self.dispatch(Close())
        tasks = [t for t in (*self._tasks, self._session_task, self._timer) if t is not None and not t.done()]
        if self._session_closing is not None:
            self._session_closing.set()
        if self._session_task is not None and self._session is not None:
            # An open session ends politely (stdio: the process exits; HTTP: the session is deleted);
            # one still opening (a server that does not answer) is cancelled at once.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._session_task), timeout=5.0)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- the event pump -----------------------------------------------------------------

    async def dispatch(self, event: Event) -> None:
        """Feed the current time, then ``event``, and execute the commands."""
        async with self._lock:
            if not isinstance(event, ClockTick):
                await self._handle(ClockTick(now=self.options.clock.now()))
            await self._handle(event)

    async def _handle(self, event: Event) -> None:
        before = self.machine.state
        commands = self.machine.handle(event)
        on_transition = self.options.on_transition
        if on_transition is not None and (not isinstance(event, ClockTick) or before is not self.machine.state):
            on_transition(
                TransitionRecord(
                    server=self.name,
                    before=before.value,
                    event=event.trigger,
                    after=self.machine.state.value,
                    at=self.machine.now,
                    note=_note(commands),
                )
            )
        try:
            for command in commands:
                await self._execute(command)
        except TokenLogError as error:
            # Tokens that cannot be made durable are never used: stop this batch here.
            await self._handle(StorageFailed(reason=str(error)))
        finally:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _execute(self, command: Command) -> None:
        match command:
            case AppendLog(events=events):
                await self._append(events)
            case WakeWaiters(problem=problem):
                self._wake(problem)
            case LoadTokens():
                self._spawn(self._load())
            case StartRefresh():
                self._spawn(self._while_locked(self._refresh, on_lock_error=self._refresh_lock_failed))
            case StartAuthorization(scope=scope, reason=reason):
                self._spawn(
                    self._while_locked(
                        lambda locked: self._authorize(locked, reason.value, scope),
                        on_lock_error=self._authorization_lock_failed,
                    )
                )
            case OpenSession():
                previous = self._session_task
                closing = self._session_closing
                if previous is None or previous.done() or (closing is not None and closing.is_set()):
                    # A runner still closing (a lost stdio process being reaped) finishes first.
                    self._session_closing = asyncio.Event()
                    self._session_task = asyncio.create_task(
                        self._run_session(self._session_closing, after=previous)
                    )
            case CloseSession():
                if self._session_closing is not None:
                    self._session_closing.set()
            case SetTimer(at=at):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = asyncio.create_task(self._tick_at(at))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake(self, problem: Problem | None) -> None:
        waiters, self._waiters = self._waiters, []
        error = None if problem is None else self.error_for(problem)
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def error_for(self, problem: Problem) -> TetherError:
        """The exception a caller gets for a problem the machine reported."""
        if problem.kind is ProblemKind.AUTHORIZATION_REQUIRED:
            return AuthorizationRequired(self.name, reason=problem.message, url=problem.url)
        return ServerUnavailable(self.name, cause=problem.message, retry_at=problem.retry_at)

    async def _append(self, events: tuple[LogEvent, ...] | list[LogEvent]) -> None:
        held = self._held
        at = self.options.clock.now()
        if held is not None:
            await asyncio.to_thread(held.append, events, at=at)
        else:
            await asyncio.to_thread(self.log.append, events, at=at)

    async def _tick_at(self, at: float) -> None:
        await self.options.clock.sleep_until(at)
        await self.dispatch(ClockTick(now=self.options.clock.now()))

    def _tick_due(self) -> bool:
        """Whether the refresh window has opened since the machine last saw the clock."""
        tokens = self.machine.tokens.tokens
        return tokens is not None and tokens.freshness(self.options.clock.now(), self.options.refresh_buffer) in _DUE

    def _wait_timeout(self) -> float:
        return WAIT_TIMEOUT + (self.options.authorization_timeout if self.interactive else 0.0)

    # --- operations the commands start --------------------------------------------------

    async def _load(self) -> None:
        try:
            replay = await asyncio.to_thread(self.log.read)
        except TokenLogError as error:
            await self.dispatch(StorageFailed(reason=str(error)))
            return
        for warning in replay.warnings:
            _log.warning("%s", warning)
        await self.dispatch(TokensLoaded(state=replay.state))

    async def _while_locked(
        self,
        body: Callable[[LockedLog], Awaitable[None]],
        *,
        on_lock_error: Callable[[TokenLogError], Awaitable[None]],
    ) -> None:
        """Run ``body`` while a dedicated thread holds the server's cross-process lock."""
        loop = asyncio.get_running_loop()
        acquired: asyncio.Future[LockedLog] = loop.create_future()
        release = threading.Event()

        def settle(result: LockedLog | None, error: BaseException | None) -> None:
            if acquired.done():
                return
            if error is not None:
                acquired.set_exception(error)
            else:
                assert result is not None
                acquired.set_result(result)

        def hold() -> None:
            try:
                with self.log.locked(timeout=LOCK_WAIT) as locked:
                    loop.call_soon_threadsafe(settle, locked, None)
                    release.wait(timeout=self.options.authorization_timeout + 2 * LOCK_WAIT)
            except BaseException as error:  # handed to the event loop
                loop.call_soon_threadsafe(settle, None, error)

        thread = threading.Thread(target=hold, name=f"mcp-tether lock {self.name}", daemon=True)
        thread.start()
        try:
            try:
                locked = await acquired
            except TokenLogError as error:
                await on_lock_error(error)
                return
            self._held = locked
            try:
                await body(locked)
            finally:
                self._held = None
        finally:
            release.set()
            await asyncio.to_thread(thread.join, LOCK_WAIT)

    async def _refresh_lock_failed(self, error: TokenLogError) -> None:
        await self.dispatch(RefreshFailed(failure=FailureClass.TRANSIENT, reason=str(error)))

    async def _authorization_lock_failed(self, error: TokenLogError) -> None:
        await self.dispatch(AuthorizationFailed(reason=str(error)))

    def oauth_client(self) -> OAuthClient:
        """The server's OAuth client (created on first use; HTTP servers only)."""
        from mcp_tether.adapters.oauth import OAuthClient
        from mcp_tether.session import http_client

        if self._oauth is None:
            transport = self.config.transport
            assert isinstance(transport, HttpServer)
            self._oauth = OAuthClient(
                http_client(self),
                server_name=self.name,
                server_url=transport.url,
                settings=self.oauth_settings,
                clock=self.options.clock.now,
            )
        return self._oauth

    async def _read_locked(self, locked: LockedLog) -> TokenState | None:
        """The log's state under the lock, or None after reporting that the log failed."""
        try:
            replay = await asyncio.to_thread(locked.read)
        except TokenLogError as error:
            await self.dispatch(StorageFailed(reason=str(error)))
            return None
        return replay.state

    def _newer_on_disk(self, disk: TokenState, usable: frozenset[Freshness]) -> bool:
        """Whether another process wrote tokens we do not hold that are still ``usable``."""
        return (
            disk.tokens is not None
            and disk.tokens != self.machine.tokens.tokens
            and disk.tokens.freshness(self.options.clock.now(), self.options.refresh_buffer) in usable
        )

    async def _refresh(self, locked: LockedLog) -> None:
        self.counters["refreshes"] += 1
        disk = await self._read_locked(locked)
        if disk is None:
            return
        if self._newer_on_disk(disk, _FRESH):
            # Another process refreshed a moment ago: adopt, send nothing.
            await self.dispatch(RefreshSuperseded(state=disk))
            return
        await self.dispatch(await self._refresh_request(disk))

    async def _refresh_request(self, disk: TokenState) -> Event:
        from mcp_tether.adapters.oauth import OAuthError, TokenFailure

        settings = self.oauth_settings
        if disk.tokens is None or disk.refresh_token is None:
            return RefreshFailed(failure=FailureClass.FINAL, reason="the token log holds no usable refresh token")
        oauth = self.oauth_client()
        try:
            discovery = disk.discovery
            if discovery is None:
                discovery = await oauth.discover(self._www_authenticate)
                await self._append([DiscoveryRecorded(discovery=discovery)])
            client = disk.client
            if client is None:
                if settings.client_id is None:
                    return RefreshFailed(
                        failure=FailureClass.CLIENT_INVALID, reason="no client registration is on record"
                    )
                client = await oauth.ensure_client(discovery, None, None)
            result = await oauth.refresh(discovery, client, disk.tokens)
        except OAuthError as error:
            return RefreshFailed(failure=error.failure_class, reason=str(error))
        if isinstance(result, TokenFailure):
            return RefreshFailed(failure=result.failure_class, reason=result.reason, retry_after=result.retry_after)
        return RefreshSucceeded(tokens=result)

    async def _authorize(self, locked: LockedLog, reason: str, scope: str | None) -> None:
        self.counters["authorizations"] += 1
        disk = await self._read_locked(locked)
        if disk is None:
            return
        if scope is None and self._newer_on_disk(disk, _UNEXPIRED):
            # Another process authorized while we waited for the lock: adopt its tokens.
            await self.dispatch(TokensChanged(state=disk))
            return
        settings = self.oauth_settings
        if not settings.without_browser and not self.interactive:
            await self.dispatch(AuthorizationFailed(reason=f"{reason} (this pool is not interactive)"))
            return
        await self.dispatch(await self._authorization_request(disk, settings, scope))

    async def _authorization_request(self, disk: TokenState, settings: OAuthSettings, scope: str | None) -> Event:
        from mcp_tether.adapters.authorization import AuthorizationError, AuthorizationTimeout, authorize_in_browser
        from mcp_tether.adapters.callback import loopback_redirect_port
        from mcp_tether.adapters.oauth import OAuthError, TokenFailure, select_scope

        oauth = self.oauth_client()
        try:
            discovery = await oauth.discover(self._www_authenticate)
            if discovery != disk.discovery:
                await self._append([DiscoveryRecorded(discovery=discovery)])
            wanted = scope or select_scope(self._www_authenticate, discovery, settings.scopes)
            known = disk.client if disk.discovery is None or disk.discovery.issuer == discovery.issuer else None

            async def client_for(redirect_uri: str | None) -> Any:
                client = await oauth.ensure_client(discovery, known, redirect_uri, scope=wanted)
                if client != disk.client:
                    await self._append([ClientRegistered(client=client)])
                return client

            if settings.without_browser:
                result = await oauth.grant_without_browser(discovery, await client_for(None), wanted)
                if isinstance(result, TokenFailure):
                    return AuthorizationFailed(reason=result.reason)
                grant = "jwt_bearer" if settings.cross_app_access else "client_credentials"
                return AuthorizationSucceeded(tokens=result, grant=grant)
            tokens = await authorize_in_browser(
                oauth,
                discovery,
                client_for,
                scope=wanted,
                open_url=self._count_launch,
                timeout=self.options.authorization_timeout,
                on_url=self.options.on_url,
                preferred_port=loopback_redirect_port(known),
            )
        except AuthorizationTimeout:
            return AuthorizationTimedOut()
        except (AuthorizationError, OAuthError) as error:
            return AuthorizationFailed(reason=str(error))
        return AuthorizationSucceeded(tokens=tokens)

    def _count_launch(self, url: str) -> bool:
        self.counters["browser_launches"] += 1
        if self.options.open_url is not None:
            return self.options.open_url(url)
        from mcp_tether.adapters.browser import open_in_browser  # the default, loaded when first needed

        return open_in_browser(url)

    # --- the MCP session ----------------------------------------------------------------

    async def _run_session(self, closing: asyncio.Event, *, after: asyncio.Task[None] | None = None) -> None:
        if after is not None and not after.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(after), timeout=CONNECT_TIMEOUT)
        self.counters["connects"] += 1
        cause = "closed"
        from mcp_tether.session import open_session  # the MCP client stack loads with the first session

        opened: ClientSession | None = None
        try:
            async with open_session(self) as session:
                await asyncio.wait_for(session.initialize(), timeout=CONNECT_TIMEOUT + self._wait_timeout())
                self._session = opened = session
                self.session_gone = False
                await self.dispatch(SessionUp())
                await closing.wait()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the transport's own errors arrive as exception groups
            cause = describe(self.auth_problem or error)
        finally:
            if self._session is opened:  # never a later runner's session
                self._session = None
        if not closing.is_set():
            await self.dispatch(SessionLost(cause=cause))

    # --- what TetherAuth asks ---------------------------------------------------------

    async def token_for_request(self) -> str | None:
        """The bearer token for a request now (None for servers without OAuth)."""
        machine = self.machine
        if not machine.requires_auth:
            return None
        token = machine.bearer()
        if token is not None and not self._tick_due():
            return token
        await self.dispatch(ClockTick(now=self.options.clock.now()))
        token = machine.bearer()
        if token is not None:
            return token
        return await self._await_token(rejected=None, event=UseRequested())

    async def recover(
        self, token: str | None, *, status: int, challenge: str | None, scope: str | None
    ) -> str | None:
        """A request was refused (401, or 403 ``insufficient_scope``): tell the machine and
        wait for a token worth retrying with."""
        if status == 403:
            return await self._await_token(
                rejected=token, event=InsufficientScope(scope=scope, www_authenticate=challenge)
            )
        if challenge:
            self._www_authenticate = challenge
        return await self._await_token(
            rejected=token, event=Unauthorized(access_token=token, www_authenticate=challenge)
        )

    async def accepted(self) -> None:
        if self.machine.awaiting_acceptance:
            await self.dispatch(TokenAccepted())

    async def _await_token(self, *, rejected: str | None, event: Event) -> str | None:
        deadline = asyncio.get_running_loop().time() + self._wait_timeout()
        with self._waiting() as waiter:
            try:
                await self.dispatch(event)
                while True:
                    if waiter.done():
                        waiter.result()  # raises the machine's problem
                        return self.machine.bearer()
                    token = self.machine.bearer()
                    if token is not None and token != rejected:
                        return token
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        raise ServerUnavailable(
                            self.name, cause=f"no usable token for {self.name!r} within {self._wait_timeout():g} s"
                        )
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout=remaining)
            except TetherError as error:
                self.auth_problem = error
                raise

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[asyncio.Future[None]]:
        """Register a caller the machine will answer (``WakeWaiters``) for the duration of the block."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            yield waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _note(commands: list[Command]) -> str:
    parts = []
    for command in commands:
        match command:
            case StartAuthorization(reason=reason):
                parts.append(f"authorize: {reason.value}")
            case StartRefresh():
                parts.append("refresh")
            case OpenSession():
                parts.append("open session")
            case SetTimer(purpose=purpose):
                parts.append(purpose)
            case WakeWaiters(problem=problem) if problem is not None:
                parts.append(problem.message)
    return "; ".join(parts)
