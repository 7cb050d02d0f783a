"""Expiry policy: pure functions, never an exception, whatever the server sends."""

from __future__ import annotations

import math

import pytest
from hypothesis import given

from mcp_tether.statemachine.tokens import MAX_LIFETIME, Freshness, TokenSet, normalize_expires_in
from mcp_tether.testing.strategies import expires_in_values, token_responses

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3600, 3600.0),
        ("3600", 3600.0),
        (" 60 ", 60.0),
        (0.5, 0.5),
        (None, None),
        (True, None),
        ("soon", None),
        (0, None),
        (-5, None),
        (float("nan"), None),
        (10**20, MAX_LIFETIME),
        (float("inf"), MAX_LIFETIME),
        ([3600], None),
    ],
)
def test_expires_in_policy(raw: object, expected: float | None) -> None:
    assert normalize_expires_in(raw) == expected


@given(expires_in_values())
def test_any_expires_in_is_unknown_or_within_bounds(raw: object) -> None:
    value = normalize_expires_in(raw)
    assert value is None or (0 < value <= MAX_LIFETIME and math.isfinite(value))


@given(token_responses())
def test_any_token_response_gives_tokens_or_none(payload: dict) -> None:
    tokens = TokenSet.from_token_response(payload, received_at=T0)
    if tokens is not None:
        assert isinstance(tokens.access_token, str) and tokens.access_token
        assert tokens.freshness(T0) in (Freshness.VALID, Freshness.EXPIRING)


def test_refresh_window_opens_buffer_before_expiry() -> None:
    tokens = TokenSet(access_token="a", issued_at=T0, expires_in=3600)
    assert tokens.refresh_at(300) == T0 + 3300
    assert tokens.freshness(T0 + 3299) is Freshness.VALID
    assert tokens.freshness(T0 + 3300) is Freshness.EXPIRING
    assert tokens.freshness(T0 + 3600) is Freshness.EXPIRED


def test_short_lived_tokens_refresh_at_half_life() -> None:
    tokens = TokenSet(access_token="a", issued_at=T0, expires_in=5)
    assert tokens.refresh_at(300) == T0 + 2.5


def test_unknown_lifetime_is_valid_until_rejected() -> None:
    tokens = TokenSet(access_token="a", issued_at=T0, expires_in=None)
    assert tokens.expires_at is None
    assert tokens.freshness(T0 + 10**9) is Freshness.VALID


def test_response_without_refresh_token_keeps_the_old_one() -> None:
    old = TokenSet(access_token="a", refresh_token="r1", scope="read", issued_at=T0, expires_in=60)
    new = TokenSet.from_token_response(
        {"access_token": "b", "expires_in": 60}, received_at=T0 + 30, previous=old
    )
    assert new is not None
    assert new.refresh_token == "r1"
    assert new.scope == "read"
    rotated = TokenSet.from_token_response(
        {"access_token": "c", "refresh_token": "r2"}, received_at=T0, previous=old
    )
    assert rotated is not None and rotated.refresh_token == "r2"


def test_secrets_stay_out_of_repr() -> None:
    tokens = TokenSet(access_token="sekrit-access", refresh_token="sekrit-refresh", issued_at=T0)
    assert "sekrit" not in repr(tokens)
