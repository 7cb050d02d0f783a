"""The OAuth settings of a server's configuration entry: plain values, no HTTP.

Kept apart from :mod:`mcp_tether.adapters.oauth` so that reading the
configuration (``mcp-tether status``) does not load the HTTP and MCP stacks.
"""

from __future__ import annotations

import attrs

__all__ = [
    "PRIVATE_KEY_JWT",
    "SECRET_AUTH_METHODS",
    "SIGNING_ALGORITHMS",
    "SUPPORTED_AUTH_METHODS",
    "OAuthSettings",
]

#: Token endpoint authentication with a client secret.
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: RFC 7523 client assertions signed with the client's private key.
PRIVATE_KEY_JWT = "private_key_jwt"
#: Every token endpoint authentication method mcp-tether can use.
SUPPORTED_AUTH_METHODS = ("none", *SECRET_AUTH_METHODS, PRIVATE_KEY_JWT)
#: JWS algorithms accepted for ``private_key_jwt``.
SIGNING_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")


@attrs.frozen(kw_only=True)
class OAuthSettings:
    """The OAuth part of one server's configuration entry.

    Attributes:
        client_id: a pre-registered client; skips registration when set.
        client_secret: its secret, if it is a confidential client.
        token_endpoint_auth_method: ``none``, ``client_secret_post`` or
            ``client_secret_basic``; chosen from the server's metadata when None.
        scopes: space-separated scopes to request; overrides scope selection.
        client_credentials: machine-to-machine use (client credentials grant, no browser).
        client_metadata_url: an https Client ID Metadata Document URL (CIMD).
        callback_port: fixed loopback port for the authorization callback
            (0: ephemeral, reusing the registered port when it is free).
        client_name: ``client_name`` sent with dynamic registration.
        private_key: a PEM private key (PKCS#8, EC or RSA) for ``private_key_jwt``
            client authentication; the assertion's ``aud`` is the issuer.
        signing_algorithm: the JWS algorithm for ``private_key_jwt`` (default:
            ES256 for an EC key, RS256 for an RSA key).
        idp_token_endpoint: cross-app access (SEP-990): the enterprise identity
            provider's token endpoint, where ``idp_id_token`` is exchanged for an
            identity assertion grant (ID-JAG) that is then presented to the
            authorization server (RFC 7523 ``jwt-bearer`` grant). No browser.
        idp_client_id: the client id at the identity provider, sent with the exchange.
        idp_client_secret: its secret (HTTP Basic at the identity provider), if any.
        idp_id_token: the ID token the identity provider issued to the user.
    """

    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    token_endpoint_auth_method: str | None = None
    scopes: str | None = None
    client_credentials: bool = False
    client_metadata_url: str | None = None
    callback_port: int = 0
    client_name: str = "mcp-tether"
    private_key: str | None = attrs.field(default=None, repr=False)
    signing_algorithm: str | None = None
    idp_token_endpoint: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = attrs.field(default=None, repr=False)
    idp_id_token: str | None = attrs.field(default=None, repr=False)

    @property
    def cross_app_access(self) -> bool:
        """Tokens come from an identity provider's ID-JAG (SEP-990), not a browser."""
        return self.idp_token_endpoint is not None

    @property
    def without_browser(self) -> bool:
        """Tokens come from a grant that needs no person (client credentials or cross-app access)."""
        return self.client_credentials or self.cross_app_access
