"""Hypothesis strategies for events, token states and hostile token responses.

Use them to test code built on mcp-tether::

    from hypothesis import given
    from mcp_tether.testing.strategies import events, token_responses

    @given(token_responses())
    def test_my_code_survives_any_token_response(payload): ...
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mcp_tether.statemachine.events import (
    AuthorizationFailed,
    AuthorizationSucceeded,
    AuthorizationTimedOut,
    ClockTick,
    Close,
    ConfigChanged,
    ConfigRemoved,
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
from mcp_tether.statemachine.tokens import TokenSet, TokenState

__all__ = ["events", "expires_in_values", "token_responses", "token_sets", "token_states"]

_SECRETS = st.sampled_from(["at-1", "at-2", "at-3"])


def expires_in_values() -> st.SearchStrategy[Any]:
    """Anything a server has been seen to put in ``expires_in``, and worse."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**12), max_value=10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["3600", " 60 ", "1e3", "-5", "NaN", "inf", ""]),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
    )


def token_responses() -> st.SearchStrategy[dict[str, Any]]:
    """Token-endpoint JSON objects, well-formed or hostile."""
    junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=2))
    return st.fixed_dictionaries(
        {},
        optional={
            "access_token": st.one_of(st.text(min_size=1, max_size=40), junk),
            "token_type": st.one_of(st.sampled_from(["Bearer", "bearer", "DPoP"]), junk),
            "refresh_token": st.one_of(st.text(min_size=1, max_size=40), junk),
            "expires_in": expires_in_values(),
            "scope": st.one_of(st.text(max_size=30), junk),
            "error": st.one_of(st.sampled_from(["invalid_grant", "invalid_client", "server_error"]), junk),
        },
    )


def token_sets(*, now: float) -> st.SearchStrategy[TokenSet]:
    """Token sets around ``now``: fresh, expiring, expired, unknown lifetime, with or without refresh token."""
    return st.builds(
        TokenSet,
        access_token=_SECRETS,
        refresh_token=st.none() | st.sampled_from(["rt-1", "rt-2"]),
        scope=st.none() | st.sampled_from(["read", "read write"]),
        issued_at=st.floats(now - 100_000, now + 10, allow_nan=False),
        expires_in=st.none() | st.sampled_from([1.0, 5.0, 60.0, 600.0, 3600.0, 86_400.0]),
    )


def token_states(*, now: float) -> st.SearchStrategy[TokenState]:
    """Folded token states, including rejected refresh tokens and logouts."""
    return st.builds(
        TokenState,
        tokens=st.none() | token_sets(now=now),
        refresh_rejected=st.booleans(),
        logged_out=st.booleans(),
        last_seq=st.integers(0, 50),
    )


def events(*, now: float, kind: type[Event] | None = None) -> st.SearchStrategy[Event]:
    """Every kind of event (or only ``kind``), with plausible and implausible contents."""
    tokens = token_sets(now=now)
    states = token_states(now=now)
    by_kind: dict[type[Event], st.SearchStrategy[Event]] = {
        ClockTick: st.builds(ClockTick, now=st.floats(now - 86_400, now + 86_400, allow_nan=False)),
        UseRequested: st.just(UseRequested()),
        TokensLoaded: st.builds(TokensLoaded, state=states),
        TokensChanged: st.builds(TokensChanged, state=states),
        RefreshSucceeded: st.builds(RefreshSucceeded, tokens=tokens),
        RefreshSuperseded: st.builds(RefreshSuperseded, state=states),
        RefreshFailed: st.builds(
            RefreshFailed,
            failure=st.sampled_from(list(FailureClass)),
            reason=st.sampled_from(["invalid_grant", "HTTP 503", "timeout"]),
            retry_after=st.none() | st.floats(0, 7200),
        ),
        AuthorizationSucceeded: st.builds(AuthorizationSucceeded, tokens=tokens),
        AuthorizationFailed: st.builds(
            AuthorizationFailed,
            reason=st.sampled_from(["access_denied", "interaction required"]),
            url=st.none() | st.just("https://as.example/authorize"),
        ),
        AuthorizationTimedOut: st.just(AuthorizationTimedOut()),
        SessionUp: st.just(SessionUp()),
        SessionLost: st.builds(SessionLost, cause=st.just("connection reset")),
        Unauthorized: st.builds(
            Unauthorized, access_token=st.none() | _SECRETS, www_authenticate=st.none() | st.just("Bearer")
        ),
        InsufficientScope: st.builds(InsufficientScope, scope=st.none() | st.sampled_from(["admin", "read write"])),
        TokenAccepted: st.just(TokenAccepted()),
        StorageFailed: st.builds(StorageFailed, reason=st.just("disk full")),
        ConfigChanged: st.builds(ConfigChanged, requires_auth=st.booleans()),
        ConfigRemoved: st.just(ConfigRemoved()),
        Close: st.just(Close()),
    }
    if kind is not None:
        return by_kind[kind]
    return st.one_of(list(by_kind.values()))
