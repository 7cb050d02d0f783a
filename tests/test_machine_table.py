"""The transition table is total and every (state, event) pair ends where the table says (h2 style)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import EventData

from mcp_tether.statemachine.commands import (
    AppendLog,
    OpenSession,
    StartAuthorization,
    StartRefresh,
    WakeWaiters,
)
from mcp_tether.statemachine.events import EVENT_TYPES, ClockTick, Event, TokensLoaded, UseRequested
from mcp_tether.statemachine.machine import (
    _GUARD_ALIASES,
    SESSION_STATES,
    TABLE,
    TRIGGERS,
    ConnectionMachine,
    RetryPolicy,
    State,
    _Model,
    callback_names,
)
from mcp_tether.statemachine.tokenlog import TokensIssued
from mcp_tether.statemachine.tokens import TokenSet, TokenState
from mcp_tether.testing.strategies import events, token_states

NOW = 1_800_000_000.0


def rows_for(state: State, trigger: str) -> list:
    return [row for row in TABLE if row.trigger == trigger and state in row.sources]


def test_every_trigger_is_an_event() -> None:
    assert {row.trigger for row in TABLE} == set(TRIGGERS)
    assert len(TRIGGERS) == len(EVENT_TYPES)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_pair_ends_with_an_unconditional_row(state: State, trigger: str) -> None:
    rows = rows_for(state, trigger)
    assert rows, f"no row for ({state.value}, {trigger})"
    assert rows[-1].unconditional, f"({state.value}, {trigger}) can fall through its guards"
    assert all(not row.unconditional for row in rows[:-1]), f"({state.value}, {trigger}) has unreachable rows"


def test_every_callback_name_resolves() -> None:
    # transitions looks callbacks up only when they fire; check them all up front.
    missing = sorted(name for name in callback_names() if not callable(getattr(_Model, name, None)))
    assert not missing, f"the table names callbacks the model lacks: {missing}"


def test_guard_aliases_do_not_shadow_data() -> None:
    model = _Model(
        "x",
        requires_auth=True,
        refresh_buffer=300.0,
        policy=RetryPolicy(),
        misconfigured=None,
    )
    for guard, alias in _GUARD_ALIASES.items():
        assert not callable(getattr(model, guard))
        assert callable(getattr(model, alias))


@st.composite
def machines(draw: st.DrawFn, state: State) -> tuple[ConnectionMachine, dict]:
    """A machine put into ``state`` with arbitrary context."""
    params = {
        "state": state,
        "requires_auth": draw(st.booleans()),
        "tokens": draw(token_states(now=NOW)),
        "has_session": draw(st.booleans()),
        "waiters": draw(st.integers(0, 3)),
        "refresh_in_flight": draw(st.booleans()),
        "refresh_attempts": draw(st.integers(0, 5)),
        "refresh_retry_at": draw(st.none() | st.floats(NOW - 100, NOW + 100)),
        "rejections": draw(st.integers(0, 3)),
        "step_ups": draw(st.integers(0, 3)),
        "retry_at": draw(st.none() | st.floats(NOW - 100, NOW + 100)),
        "misconfigured_reason": draw(st.none() | st.just("bad entry")),
        "now": NOW,
    }
    return build(params), params


_MACHINES = (
    ConnectionMachine("product", requires_auth=True),
    ConnectionMachine("product", requires_auth=True),
)


def build(params: dict, slot: int = 0) -> ConnectionMachine:
    """Reset one of two long-lived machines (building a transitions machine is slow) to ``params``."""
    machine = _MACHINES[slot]
    model = machine._model
    fresh = _Model(
        "product", requires_auth=True, refresh_buffer=300.0, policy=model.policy, misconfigured=None
    )
    for key, value in vars(fresh).items():
        if key != "state":
            setattr(model, key, value)
    for key, value in params.items():
        if key != "state":
            setattr(model, key, value)
    machine._machine.set_state(params["state"], model=model)
    return machine


def expected_destination(machine: ConnectionMachine, event: Event) -> State:
    """The oracle: evaluate the table's rows in order, as the specification reads."""
    model = machine._model
    state = machine.state
    if isinstance(event, ClockTick):
        model.now = event.now
    data = EventData(
        None, type("E", (), {"name": event.trigger})(), machine._machine, model, (), {"event": event}
    )
    for row in rows_for(state, event.trigger):
        for name in row.prepare:
            getattr(model, name)(data)
        ok = all(getattr(model, _GUARD_ALIASES.get(c, c))(data) for c in row.conditions) and not any(
            getattr(model, _GUARD_ALIASES.get(u, u))(data) for u in row.unless
        )
        if ok:
            return row.dest if row.dest is not None else state
    raise AssertionError("unreachable: the last row is unconditional")


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", EVENT_TYPES, ids=lambda k: k.trigger)
@settings(max_examples=25)
@given(data=st.data())
def test_each_pair_ends_where_the_table_says(state: State, kind: type, data: st.DataObject) -> None:
    machine, params = data.draw(machines(state))
    event = data.draw(events(now=NOW, kind=kind))
    oracle = build(params, slot=1)
    expected = expected_destination(oracle, event)
    commands = machine.handle(event)  # never raises
    assert machine.state is expected
    destinations = {row.dest or params["state"] for row in rows_for(params["state"], event.trigger)}
    assert machine.state in destinations
    # Commands come out in a safe order: tokens are logged before anything uses them.
    kinds = [type(c) for c in commands]
    if AppendLog in kinds and (OpenSession in kinds or WakeWaiters in kinds):
        first_use = min(i for i, k in enumerate(kinds) if k in (OpenSession, WakeWaiters))
        issued = [
            i
            for i, c in enumerate(commands)
            if isinstance(c, AppendLog) and any(isinstance(e, TokensIssued) for e in c.events)
        ]
        assert all(i < first_use for i in issued)
    if StartRefresh in kinds:
        assert not params["refresh_in_flight"]
    if StartAuthorization in kinds:
        assert (
            machine.waiters > 0
            or params["waiters"] > 0
            or event.trigger in {"use_requested", "unauthorized", "insufficient_scope"}
        )


def test_first_use_of_a_server_without_oauth_skips_the_token_states() -> None:
    machine = ConnectionMachine("stdio", requires_auth=False)
    machine.handle(ClockTick(now=NOW))
    assert machine.handle(UseRequested())[0].__class__.__name__ == "LoadTokens"
    assert machine.handle(TokensLoaded(state=TokenState())) == [OpenSession()]
    assert machine.state is State.VALID


def test_lazy_emits_nothing_until_used() -> None:
    machine = ConnectionMachine("lazy", requires_auth=True)
    for _ in range(3):
        assert machine.handle(ClockTick(now=NOW)) == []
    assert machine.state is State.LAZY


def test_expired_token_with_refresh_token_refreshes_without_browser() -> None:
    machine = ConnectionMachine("notion", requires_auth=True)
    machine.handle(ClockTick(now=NOW))
    machine.handle(UseRequested())
    stale = TokenSet(access_token="a", refresh_token="r", issued_at=NOW - 7200, expires_in=3600)
    commands = machine.handle(TokensLoaded(state=attrs.evolve(TokenState(), tokens=stale)))
    assert machine.state is State.REFRESHING
    assert [type(c) for c in commands] == [StartRefresh]
    assert machine.state not in SESSION_STATES


def test_superseding_tokens_that_expired_meanwhile_are_refreshed_again() -> None:
    """Another process refreshed, then time passed: its tokens are adopted and refreshed, no session opens."""
    from mcp_tether.statemachine.commands import OpenSession, SetTimer, StartRefresh
    from mcp_tether.statemachine.events import RefreshSuperseded, TokensLoaded, UseRequested
    from mcp_tether.statemachine.tokens import TokenSet, TokenState

    machine = ConnectionMachine("x", requires_auth=True)
    old = TokenSet(access_token="a1", refresh_token="r1", issued_at=0.0, expires_in=5.0)
    machine.handle(ClockTick(now=100.0))
    machine.handle(UseRequested())
    commands = machine.handle(TokensLoaded(state=TokenState(tokens=old)))
    assert machine.state is State.REFRESHING and any(isinstance(c, StartRefresh) for c in commands)
    newer = TokenSet(access_token="a2", refresh_token="r2", issued_at=90.0, expires_in=5.0)  # expired at 95
    commands = machine.handle(RefreshSuperseded(state=TokenState(tokens=newer)))
    assert machine.state is State.REFRESHING
    assert machine.tokens.tokens == newer
    assert not any(isinstance(c, OpenSession) for c in commands)
    assert [c.at for c in commands if isinstance(c, SetTimer)] == [100.0]  # due now
    commands = machine.handle(ClockTick(now=100.0))
    assert any(isinstance(c, StartRefresh) for c in commands)
    assert machine.refresh_in_flight and machine.state is State.REFRESHING
