"""Token values and the expiry policy: pure functions of data and a given ``now``.

Nothing here reads a clock. Every time is a wall-clock float (seconds since the
epoch) that the caller passes in; the token log persists ``issued_at`` so that
expiry survives restarts (the mcp SDK forgets it, which is why it cannot tell an
expired token from a fresh one after a restart).

Expiry policy (``specs/token-log.md`` and ``specs/connection.md`` state it too):

* ``expires_at = issued_at + expires_in``.
* ``expires_in`` missing, ``None``, a boolean, non-numeric text, NaN, zero or
  negative: the lifetime is *unknown*; the token is used until the resource
  server rejects it (401). No exception, ever.
* numeric text (``"3600"``) is accepted as its number.
* a lifetime above :data:`MAX_LIFETIME` (one year) is clamped to it.
* the refresh window opens ``min(refresh_buffer, lifetime / 2)`` before expiry,
  so a 5-second token is refreshed after 2.5 s instead of continuously.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import attrs

__all__ = [
    "DEFAULT_REFRESH_BUFFER",
    "MAX_LIFETIME",
    "ClientRegistration",
    "Discovery",
    "Freshness",
    "TokenSet",
    "TokenState",
    "normalize_expires_in",
]

#: Seconds before expiry that a token is refreshed proactively (the seed's 5 minutes).
DEFAULT_REFRESH_BUFFER = 300.0
#: Longest lifetime believed from a server; longer ones are clamped to this.
MAX_LIFETIME = 365.0 * 24 * 3600


def normalize_expires_in(value: object) -> float | None:
    """Turn whatever a token response says in ``expires_in`` into seconds, or None.

    Args:
        value: the raw JSON value (any type).

    Returns:
        A lifetime in seconds within ``(0, MAX_LIFETIME]``, or None when the
        lifetime is unknown (missing, malformed, not positive).
    """
    if value is None or isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if math.isnan(number) or number <= 0:
        return None
    return min(number, MAX_LIFETIME)


class Freshness(enum.Enum):
    """How usable a token set is at a given instant."""

    NONE = "none"  # no access token at all
    VALID = "valid"  # usable, refresh window not yet open (or unknown expiry)
    EXPIRING = "expiring"  # usable, inside the refresh window
    EXPIRED = "expired"  # past expires_at: must not be sent


@attrs.frozen(kw_only=True)
class TokenSet:
    """An access token with what is needed to judge and renew it.

    Secrets are excluded from ``repr`` and from equality-independent output.
    """

    access_token: str = attrs.field(repr=False)
    token_type: str = "Bearer"
    refresh_token: str | None = attrs.field(default=None, repr=False)
    scope: str | None = None
    issued_at: float
    expires_in: float | None = None

    @property
    def expires_at(self) -> float | None:
        """Wall-clock expiry, or None when the lifetime is unknown."""
        if self.expires_in is None:
            return None
        return self.issued_at + self.expires_in

    def refresh_at(self, refresh_buffer: float = DEFAULT_REFRESH_BUFFER) -> float | None:
        """When the refresh window opens: ``expires_at - min(buffer, lifetime / 2)``."""
        if self.expires_in is None:
            return None
        lead = min(max(refresh_buffer, 0.0), self.expires_in / 2.0)
        return self.issued_at + self.expires_in - lead

    def freshness(self, now: float, refresh_buffer: float = DEFAULT_REFRESH_BUFFER) -> Freshness:
        """Classify the token at ``now``."""
        expires_at = self.expires_at
        if expires_at is None:
            return Freshness.VALID
        if now >= expires_at:
            return Freshness.EXPIRED
        refresh_at = self.refresh_at(refresh_buffer)
        if refresh_at is not None and now >= refresh_at:
            return Freshness.EXPIRING
        return Freshness.VALID

    def scopes(self) -> frozenset[str]:
        """The granted scopes as a set (empty when the server did not say)."""
        return frozenset((self.scope or "").split())

    @classmethod
    def from_token_response(
        cls,
        payload: Mapping[str, object],
        *,
        received_at: float,
        previous: TokenSet | None = None,
    ) -> TokenSet | None:
        """Build a token set from a token endpoint's JSON object.

        A response without a refresh token keeps the previous one (RFC 6749
        section 6: the server may not rotate). A response whose
        ``access_token`` is missing or not a non-empty string yields None: the
        caller classifies that as a malformed (transient) answer.

        Args:
            payload: the decoded JSON object.
            received_at: wall-clock time the response arrived (``issued_at``).
            previous: the token set being refreshed, if any.
        """
        access = payload.get("access_token")
        if not isinstance(access, str) or not access:
            return None
        refresh = payload.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            refresh = previous.refresh_token if previous is not None else None
        token_type = payload.get("token_type")
        scope = payload.get("scope")
        if not isinstance(scope, str):
            scope = previous.scope if previous is not None else None
        return cls(
            access_token=access,
            token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
            refresh_token=refresh,
            scope=scope,
            issued_at=received_at,
            expires_in=normalize_expires_in(payload.get("expires_in")),
        )


@attrs.frozen(kw_only=True)
class ClientRegistration:
    """An OAuth client identity, bound to the issuer that issued it (SEP-2352)."""

    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    issuer: str | None = None
    redirect_uris: tuple[str, ...] = ()
    token_endpoint_auth_method: str = "none"
    source: str = "dynamic"  # "dynamic" | "preregistered" | "metadata_document"


@attrs.frozen(kw_only=True)
class Discovery:
    """What discovery found, so a refresh after a restart never guesses a URL."""

    resource: str | None = None
    resource_metadata_url: str | None = None
    issuer: str
    authorization_endpoint: str | None = None
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    #: The protected resource's ``scopes_supported`` (RFC 9728), for scope selection.
    scopes_supported: tuple[str, ...] | None = None
    iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    #: The authorization server's own ``scopes_supported`` (RFC 8414).
    authorization_server_scopes_supported: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class TokenState:
    """The current token state of one server: the fold of its token log."""

    client: ClientRegistration | None = None
    discovery: Discovery | None = None
    tokens: TokenSet | None = None
    #: The stored refresh token was rejected as final (invalid_grant): only a
    #: person can get new tokens.
    refresh_rejected: bool = False
    logged_out: bool = False
    #: Sequence number of the last event folded (0 for an empty log).
    last_seq: int = 0

    @property
    def refresh_token(self) -> str | None:
        """The refresh token that may still be used, if any."""
        if self.tokens is None or self.refresh_rejected:
            return None
        return self.tokens.refresh_token

    def freshness(self, now: float, refresh_buffer: float = DEFAULT_REFRESH_BUFFER) -> Freshness:
        """Classify the current access token at ``now``."""
        if self.tokens is None:
            return Freshness.NONE
        return self.tokens.freshness(now, refresh_buffer)
