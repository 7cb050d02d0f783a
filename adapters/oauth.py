"""The OAuth 2.1 edge: HTTP in, values out.

Theory of operation
-------------------
:class:`OAuthClient` speaks to one MCP server's authorization server and turns
every answer into a value the state machine understands. It decides nothing the
transition table decides: a failed refresh is reported as a classified
:class:`TokenFailure`, never answered by opening a browser.

* **Discovery** (:meth:`OAuthClient.discover`): protected resource metadata
  (RFC 9728) from the 401's ``resource_metadata``, then the path-aware and root
  well-known URLs; the advertised ``resource`` must cover the configured server
  URL. Authorization server metadata (RFC 8414, then OpenID Connect) must name
  exactly the expected issuer. Metadata that does not list PKCE ``S256`` is
  refused before anything else happens. A server that publishes no metadata at
  all gets the 2025-03-26 defaults on its own origin.
* **Client identity** (:meth:`OAuthClient.ensure_client`): a pre-registered
  client from the configuration, else a Client ID Metadata Document when the
  server supports one and it is configured, else dynamic registration
  (RFC 7591). Dynamic credentials are bound to the issuer that minted them and
  are never shown to another one; a registration whose redirect URI differs
  (another loopback port) is replaced by a new one.
* **Token requests** (code exchange, refresh, client credentials) carry the
  RFC 8707 ``resource`` and never raise on HTTP trouble. Classification:
  ``invalid_grant`` and other OAuth errors are FINAL, ``invalid_client`` or a
  bare 401 is CLIENT_INVALID, and 5xx, 429, 408, timeouts, connection errors,
  redirects, HTML, malformed JSON or a body without a usable ``access_token``
  are TRANSIENT (with ``Retry-After`` when the server sent one).

Every request has a total deadline and a response-size cap, is sent without the
caller's client-level ``auth``, and follows redirects only within the origin it
was sent to, so credentials and bodies never reach another origin. URLs learnt
from servers must be ``https`` (``http`` only on loopback, and only when the
MCP server itself is on loopback), and literal private, link-local or loopback
addresses are refused unless the MCP server itself lives on such an address.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import ipaddress
import json
import math
import secrets
import socket
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import quote, urlencode, urlsplit

import attrs
import httpx2
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from mcp.client.auth import OAuthRegistrationError
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
    handle_registration_response,
    is_valid_client_metadata_url,
    issuers_match,
    union_scopes,
)
from mcp.shared.auth import OAuthClientMetadata, OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import AnyUrl, BaseModel, ValidationError

from mcp_tether.adapters.browser import UnsafeURLError, validate_authorization_url
from mcp_tether.adapters.oauth_settings import (
    PRIVATE_KEY_JWT,
    SECRET_AUTH_METHODS,
    SUPPORTED_AUTH_METHODS,
    OAuthSettings,
)
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "DiscoveryError",
    "InsecureServerError",
    "OAuthClient",
    "OAuthError",
    "OAuthSettings",
    "RegistrationError",
    "TokenFailure",
    "select_scope",
    "step_up_scope",
]

#: Seconds any single OAuth request (all its redirect hops included) may take.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Largest response body read from an authorization server; larger ones are malformed.
MAX_RESPONSE_BYTES = 1 << 20
#: Same-origin redirect hops followed per request.
MAX_REDIRECTS = 3
#: Longest ``Retry-After`` believed, in seconds (a hostile server cannot park us for days).
MAX_RETRY_AFTER = 3600.0
#: Longest server-supplied text (``error_description``) quoted in a message.
_MAX_QUOTED = 200
_PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
_PROTOCOL_VERSION = "2025-11-25"
#: RFC 7523 section 2.2: a client assertion authenticating the client.
_CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Seconds a client assertion is valid.
_CLIENT_ASSERTION_LIFETIME = 300
_TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
_ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_ModelT = TypeVar("_ModelT", bound=BaseModel)


class OAuthError(Exception):
    """OAuth could not get as far as a token request for one server.

    Attributes:
        server_name: the configured server this is about.
        failure_class: TRANSIENT when retrying later may help (network trouble,
            5xx), FINAL when the server or configuration must change first.
    """

    def __init__(self, message: str, *, server_name: str, failure_class: FailureClass) -> None:
        super().__init__(message)
        self.server_name = server_name
        self.failure_class = failure_class


class DiscoveryError(OAuthError):
    """Protected resource or authorization server metadata could not be found or read."""


class RegistrationError(OAuthError):
    """No usable client identity: registration failed or is not possible."""


class InsecureServerError(OAuthError):
    """The server asked for something unsafe (no PKCE S256, wrong issuer, foreign
    resource, plain-HTTP or private-address endpoints); nothing was sent to it."""

    def __init__(self, message: str, *, server_name: str) -> None:
        super().__init__(message, server_name=server_name, failure_class=FailureClass.FINAL)


@attrs.frozen(kw_only=True)
class TokenFailure:
    """A token request that produced no tokens, classified for the state machine.

    Attributes:
        failure_class: FINAL, CLIENT_INVALID or TRANSIENT (see ``FailureClass``).
        reason: what happened, for people; never contains a secret.
        retry_after: seconds the server asked us to wait (429/503 ``Retry-After``).
        error: the OAuth ``error`` code when the server sent one.
    """

    failure_class: FailureClass
    reason: str
    retry_after: float | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class _Reply:
    status: int
    headers: httpx2.Headers
    body: bytes
    url: str


class _TransportTrouble(Exception):
    """A request produced no usable HTTP response (timeout, connection error, oversized body)."""


def select_scope(www_authenticate: str | None, discovery: Discovery, configured: str | None = None) -> str | None:
    """Choose the scope to request in a new authorization.

    Order: the configured scope, then the ``scope`` of the 401's
    ``WWW-Authenticate``, then the protected resource's ``scopes_supported``,
    else None (the parameter is omitted). ``offline_access`` is added when the
    authorization server lists it, so a refresh token is issued (SEP-2207).

    Args:
        www_authenticate: the raw ``WWW-Authenticate`` header of the 401, if any.
        discovery: what discovery found.
        configured: the scope from the server's configuration entry.

    Returns:
        A space-separated scope string, or None to omit ``scope``.
    """
    scope = configured or _www_authenticate_field(www_authenticate, "scope")
    if scope is None and discovery.scopes_supported is not None:
        scope = " ".join(discovery.scopes_supported) or None
    if (
        scope is not None
        and "offline_access" in (discovery.authorization_server_scopes_supported or ())
        and "offline_access" not in scope.split()
    ):
        scope = f"{scope} offline_access"
    return scope


def step_up_scope(requested: str | None, granted: str | None, challenged: str | None) -> str | None:
    """The scope to request after a 403 ``insufficient_scope`` (SEP-2350).

    The union, in order, of what was requested before, what was granted, and
    what the server now demands, so escalating one operation keeps the others.

    Args:
        requested: the scope of the previous authorization request.
        granted: the scope the current tokens carry.
        challenged: the ``scope`` of the 403's ``WWW-Authenticate``.

    Returns:
        The merged space-separated scope, or None when all three are empty.
    """
    return union_scopes(union_scopes(requested, granted), challenged)


def _www_authenticate_field(header: str | None, name: str) -> str | None:
    if not header:
        return None
    return extract_field_from_www_auth(httpx2.Response(401, headers={"WWW-Authenticate": header}), name)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string denotes by itself, including inet_aton forms (``0x7f000001``)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _ip_literal(host)
    return address is not None and address.is_loopback


def _is_internal_host(host: str) -> bool:
    if _is_loopback_host(host):
        return True
    address = _ip_literal(host)
    return address is not None and (
        address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _quote_server_text(value: object) -> str:
    """Server-supplied text made safe to quote: printable, bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "..."


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: the raw header value.
        now: the current wall-clock time, for HTTP dates.

    Returns:
        Seconds within ``[0, MAX_RETRY_AFTER]``, or None when absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    seconds: float
    if value.isascii() and value.isdigit():  # RFC 9110 delta-seconds: ASCII digits only
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class OAuthClient:
    """OAuth requests for one configured MCP server.

    Args:
        http: the HTTP client to send with. Its client-level ``auth`` is never
            used for OAuth requests and its redirect setting is overridden.
        server_name: the configured name, used in every message.
        server_url: the MCP server's URL (the protected resource).
        settings: the OAuth part of the server's configuration.
        clock: wall clock (seconds since the epoch) stamped on received tokens.
        request_timeout: total seconds per request, redirects included.
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        server_name: str,
        server_url: str,
        settings: OAuthSettings,
        clock: Callable[[], float],
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._http = http
        self._server_name = server_name
        self._server_url = server_url
        self._settings = settings
        self._clock = clock
        self._timeout = request_timeout
        server_host = _origin(server_url)[1]
        parts = urlsplit(server_url)
        #: ``scheme://host[:port]`` of the MCP server, as written (lower case): the default issuer.
        self._server_origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        self._loopback_allowed = _is_loopback_host(server_host)
        self._internal_allowed = _is_internal_host(server_host)

    @property
    def server_name(self) -> str:
        """The configured server name."""
        return self._server_name

    @property
    def settings(self) -> OAuthSettings:
        """The OAuth settings this client was configured with."""
        return self._settings

    # -- HTTP ---------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        """One request with a total deadline, a size cap and same-origin redirects only.

        A redirect to another origin is returned as the 3xx reply, not followed.
        """
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send_following(method, url, data, json_body, headers)
        except TimeoutError as exc:
            raise _TransportTrouble(f"{url} did not answer within {self._timeout:g} s") from exc

    async def _send_following(
        self,
        method: str,
        url: str,
        data: Mapping[str, str] | None,
        json_body: object,
        headers: Mapping[str, str] | None,
    ) -> _Reply:
        origin = _origin(url)
        for _hop in range(MAX_REDIRECTS + 1):
            reply = await self._send_once(method, url, data, json_body, headers)
            if reply.status not in _REDIRECT_STATUSES or "location" not in reply.headers:
                return reply
            if method != "GET" and reply.status not in (307, 308):
                return reply  # would turn a POST into a GET and drop the grant: not followed
            try:
                target = str(httpx2.URL(url).join(reply.headers["location"]))
            except (httpx2.InvalidURL, ValueError):
                return reply
            if _origin(target) != origin:
                return reply
            url = target
        return reply

    async def _send_once(
        self,
        method: str,
        url: str,
        data: Mapping[str, str] | None,
        json_body: object,
        headers: Mapping[str, str] | None,
    ) -> _Reply:
        all_headers = {"Accept": "application/json", _PROTOCOL_VERSION_HEADER: _PROTOCOL_VERSION}
        all_headers.update(headers or {})
        try:
            async with self._http.stream(
                method,
                url,
                data=dict(data) if data is not None else None,
                json=json_body,
                headers=all_headers,
                auth=None,
                follow_redirects=False,
                timeout=httpx2.Timeout(self._timeout),
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise _TransportTrouble(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
                return _Reply(status=response.status_code, headers=response.headers, body=b"".join(chunks), url=url)
        except httpx2.HTTPError as exc:
            raise _TransportTrouble(f"request to {url} failed: {type(exc).__name__}") from exc
        except (httpx2.InvalidURL, UnicodeError, ValueError) as exc:
            raise _TransportTrouble(f"request to {url} could not be sent: {type(exc).__name__}") from exc

    # -- discovery ----------------------------------------------------------

    def _check_server_url(self, url: str, what: str) -> str:
        """Refuse a server-supplied URL we must not contact; return it unchanged."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        problem: str | None = None
        if scheme not in ("https", "http") or not host:
            problem = "is not an http(s) URL"
        elif parts.username is not None or parts.password is not None:
            problem = "carries credentials"
        elif scheme == "http" and not (_is_loopback_host(host) and self._loopback_allowed):
            problem = "uses plain http (https is required except on loopback)"
        elif _is_internal_host(host) and not self._internal_allowed:
            problem = "points at a loopback, private or link-local address"
        if problem is not None:
            raise InsecureServerError(
                f"Server '{self._server_name}': the {what} {_quote_server_text(url)} {problem}; "
                "refusing to contact it. Check the server URL in the configuration, or report it "
                "to the server's operator.",
                server_name=self._server_name,
            )
        return url

    def _discovery_failed(self, what: str, failure_class: FailureClass) -> DiscoveryError:
        advice = (
            "this is usually temporary; it will be retried"
            if failure_class is FailureClass.TRANSIENT
            else "check the server URL in the configuration"
        )
        return DiscoveryError(
            f"Server '{self._server_name}': OAuth discovery failed: {what}; {advice}.",
            server_name=self._server_name,
            failure_class=failure_class,
        )

    async def _get_metadata(self, url: str) -> _Reply:
        try:
            return await self._send("GET", url)
        except _TransportTrouble as exc:
            raise self._discovery_failed(str(exc), FailureClass.TRANSIENT) from exc

    async def _get_model(self, url: str, model: type[_ModelT]) -> tuple[_Reply, _ModelT | None, dict[str, object]]:
        """GET a metadata document: the reply, and the validated model and raw object when it is one."""
        reply = await self._get_metadata(url)
        raw = _json_object(reply.body) if reply.status == 200 else None
        if raw is None:
            return reply, None, {}
        try:
            return reply, model.model_validate(raw), raw
        except ValidationError:
            return reply, None, {}

    async def discover(self, www_authenticate: str | None) -> Discovery:
        """Find the authorization server for this MCP server and check it is safe to use.

        Args:
            www_authenticate: the ``WWW-Authenticate`` header of the server's 401,
                or None to use the well-known URLs only.

        Returns:
            The endpoints, issuer and capabilities, ready to be logged.

        Raises:
            InsecureServerError: PKCE S256 not offered, issuer or resource
                mismatch, or an endpoint that is not https / points inward.
            DiscoveryError: metadata could not be fetched or read
                (``failure_class`` says whether retrying may help).
        """
        hinted = _www_authenticate_field(www_authenticate, "resource_metadata")
        if hinted is not None:
            self._check_server_url(hinted, "resource metadata URL")
        prm: ProtectedResourceMetadata | None = None
        prm_raw: dict[str, object] = {}
        prm_url: str | None = None
        server_trouble: str | None = None
        for url in build_protected_resource_metadata_discovery_urls(hinted, self._server_url):
            reply, prm, prm_raw = await self._get_model(url, ProtectedResourceMetadata)
            if _server_trouble(reply.status):
                server_trouble = f"{url} answered HTTP {reply.status}"
            if prm is not None:
                prm_url = url
                break
        if prm is None and server_trouble is not None:
            # A server error says nothing about whether metadata exists: never fall
            # back to the legacy path on it.
            raise self._discovery_failed(server_trouble, FailureClass.TRANSIENT)

        canonical = resource_url_from_server_url(self._server_url)
        authorization_server: str | None = None
        resource = canonical
        if prm is not None:
            resource = _raw_str(prm_raw, "resource") or str(prm.resource)
            if not check_resource_allowed(requested_resource=canonical, configured_resource=resource):
                raise InsecureServerError(
                    f"Server '{self._server_name}': its protected resource metadata names the resource "
                    f"{_quote_server_text(resource)}, which does not cover the configured URL {canonical}; "
                    "refusing to authorize. Check the server URL in the configuration.",
                    server_name=self._server_name,
                )
            servers = prm_raw.get("authorization_servers")
            first = servers[0] if isinstance(servers, list) and servers else None
            authorization_server = first if isinstance(first, str) else str(prm.authorization_servers[0])
            self._check_server_url(authorization_server, "authorization server")

        metadata, metadata_raw = await self._authorization_server_metadata(authorization_server)
        if metadata is None:
            if authorization_server is not None:
                raise self._discovery_failed(
                    f"the authorization server {authorization_server} publishes no usable metadata",
                    FailureClass.FINAL,
                )
            return self._legacy_discovery(canonical)
        return self._checked_discovery(
            metadata,
            metadata_raw,
            resource=resource,
            resource_metadata_url=prm_url,
            scopes_supported=tuple(prm.scopes_supported) if prm and prm.scopes_supported is not None else None,
        )

    async def _authorization_server_metadata(
        self, authorization_server: str | None
    ) -> tuple[OAuthMetadata | None, dict[str, object]]:
        expected = authorization_server if authorization_server is not None else self._server_origin
        for url in build_oauth_authorization_server_metadata_discovery_urls(authorization_server, self._server_url):
            reply, metadata, raw = await self._get_model(url, OAuthMetadata)
            if _server_trouble(reply.status):
                raise self._discovery_failed(f"{url} answered HTTP {reply.status}", FailureClass.TRANSIENT)
            if metadata is None:
                continue
            issuer = _raw_str(raw, "issuer") or str(metadata.issuer)
            # Exact match (RFC 8414 section 3.3), except that a root issuer with and
            # without its trailing slash names the same server.
            if not issuers_match(issuer, expected):
                raise InsecureServerError(
                    f"Server '{self._server_name}': the authorization server metadata at {url} names the "
                    f"issuer {_quote_server_text(issuer)}, not the expected {expected} (RFC 8414 section "
                    "3.3); refusing to use it. Report this to the server's operator.",
                    server_name=self._server_name,
                )
            return metadata, raw
        return None, {}

    def _legacy_discovery(self, canonical: str) -> Discovery:
        """No metadata anywhere: the 2025-03-26 default endpoints on the server's origin."""
        origin = self._server_origin
        self._check_server_url(origin, "authorization server")
        return Discovery(
            resource=canonical,
            issuer=origin,
            authorization_endpoint=f"{origin}/authorize",
            token_endpoint=f"{origin}/token",
            registration_endpoint=f"{origin}/register",
        )

    def _checked_discovery(
        self,
        metadata: OAuthMetadata,
        raw: Mapping[str, object],
        *,
        resource: str,
        resource_metadata_url: str | None,
        scopes_supported: tuple[str, ...] | None,
    ) -> Discovery:
        methods = metadata.code_challenge_methods_supported or []
        if "S256" not in methods:
            offered = ", ".join(_quote_server_text(m) for m in methods) or "none"
            raise InsecureServerError(
                f"Server '{self._server_name}': its authorization server does not offer PKCE with S256 "
                f"(code_challenge_methods_supported: {offered}); refusing to authorize, since the "
                "authorization code could be stolen. Ask the server's operator to enable S256.",
                server_name=self._server_name,
            )

        def endpoint(name: str) -> str | None:
            value = _raw_str(raw, name) or (str(getattr(metadata, name)) if getattr(metadata, name) else None)
            return None if value is None else self._check_server_url(value, name.replace("_", " "))

        authorization_endpoint = endpoint("authorization_endpoint")
        if authorization_endpoint is not None:
            try:
                validate_authorization_url(authorization_endpoint)
            except UnsafeURLError as exc:
                raise InsecureServerError(
                    f"Server '{self._server_name}': its authorization endpoint is unsafe to open in a "
                    f"browser ({exc}); refusing to authorize. Report this to the server's operator.",
                    server_name=self._server_name,
                ) from exc
        token_endpoint = endpoint("token_endpoint")
        assert token_endpoint is not None  # required by OAuthMetadata
        auth_methods = metadata.token_endpoint_auth_methods_supported
        as_scopes = metadata.scopes_supported
        return Discovery(
            resource=resource,
            resource_metadata_url=resource_metadata_url,
            issuer=_raw_str(raw, "issuer") or str(metadata.issuer),
            authorization_endpoint=authorization_endpoint,
            token_endpoint=token_endpoint,
            registration_endpoint=endpoint("registration_endpoint"),
            revocation_endpoint=endpoint("revocation_endpoint"),
            scopes_supported=scopes_supported,
            iss_parameter_supported=metadata.authorization_response_iss_parameter_supported is True,
            client_id_metadata_document_supported=metadata.client_id_metadata_document_supported is True,
            token_endpoint_auth_methods_supported=tuple(auth_methods) if auth_methods is not None else None,
            authorization_server_scopes_supported=tuple(as_scopes) if as_scopes is not None else None,
        )

    # -- client identity ----------------------------------------------------

    async def ensure_client(
        self,
        discovery: Discovery,
        current: ClientRegistration | None,
        redirect_uri: str | None,
        *,
        scope: str | None = None,
    ) -> ClientRegistration:
        """The client identity to use with ``discovery``'s authorization server.

        Order: the pre-registered client from the configuration; the Client ID
        Metadata Document when configured and supported; ``current`` when it is
        bound to this issuer (or unbound) and registered for ``redirect_uri``;
        otherwise a new dynamic registration. Loopback redirect URIs carry the
        callback port, so a dynamic client registered for another port is
        replaced (pass a fixed ``callback_port`` to keep one registration).

        Args:
            discovery: what discovery found.
            current: the registration on record, if any.
            redirect_uri: the callback URI the authorization will use (None for
                the client credentials grant).
            scope: the scope about to be requested, registered with the client
                together with the resource's ``scopes_supported``.

        Returns:
            A registration bound to ``discovery.issuer`` (pre-registered ones are unbound).

        Raises:
            RegistrationError: registration is impossible or failed.
        """
        settings = self._settings
        if settings.client_id is not None:
            method = settings.token_endpoint_auth_method or self._default_auth_method(
                discovery, has_secret=settings.client_secret is not None, has_key=settings.private_key is not None
            )
            return ClientRegistration(
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                issuer=None,
                redirect_uris=(redirect_uri,) if redirect_uri else (),
                token_endpoint_auth_method=method,
                source="preregistered",
            )
        if settings.client_credentials:
            raise RegistrationError(
                f"Server '{self._server_name}' is configured for the client credentials grant but has no "
                "client_id; add client_id and client_secret to its configuration entry.",
                server_name=self._server_name,
                failure_class=FailureClass.FINAL,
            )
        metadata_url = settings.client_metadata_url
        if metadata_url is not None and discovery.client_id_metadata_document_supported:
            if not is_valid_client_metadata_url(metadata_url):
                raise RegistrationError(
                    f"Server '{self._server_name}': client_metadata_url {metadata_url!r} must be an https "
                    "URL with a path; fix it in the configuration.",
                    server_name=self._server_name,
                    failure_class=FailureClass.FINAL,
                )
            return ClientRegistration(
                client_id=metadata_url,
                issuer=discovery.issuer,
                redirect_uris=(redirect_uri,) if redirect_uri else (),
                token_endpoint_auth_method="none",  # noqa: S106  # a method name, not a password
                source="metadata_document",
            )
        if current is not None and current.source == "dynamic" and self._reusable(current, discovery, redirect_uri):
            return current
        return await self._register(discovery, redirect_uri, scope)

    @staticmethod
    def _reusable(current: ClientRegistration, discovery: Discovery, redirect_uri: str | None) -> bool:
        if _bound_elsewhere(current, discovery):
            return False
        return redirect_uri is None or redirect_uri in current.redirect_uris

    @staticmethod
    def _default_auth_method(discovery: Discovery, *, has_secret: bool, has_key: bool = False) -> str:
        """The first method we support that the server offers, key- then secret-based first when we hold one.

        Without a secret (dynamic registration) ``none`` comes first; a server that
        does not offer it gets a secret-based method and issues the secret.
        """
        preferred: tuple[str, ...] = (
            ("client_secret_basic", "client_secret_post", "none")
            if has_secret
            else ("none", "client_secret_basic", "client_secret_post")
        )
        if has_key:
            preferred = (PRIVATE_KEY_JWT, *preferred)
        offered = discovery.token_endpoint_auth_methods_supported
        if offered is None:
            return preferred[0]
        return next((method for method in preferred if method in offered), preferred[0])

    async def _register(self, discovery: Discovery, redirect_uri: str | None, scope: str | None) -> ClientRegistration:
        endpoint = discovery.registration_endpoint
        if endpoint is None:
            raise RegistrationError(
                f"Server '{self._server_name}': its authorization server does not support dynamic client "
                "registration; register a client with it and add client_id (and client_secret) to the "
                "server's configuration entry.",
                server_name=self._server_name,
                failure_class=FailureClass.FINAL,
            )
        if redirect_uri is None:
            raise RegistrationError(
                f"Server '{self._server_name}': dynamic registration needs a redirect URI.",
                server_name=self._server_name,
                failure_class=FailureClass.FINAL,
            )
        method = self._settings.token_endpoint_auth_method or self._default_auth_method(discovery, has_secret=False)
        registered_scope = union_scopes(scope, " ".join(discovery.scopes_supported or ()) or None)
        try:
            client_metadata = OAuthClientMetadata(
                redirect_uris=[AnyUrl(redirect_uri)],
                token_endpoint_auth_method=method,  # type: ignore[arg-type]  # checked against SUPPORTED_AUTH_METHODS below
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                scope=registered_scope,
                client_name=self._settings.client_name,
            )
        except ValidationError as exc:
            raise RegistrationError(
                f"Server '{self._server_name}': cannot register: invalid client metadata "
                f"(token_endpoint_auth_method {method!r} must be one of {', '.join(SUPPORTED_AUTH_METHODS)}).",
                server_name=self._server_name,
                failure_class=FailureClass.FINAL,
            ) from exc
        try:
            reply = await self._send(
                "POST",
                endpoint,
                json_body=client_metadata.model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        except _TransportTrouble as exc:
            raise RegistrationError(
                f"Server '{self._server_name}': client registration failed: {exc}; it will be retried.",
                server_name=self._server_name,
                failure_class=FailureClass.TRANSIENT,
            ) from exc
        if reply.status not in (200, 201):
            transient = _server_trouble(reply.status)
            detail = _oauth_error_text(reply.body) or f"HTTP {reply.status}"
            raise RegistrationError(
                f"Server '{self._server_name}': client registration at {endpoint} was refused ({detail}); "
                + ("it will be retried." if transient else "register a client by hand and configure client_id."),
                server_name=self._server_name,
                failure_class=FailureClass.TRANSIENT if transient else FailureClass.FINAL,
            )
        try:
            info = await handle_registration_response(httpx2.Response(reply.status, content=reply.body))
            check_registration_usable(info)
        except OAuthRegistrationError as exc:
            raise RegistrationError(
                f"Server '{self._server_name}': the client registration response from {endpoint} is not "
                f"usable ({_quote_server_text(exc)}); register a client by hand and configure client_id.",
                server_name=self._server_name,
                failure_class=FailureClass.FINAL,
            ) from exc
        return ClientRegistration(
            client_id=info.client_id,
            client_secret=info.client_secret,
            issuer=discovery.issuer,
            redirect_uris=(redirect_uri,),
            token_endpoint_auth_method=info.token_endpoint_auth_method or method,
            source="dynamic",
        )

    # -- authorization request -----------------------------------------------

    def authorization_url(
        self,
        discovery: Discovery,
        client: ClientRegistration,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scope: str | None,
    ) -> str:
        """Build the authorization request URL (PKCE S256, ``resource``, ``scope``).

        Args:
            discovery: what discovery found.
            client: the client identity.
            redirect_uri: the loopback callback URI.
            state: the single-use ``state`` value.
            code_challenge: the S256 PKCE challenge.
            scope: the scope to request, or None to omit it.

        Returns:
            The URL to open (not yet validated for opening).

        Raises:
            DiscoveryError: the server has no authorization endpoint.
        """
        endpoint = discovery.authorization_endpoint
        if endpoint is None:
            raise self._discovery_failed("the authorization server has no authorization endpoint", FailureClass.FINAL)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if discovery.resource is not None:
            params["resource"] = discovery.resource
        if scope:
            params["scope"] = scope
            if "offline_access" in scope.split():
                params["prompt"] = "consent"
        separator = "&" if urlsplit(endpoint).query else ("" if endpoint.endswith("?") else "?")
        return f"{endpoint}{separator}{urlencode(params, quote_via=quote)}"

    # -- token requests -----------------------------------------------------

    async def exchange_code(
        self,
        discovery: Discovery,
        client: ClientRegistration,
        *,
        code: str,
        code_verifier: str,
        redirect_uri: str,
        scope: str | None,
    ) -> TokenSet | TokenFailure:
        """Redeem an authorization code (with its PKCE verifier) for tokens.

        Args:
            discovery: what discovery found.
            client: the client the authorization was requested for.
            code: the authorization code from the callback.
            code_verifier: the PKCE verifier of this authorization.
            redirect_uri: the redirect URI of the authorization request.
            scope: the scope requested; recorded when the response omits ``scope``.

        Returns:
            The new tokens, or a classified failure (never raises on HTTP trouble).
        """
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._token_request(
            discovery, client, form, previous=None, secrets=(code, code_verifier), requested_scope=scope
        )

    async def refresh(
        self, discovery: Discovery, client: ClientRegistration, tokens: TokenSet, scope: str | None = None
    ) -> TokenSet | TokenFailure:
        """Use the refresh token; a response without a new one keeps the old one.

        Args:
            discovery: what discovery found.
            client: the client the tokens were issued to.
            tokens: the current token set (its refresh token is used).
            scope: a narrower scope to ask for, or None for the granted one.

        Returns:
            The new tokens, or a classified failure (never raises on HTTP trouble).
        """
        if tokens.refresh_token is None:
            return TokenFailure(
                failure_class=FailureClass.FINAL,
                reason=f"Server '{self._server_name}': there is no refresh token to use.",
            )
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        if scope:
            form["scope"] = scope
        return await self._token_request(discovery, client, form, previous=tokens, secrets=(tokens.refresh_token,))

    async def client_credentials(
        self, discovery: Discovery, client: ClientRegistration, scope: str | None
    ) -> TokenSet | TokenFailure:
        """Get tokens with the client credentials grant (machine to machine, no browser).

        Args:
            discovery: what discovery found.
            client: the pre-registered confidential client.
            scope: the scope to request, or None to omit it.

        Returns:
            The new tokens, or a classified failure (never raises on HTTP trouble).
        """
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        return await self._token_request(discovery, client, form, previous=None, secrets=(), requested_scope=scope)

    def _client_authentication(
        self, client: ClientRegistration, form: dict[str, str], *, audience: str
    ) -> tuple[dict[str, str], str | None]:
        """Add client authentication; returns headers, or an error text when impossible.

        ``audience`` is the authorization server's issuer, the ``aud`` of a
        ``private_key_jwt`` assertion.
        """
        form["client_id"] = client.client_id
        method = client.token_endpoint_auth_method
        secret = client.client_secret
        if method not in SUPPORTED_AUTH_METHODS:
            return (
                {},
                f"the client uses token endpoint auth method {method!r}, which mcp-tether does not support",
            )
        if method == PRIVATE_KEY_JWT:
            assertion, problem = self._client_assertion(client.client_id, audience)
            if assertion is not None:
                form["client_assertion_type"] = _CLIENT_ASSERTION_TYPE
                form["client_assertion"] = assertion
            return {}, problem
        if method in SECRET_AUTH_METHODS and not secret:
            return {}, f"the client is registered for {method} but has no client secret"
        if method == "client_secret_basic" and secret:
            return _basic_auth(client.client_id, secret), None
        if method == "client_secret_post" and secret:
            form["client_secret"] = secret
        return {}, None

    async def _token_request(
        self,
        discovery: Discovery,
        client: ClientRegistration,
        form: dict[str, str],
        *,
        previous: TokenSet | None,
        secrets: tuple[str, ...],
        requested_scope: str | None = None,
    ) -> TokenSet | TokenFailure:
        """One token request; a response without ``scope`` is recorded with ``requested_scope``."""
        name = self._server_name
        endpoint = discovery.token_endpoint
        if _bound_elsewhere(client, discovery):
            return TokenFailure(
                failure_class=FailureClass.CLIENT_INVALID,
                reason=f"Server '{name}': the client was registered with {client.issuer}, not with the "
                f"current authorization server {discovery.issuer}; it must register again.",
            )
        if discovery.resource is not None:
            form["resource"] = discovery.resource
        headers, problem = self._client_authentication(client, form, audience=discovery.issuer)
        if problem is not None:
            return TokenFailure(failure_class=FailureClass.CLIENT_INVALID, reason=f"Server '{name}': {problem}.")
        redact = (
            *secrets,
            *((client.client_secret,) if client.client_secret else ()),
            *((form["client_assertion"],) if "client_assertion" in form else ()),
        )
        reply = await self._post_token_form(endpoint, form, headers, redact=redact, failed="token request failed")
        if isinstance(reply, TokenFailure):
            return reply
        result = self._classify_token_reply(reply, previous=previous, redact=redact)
        if isinstance(result, TokenSet) and result.scope is None and requested_scope is not None:
            result = attrs.evolve(result, scope=requested_scope)  # the server granted what was asked
        return result

    async def _post_token_form(
        self, endpoint: str, form: dict[str, str], headers: dict[str, str], *, redact: tuple[str, ...], failed: str
    ) -> _Reply | TokenFailure:
        """POST a token request; no answer at all (timeout, connection error) is a transient failure."""
        try:
            return await self._send("POST", endpoint, data=form, headers=headers)
        except _TransportTrouble as exc:
            return TokenFailure(
                failure_class=FailureClass.TRANSIENT,
                reason=_redacted(f"Server '{self._server_name}': {failed}: {exc}.", redact),
            )

    def _classify_token_reply(
        self, reply: _Reply, *, previous: TokenSet | None, redact: tuple[str, ...]
    ) -> TokenSet | TokenFailure:
        name = self._server_name
        now = self._clock()
        where = f"Server '{name}': the token endpoint {reply.url}"
        payload = _json_object(reply.body)
        retry_after = parse_retry_after(reply.headers.get("retry-after"), now)
        if reply.status == 200 and payload is not None:
            tokens = TokenSet.from_token_response(payload, received_at=now, previous=previous)
            if tokens is not None:
                return tokens
            return TokenFailure(
                failure_class=FailureClass.TRANSIENT,
                reason=f"{where} answered without a usable access_token.",
            )
        if _server_trouble(reply.status) or reply.status == 408:
            return TokenFailure(
                failure_class=FailureClass.TRANSIENT,
                reason=f"{where} answered HTTP {reply.status}.",
                retry_after=retry_after,
            )
        error = payload.get("error") if payload is not None else None
        if not isinstance(error, str) or not error:
            if reply.status == 401:
                return TokenFailure(
                    failure_class=FailureClass.CLIENT_INVALID,
                    reason=f"{where} rejected the client (HTTP 401).",
                )
            shape = "HTML or malformed JSON" if payload is None else "a JSON object without an OAuth error"
            status = f"HTTP {reply.status}"
            if reply.status in _REDIRECT_STATUSES:
                status += " (a redirect to another origin, not followed)"
            return TokenFailure(
                failure_class=FailureClass.TRANSIENT,
                reason=f"{where} answered {status} with {shape}.",
                retry_after=retry_after,
            )
        description = payload.get("error_description") if payload is not None else None
        detail = _quote_server_text(_redacted(error, redact))
        if description:
            detail += f": {_quote_server_text(_redacted(str(description), redact))}"
        reason = f"{where} answered {detail} (HTTP {reply.status})."
        failure_class = {
            "invalid_grant": FailureClass.FINAL,
            "invalid_client": FailureClass.CLIENT_INVALID,
            "temporarily_unavailable": FailureClass.TRANSIENT,
            "server_error": FailureClass.TRANSIENT,
        }.get(error, FailureClass.FINAL)
        return TokenFailure(failure_class=failure_class, reason=reason, retry_after=retry_after, error=error)

    @functools.cached_property
    def _signing_key(self) -> tuple[PrivateKeyTypes | None, str | None]:
        """The configured private key, parsed once, or an error text (never containing the key)."""
        key_pem = self._settings.private_key
        if not key_pem:
            return None, "the client uses private_key_jwt but no private key is configured (oauth.privateKey)"
        try:
            return serialization.load_pem_private_key(key_pem.encode(), password=None), None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None, "the configured private key (oauth.privateKey) is not an unencrypted PEM private key"

    def _client_assertion(self, client_id: str, audience: str) -> tuple[str | None, str | None]:
        """A signed RFC 7523 client assertion, or an error text (never containing the key)."""
        key, problem = self._signing_key
        if key is None:
            return None, problem
        algorithm = self._settings.signing_algorithm or (
            "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        )
        now = int(self._clock())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + _CLIENT_ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),
        }
        try:
            return jwt.encode(claims, key, algorithm=algorithm), None  # type: ignore[arg-type]
        except (jwt.PyJWTError, NotImplementedError, ValueError, TypeError):
            return None, f"cannot sign a client assertion with {algorithm} and the configured private key"

    async def cross_app_access(
        self, discovery: Discovery, client: ClientRegistration, scope: str | None
    ) -> TokenSet | TokenFailure:
        """Get tokens by cross-app access (SEP-990): no browser, the identity provider vouches.

        1. RFC 8693 token exchange at ``settings.idp_token_endpoint``: the
           configured ID token for an identity assertion grant (ID-JAG) whose
           audience is ``discovery.issuer`` and resource the MCP server.
        2. RFC 7523 ``jwt-bearer`` grant at the authorization server with that
           ID-JAG, authenticated as ``client``.

        Args:
            discovery: what discovery found.
            client: the pre-registered client at the authorization server.
            scope: the scope to request, or None to omit it.

        Returns:
            The new tokens, or a classified failure (never raises on HTTP trouble).
        """
        name = self._server_name
        settings = self._settings
        endpoint, id_token = settings.idp_token_endpoint, settings.idp_id_token
        if endpoint is None or not id_token:
            return TokenFailure(
                failure_class=FailureClass.FINAL,
                reason=f"Server '{name}': cross-app access needs oauth.idpTokenEndpoint and oauth.idpIdToken.",
            )
        try:
            endpoint = self._check_server_url(endpoint, "identity provider token endpoint")
        except OAuthError as exc:
            return TokenFailure(failure_class=FailureClass.FINAL, reason=str(exc))
        form = {
            "grant_type": _TOKEN_EXCHANGE_GRANT,
            "subject_token": id_token,
            "subject_token_type": _ID_TOKEN_TYPE,
            "requested_token_type": _ID_JAG_TYPE,
            "audience": discovery.issuer,
            "resource": discovery.resource or resource_url_from_server_url(self._server_url),
        }
        if scope:
            form["scope"] = scope
        headers: dict[str, str] = {}
        if settings.idp_client_id is not None:
            if settings.idp_client_secret:
                headers = _basic_auth(settings.idp_client_id, settings.idp_client_secret)
            else:
                form["client_id"] = settings.idp_client_id
        redact = (id_token, *((settings.idp_client_secret,) if settings.idp_client_secret else ()))
        reply = await self._post_token_form(
            endpoint, form, headers, redact=redact, failed="the identity provider's token exchange failed"
        )
        if isinstance(reply, TokenFailure):
            return reply
        exchanged = self._classify_token_reply(reply, previous=None, redact=redact)
        if isinstance(exchanged, TokenFailure):
            return attrs.evolve(exchanged, reason=f"{exchanged.reason} (identity provider token exchange)")
        grant = {"grant_type": _JWT_BEARER_GRANT, "assertion": exchanged.access_token}
        if scope:
            grant["scope"] = scope
        return await self._token_request(
            discovery, client, grant, previous=None, secrets=(exchanged.access_token,), requested_scope=scope
        )

    async def grant_without_browser(
        self, discovery: Discovery, client: ClientRegistration, scope: str | None
    ) -> TokenSet | TokenFailure:
        """The configured browserless grant: cross-app access when configured, else client credentials.

        Args:
            discovery: what discovery found.
            client: the pre-registered client.
            scope: the scope to request, or None to omit it.

        Returns:
            The new tokens, or a classified failure (never raises on HTTP trouble).
        """
        if self._settings.cross_app_access:
            return await self.cross_app_access(discovery, client, scope)
        return await self.client_credentials(discovery, client, scope)

    # -- revocation ---------------------------------------------------------

    async def revoke(self, discovery: Discovery, client: ClientRegistration, tokens: TokenSet) -> bool:
        """Revoke the refresh and access tokens (RFC 7009) when the server offers it.

        Args:
            discovery: what discovery found.
            client: the client the tokens were issued to.
            tokens: the tokens to revoke.

        Returns:
            True when every revocation request was accepted; False when the
            server has no revocation endpoint or any request failed (never raises).
        """
        endpoint = discovery.revocation_endpoint
        if endpoint is None:
            return False
        if _bound_elsewhere(client, discovery):
            return False
        pairs = [(tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")]
        accepted = True
        for token, hint in pairs:
            if not token:
                continue
            form = {"token": token, "token_type_hint": hint}
            headers, problem = self._client_authentication(client, form, audience=discovery.issuer)
            if problem is not None:
                return False
            try:
                reply = await self._send("POST", endpoint, data=form, headers=headers)
            except _TransportTrouble:
                return False
            accepted = accepted and reply.status == 200
        return accepted


def _server_trouble(status: int) -> bool:
    """An answer that says "not now" (5xx, 429 Too Many Requests): worth retrying later."""
    return status >= 500 or status == 429


def _bound_elsewhere(client: ClientRegistration, discovery: Discovery) -> bool:
    """Whether the client was registered with another authorization server than the current one."""
    return client.issuer is not None and not issuers_match(client.issuer, discovery.issuer)


def _basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """The ``Authorization: Basic`` header of RFC 6749 section 2.3.1 (both parts form-encoded)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _raw_str(raw: Mapping[str, object], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _oauth_error_text(body: bytes) -> str | None:
    payload = _json_object(body)
    if payload is None or not isinstance(payload.get("error"), str):
        return None
    description = payload.get("error_description")
    text = _quote_server_text(payload["error"])
    return text + (f": {_quote_server_text(description)}" if description else "")


def _redacted(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
