"""Token log events and the fold that turns them into a :class:`TokenState`.

The token log is event-sourced: a server's current tokens are never stored as a
mutable record, only as the fold of the events appended for it. The file format
(JSON Lines, schema version, upcasters) is in ``specs/token-log.md``; encoding
lives in :mod:`mcp_tether.statemachine.logcodec`, file IO in
``mcp_tether.adapters.token_store``.

Events here are payloads: the store wraps each in a :class:`LogRecord` that adds
the contiguous sequence number and the wall-clock time of the append.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet, TokenState

__all__ = [
    "AuthorizationFailedEvent",
    "AuthorizationStarted",
    "ClientInvalidated",
    "ClientRegistered",
    "DiscoveryRecorded",
    "LegacyImported",
    "LogEvent",
    "LogRecord",
    "LoggedOut",
    "RefreshFailedEvent",
    "SequenceError",
    "Snapshot",
    "TokensIssued",
    "apply",
    "apply_event",
    "apply_events",
    "fold",
]


@attrs.frozen(kw_only=True)
class ClientRegistered:
    """A client identity was obtained (registration, pre-registration, metadata document)."""

    client: ClientRegistration


@attrs.frozen(kw_only=True)
class ClientInvalidated:
    """The authorization server no longer knows the client (``invalid_client``)."""

    reason: str


@attrs.frozen(kw_only=True)
class DiscoveryRecorded:
    """Discovery found the authorization server and its endpoints."""

    discovery: Discovery


@attrs.frozen(kw_only=True)
class TokensIssued:
    """New tokens arrived. ``grant`` says how: authorization_code, refresh_token,
    client_credentials, jwt_bearer (cross-app access), or legacy_import."""

    tokens: TokenSet
    grant: str


@attrs.frozen(kw_only=True)
class RefreshFailedEvent:
    """A refresh attempt failed. ``final`` means the refresh token is dead."""

    reason: str
    final: bool


@attrs.frozen(kw_only=True)
class AuthorizationStarted:
    """A browser authorization began, and why it was needed."""

    reason: str


@attrs.frozen(kw_only=True)
class AuthorizationFailedEvent:
    """A browser authorization ended without tokens (denied, timed out, refused)."""

    reason: str


@attrs.frozen(kw_only=True)
class LoggedOut:
    """The user logged out; ``revoked`` says whether the server confirmed revocation."""

    revoked: bool


@attrs.frozen(kw_only=True)
class Snapshot:
    """Compaction: the whole state at the point the older history was folded away."""

    state: TokenState


@attrs.frozen(kw_only=True)
class LegacyImported:
    """The following events were imported from the original tool's ``<server>.json``."""

    source: str
    had_issued_at: bool


LogEvent = (
    ClientRegistered
    | ClientInvalidated
    | DiscoveryRecorded
    | TokensIssued
    | RefreshFailedEvent
    | AuthorizationStarted
    | AuthorizationFailedEvent
    | LoggedOut
    | Snapshot
    | LegacyImported
)


@attrs.frozen(kw_only=True)
class LogRecord:
    """One line of the log: an event with its sequence number and append time."""

    seq: int
    at: float
    event: LogEvent


class SequenceError(ValueError):
    """A record's sequence number does not follow the previous one."""


def apply(state: TokenState, record: LogRecord, *, check_sequence: bool = True) -> TokenState:
    """Fold one record into the state.

    A compacted log starts with a :class:`Snapshot` whose sequence number
    continues the history it replaced; every other record must follow its
    predecessor by exactly one.

    Args:
        state: the state so far.
        record: the next record.
        check_sequence: False folds a record that does not follow (a replay
            that reports gaps instead of refusing them).

    Raises:
        SequenceError: the record does not carry ``state.last_seq + 1``.
    """
    starts_compacted_log = state.last_seq == 0 and isinstance(record.event, Snapshot)
    if check_sequence and record.seq != state.last_seq + 1 and not starts_compacted_log:
        raise SequenceError(f"expected sequence number {state.last_seq + 1}, found {record.seq}")
    return attrs.evolve(apply_event(state, record.event), last_seq=record.seq)


def apply_events(state: TokenState, events: Iterable[LogEvent]) -> TokenState:
    """Fold event payloads into the state (no sequence bookkeeping)."""
    for event in events:
        state = apply_event(state, event)
    return state


def apply_event(state: TokenState, event: LogEvent) -> TokenState:
    """Fold one event payload into the state (no sequence bookkeeping)."""
    match event:
        case ClientRegistered(client=client):
            return attrs.evolve(state, client=client)
        case ClientInvalidated():
            return attrs.evolve(state, client=None)
        case DiscoveryRecorded(discovery=discovery):
            # A different issuer invalidates a client bound to the old one
            # (credentials never travel to another authorization server).
            kept = state.client
            if kept is not None and kept.issuer is not None and kept.issuer != discovery.issuer:
                kept = None
            return attrs.evolve(state, discovery=discovery, client=kept)
        case TokensIssued(tokens=tokens):
            return attrs.evolve(state, tokens=tokens, refresh_rejected=False, logged_out=False)
        case RefreshFailedEvent(final=final):
            return attrs.evolve(state, refresh_rejected=True) if final else state
        case AuthorizationStarted() | AuthorizationFailedEvent() | LegacyImported():
            return state
        case LoggedOut():
            return attrs.evolve(state, tokens=None, refresh_rejected=False, logged_out=True)
        case Snapshot(state=snapshot):
            return snapshot


def fold(records: Iterable[LogRecord]) -> TokenState:
    """The token state after all ``records`` (in order, contiguous)."""
    state = TokenState()
    for record in records:
        state = apply(state, record)
    return state
