"""A simulated OAuth 2.1 authorization server for MCP, as a Starlette app.

:class:`SimulatedAuthorizationServer` keeps all its state in plain Python
objects behind one lock, so a test can run it in a background thread (see
:mod:`mcp_tether.testing.serve`) and read counters or change knobs from the
test's own thread while requests are being served.

What it implements:

* RFC 8414 metadata (``/.well-known/oauth-authorization-server``, optionally
  under a path-aware issuer such as ``/tenant1`` and as OpenID
  ``/.well-known/openid-configuration``);
* RFC 7591 dynamic client registration (``/register``) and pre-registered
  clients;
* ``/authorize`` with PKCE S256, ``state``, RFC 8707 ``resource`` and an RFC 9207
  ``iss`` response parameter; either auto-approved (302 straight back) or with
  an HTML consent page whose "Approve" and "Deny" buttons post to
  ``/authorize/decision``, so a real headless browser can click through;
* ``/token`` for ``authorization_code``, ``refresh_token`` (strict rotation and
  reuse detection that revokes the whole token family, both switchable) and
  ``client_credentials``, with client authentication ``none``,
  ``client_secret_post`` and ``client_secret_basic``;
* RFC 7009 ``/revoke``;
* a script of failures for upcoming token requests (status codes, OAuth errors,
  HTML, malformed JSON, latency) to exercise a client's error handling;
* :meth:`SimulatedAuthorizationServer.introspect`, the in-process token check
  the simulated resource server uses.

The issuer is derived from each request (``scheme://host:port`` plus the
configured issuer path), so the app can be built before the port it will be
served on is known. :meth:`SimulatedAuthorizationServer.issuer_for` gives the
issuer for a base URL.

This is a test double: it is strict where a real server is strict and does not
try to be a production authorization server (no user accounts, no JWTs).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import html
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import anyio
import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = [
    "TOKEN_ENDPOINT_AUTH_METHODS",
    "AuthServerCounters",
    "SimulatedAuthorizationServer",
    "SimulatedClient",
    "TokenInfo",
]

#: Client authentication methods the token and revocation endpoints accept.
TOKEN_ENDPOINT_AUTH_METHODS: tuple[str, ...] = ("none", "client_secret_post", "client_secret_basic")

_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_CODE_LIFETIME = 60.0
_MAX_BODY = 64 * 1024
# OAuth error codes a script may name, with the status a real server answers them with.
_SCRIPTABLE_ERRORS: Mapping[str, int] = {
    "invalid_request": 400,
    "invalid_grant": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_client": 401,
}
_SLOW = re.compile(r"^slow:(\d+(?:\.\d+)?)$")
_RETRY_AFTER = re.compile(r"^retry_after:(\d+)$")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


@attrs.frozen(kw_only=True)
class SimulatedClient:
    """A client registration known to the simulated server.

    Attributes:
        client_id: the client identifier.
        client_secret: the secret for confidential clients, None for public ones.
        redirect_uris: the registered redirect URIs (exact match; loopback
            ``http`` URIs match on any port, RFC 8252 section 7.3).
        token_endpoint_auth_method: one of :data:`TOKEN_ENDPOINT_AUTH_METHODS`.
        grant_types: grant types this client may use.
        scope: space-separated scopes granted when a request names none.
    """

    client_id: str
    client_secret: str | None = attrs.field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    token_endpoint_auth_method: str = "none"
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scope: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.token_endpoint_auth_method not in TOKEN_ENDPOINT_AUTH_METHODS:
            raise ValueError(
                f"client {self.client_id!r}: token_endpoint_auth_method "
                f"{self.token_endpoint_auth_method!r} is not one of {TOKEN_ENDPOINT_AUTH_METHODS}"
            )
        public = self.token_endpoint_auth_method == "none"
        if public != (self.client_secret is None):
            raise ValueError(
                f"client {self.client_id!r}: a client_secret is needed exactly when "
                "token_endpoint_auth_method is not 'none'"
            )


@attrs.frozen(kw_only=True)
class TokenInfo:
    """What the server knows about an active access token.

    Attributes:
        client_id: the client the token was issued to.
        scopes: the scopes granted.
        issued_at: wall-clock time of issue (seconds since the epoch).
        expires_at: wall-clock time the server lets the token expire, or None
            when tokens are issued without a lifetime.
        resource: the RFC 8707 resource (audience) the token was issued for.
    """

    client_id: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float | None
    resource: str | None


@attrs.frozen(kw_only=True)
class AuthServerCounters:
    """A consistent snapshot of the server's counters.

    Attributes:
        metadata: metadata document requests (any of the well-known paths).
        register: dynamic registration requests.
        authorize: ``GET /authorize`` requests.
        decisions: consent decisions posted to ``/authorize/decision``.
        token: token endpoint requests, all grants together.
        token_by_grant: token endpoint requests per ``grant_type`` value.
        revoke: revocation requests.
        codes_issued: authorization codes handed out.
        tokens_issued: access tokens issued.
        refreshes: successful refresh-token grants.
        reuse_detected: rotated refresh tokens presented again.
        scripted_answers: scripted token answers consumed (see
            :meth:`SimulatedAuthorizationServer.script_token_answers`).
    """

    metadata: int
    register: int
    authorize: int
    decisions: int
    token: int
    token_by_grant: Mapping[str, int]
    revoke: int
    codes_issued: int
    tokens_issued: int
    refreshes: int
    reuse_detected: int
    scripted_answers: int


@attrs.define
class _Counters:
    metadata: int = 0
    register: int = 0
    authorize: int = 0
    decisions: int = 0
    token: int = 0
    token_by_grant: collections.Counter[str] = attrs.Factory(collections.Counter)
    revoke: int = 0
    codes_issued: int = 0
    tokens_issued: int = 0
    refreshes: int = 0
    reuse_detected: int = 0
    scripted_answers: int = 0


@attrs.define
class _PendingAuthorization:
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str
    state: str
    scopes: tuple[str, ...]
    resource: str | None


@attrs.define
class _Code:
    request: _PendingAuthorization
    expires_at: float
    family: str | None = None  # set once redeemed


@attrs.define
class _RefreshRecord:
    client_id: str
    scopes: tuple[str, ...]
    resource: str | None
    family: str
    expires_at: float | None
    rotated: bool = False


@attrs.define
class _AccessRecord:
    info: TokenInfo
    family: str | None


@attrs.frozen
class _Answer:
    """One scripted token-endpoint answer, parsed."""

    kind: Literal["status", "error", "html", "malformed_json", "slow"]
    status: int = 200
    error: str = ""
    delay: float = 0.0
    retry_after: int | None = None

    @classmethod
    def parse(cls, spec: int | str) -> _Answer:
        if isinstance(spec, int) and not isinstance(spec, bool):
            if not 400 <= spec <= 599:
                raise ValueError(f"scripted token answer {spec}: a status code must be 400..599")
            return cls("status", status=spec, retry_after=1 if spec == 429 else None)
        if not isinstance(spec, str):
            raise TypeError(f"scripted token answer {spec!r}: give an int status or a string")
        if spec in _SCRIPTABLE_ERRORS:
            return cls("error", status=_SCRIPTABLE_ERRORS[spec], error=spec)
        if spec == "html":
            return cls("html")
        if spec == "malformed_json":
            return cls("malformed_json")
        if match := _SLOW.match(spec):
            return cls("slow", delay=float(match.group(1)))
        if match := _RETRY_AFTER.match(spec):
            return cls("status", status=429, retry_after=int(match.group(1)))
        raise ValueError(
            f"scripted token answer {spec!r} is not understood: use a status code (e.g. 503), "
            f"one of {sorted(_SCRIPTABLE_ERRORS)}, 'html', 'malformed_json', 'slow:SECONDS' "
            "or 'retry_after:SECONDS'"
        )

    def response(self) -> Response:
        if self.kind == "html":
            return HTMLResponse("<html><body><h1>Sign in to continue</h1></body></html>")
        if self.kind == "malformed_json":
            return Response('{"access_token": "tr', media_type="application/json")
        if self.kind == "error":
            return _oauth_error(self.error, "scripted answer", status=self.status)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        error = "temporarily_unavailable" if self.status in (429, 503) else "server_error"
        return JSONResponse(
            {"error": error, "error_description": f"scripted {self.status}"},
            status_code=self.status,
            headers=headers,
        )


class _OAuthFailure(Exception):
    """An OAuth error answer, raised inside a handler and turned into JSON."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="token"'} if status == 401 else None
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers=headers,
    )


def _no_store(response: Response) -> Response:
    """RFC 6749 section 5.1: token endpoint answers must not be cached."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _pkce_matches(verifier: str, challenge: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier):
        return False
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return secrets.compare_digest(expected, challenge)


def _redirect_uri_matches(registered: str, given: str) -> bool:
    """Exact match, except that loopback ``http`` redirect URIs may use any port."""
    if registered == given:
        return True
    reg, got = urlsplit(registered), urlsplit(given)
    if reg.scheme != "http" or got.scheme != "http":
        return False
    if reg.hostname is None or got.hostname is None:
        return False
    reg_host = reg.hostname if ":" not in reg.hostname else f"[{reg.hostname}]"
    if reg_host not in _LOOPBACK_HOSTS or reg.hostname != got.hostname:
        return False
    return (reg.path, reg.query) == (got.path, got.query)


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    separator = "&" if urlsplit(uri).query else "?"
    return f"{uri}{separator}{urlencode(params)}"


async def _read_form(request: Request) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body, refusing repeated parameters."""
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise _OAuthFailure("invalid_request", "request body too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise _OAuthFailure("invalid_request", "request body is not UTF-8") from exc
    form: dict[str, str] = {}
    for key, values in parsed.items():
        if len(values) != 1:
            raise _OAuthFailure("invalid_request", f"parameter {key!r} given more than once")
        form[key] = values[0]
    return form


class SimulatedAuthorizationServer:
    """An in-memory OAuth 2.1 authorization server for MCP, served as a Starlette app.

    Serve :attr:`app` (for instance with
    :func:`mcp_tether.testing.serve.serve_loopback`). Knobs given to the
    constructor that shape routes or metadata are fixed; the behavioural knobs
    stored as public attributes (:attr:`auto_approve`,
    :attr:`rotate_refresh_tokens`, :attr:`detect_refresh_reuse`,
    :attr:`access_token_lifetime`, :attr:`refresh_token_lifetime`,
    :attr:`resource_early_expiry`, :attr:`latency`) may be changed between
    requests, from any thread.

    Args:
        clients: pre-registered clients.
        issuer_path: path of a path-aware issuer (``"/tenant1"``); endpoints are
            served under it and RFC 8414 metadata at
            ``/.well-known/oauth-authorization-server/tenant1``.
        metadata_documents: which metadata documents to serve: ``"oauth"``
            (RFC 8414) and/or ``"openid"`` (``/.well-known/openid-configuration``,
            path-inserted and path-appended for a path issuer).
        code_challenge_methods: advertised ``code_challenge_methods_supported``;
            None omits the field. Only S256 is ever accepted at ``/authorize``,
            whatever is advertised (to test a client's downgrade protection).
        iss_parameter_supported: advertise
            ``authorization_response_iss_parameter_supported`` and add ``iss`` to
            authorization responses.
        registration_enabled: serve ``/register`` and advertise it.
        scopes_supported: advertised scopes; requests for other scopes fail
            with ``invalid_scope``. None omits the field and accepts any scope.
        default_scopes: scopes granted when a request names none (and the
            client registered none).
        metadata_overrides: fields merged into the metadata document last; a
            None value removes the field (for example an ``issuer`` that does
            not match, to test a client's issuer check).
        auto_approve: answer ``/authorize`` with a redirect at once instead of a
            consent page.
        rotate_refresh_tokens: every refresh issues a new refresh token and
            retires the presented one; when off, the refresh response carries
            no refresh token and the old one stays valid.
        detect_refresh_reuse: presenting a retired refresh token revokes its
            whole family (every access and refresh token descending from the
            same authorization) and counts a reuse.
        issue_refresh_tokens: issue refresh tokens from the authorization code
            grant (to clients whose ``grant_types`` include ``refresh_token``;
            a dynamic registration without ``grant_types`` gets the RFC 7591
            default, ``authorization_code`` only).
        access_token_lifetime: seconds an access token lives; None issues
            tokens without ``expires_in`` that never expire. A whole number is
            sent as a JSON integer, a fraction (``2.5``) as a JSON float, which
            some clients refuse (the mcp SDK's ``OAuthToken`` does).
        refresh_token_lifetime: seconds a refresh token lives; None: forever.
        resource_early_expiry: seconds before ``expires_in`` runs out at which
            :meth:`introspect` already reports the token dead (the resource
            server's clock or policy being stricter than the token response).
        latency: seconds every request waits before being handled.
        clock: wall-clock source, seconds since the epoch.
    """

    def __init__(
        self,
        *,
        clients: Iterable[SimulatedClient] = (),
        issuer_path: str = "",
        metadata_documents: Collection[str] = ("oauth",),
        code_challenge_methods: Sequence[str] | None = ("S256",),
        iss_parameter_supported: bool = True,
        registration_enabled: bool = True,
        scopes_supported: Sequence[str] | None = ("mcp", "mcp:admin"),
        default_scopes: Sequence[str] = ("mcp",),
        metadata_overrides: Mapping[str, object] | None = None,
        auto_approve: bool = True,
        rotate_refresh_tokens: bool = True,
        detect_refresh_reuse: bool = True,
        issue_refresh_tokens: bool = True,
        access_token_lifetime: float | None = 3600.0,
        refresh_token_lifetime: float | None = None,
        resource_early_expiry: float = 0.0,
        latency: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if issuer_path and (not issuer_path.startswith("/") or issuer_path.endswith("/")):
            raise ValueError(f"issuer_path {issuer_path!r} must start with '/' and not end with '/'")
        if not metadata_documents or not set(metadata_documents) <= {"oauth", "openid"}:
            raise ValueError(f"metadata_documents {metadata_documents!r}: name 'oauth' and/or 'openid'")
        self.issuer_path = issuer_path
        self.auto_approve = auto_approve
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.detect_refresh_reuse = detect_refresh_reuse
        self.issue_refresh_tokens = issue_refresh_tokens
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.resource_early_expiry = resource_early_expiry
        self.latency = latency
        self._metadata_documents = frozenset(metadata_documents)
        self._code_challenge_methods = None if code_challenge_methods is None else list(code_challenge_methods)
        self._iss_parameter_supported = iss_parameter_supported
        self._registration_enabled = registration_enabled
        self._scopes_supported = None if scopes_supported is None else tuple(scopes_supported)
        self._default_scopes = tuple(default_scopes)
        self._metadata_overrides = dict(metadata_overrides or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._clients: dict[str, SimulatedClient] = {client.client_id: client for client in clients}
        self._pending: dict[str, _PendingAuthorization] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _AccessRecord] = {}
        self._refresh: dict[str, _RefreshRecord] = {}
        self._revoked_families: set[str] = set()
        self._scripts: dict[str | None, collections.deque[_Answer]] = collections.defaultdict(collections.deque)
        self.app = Starlette(routes=self._routes())

    # ------------------------------------------------------------------ public API

    def issuer_for(self, base_url: str) -> str:
        """The issuer identifier when the app is served at ``base_url``.

        Args:
            base_url: the origin the app is served at, e.g. ``http://127.0.0.1:8123``.

        Returns:
            ``base_url`` (without a trailing slash) followed by the issuer path.
        """
        return base_url.rstrip("/") + self.issuer_path

    def counters(self) -> AuthServerCounters:
        """Return a consistent snapshot of the counters (safe from any thread)."""
        with self._lock:
            c = self._counters
            return AuthServerCounters(
                metadata=c.metadata,
                register=c.register,
                authorize=c.authorize,
                decisions=c.decisions,
                token=c.token,
                token_by_grant=dict(c.token_by_grant),
                revoke=c.revoke,
                codes_issued=c.codes_issued,
                tokens_issued=c.tokens_issued,
                refreshes=c.refreshes,
                reuse_detected=c.reuse_detected,
                scripted_answers=c.scripted_answers,
            )

    def clients(self) -> tuple[SimulatedClient, ...]:
        """Return the registered clients (pre-registered and dynamically registered)."""
        with self._lock:
            return tuple(self._clients.values())

    def add_client(self, client: SimulatedClient) -> None:
        """Register ``client`` (replacing a registration with the same id)."""
        with self._lock:
            self._clients[client.client_id] = client

    def forget_client(self, client_id: str) -> None:
        """Delete a client registration, as an AS does that expires dynamic clients.

        Later requests authenticating as this client fail with ``invalid_client``.
        """
        with self._lock:
            self._clients.pop(client_id, None)

    def script_token_answers(self, answers: Iterable[int | str], *, grant_type: str | None = None) -> None:
        """Queue scripted answers for the next token-endpoint requests.

        Each request takes the first queued answer for its ``grant_type``, or
        else the first answer queued with ``grant_type=None``; when both queues
        are empty it is handled normally. An answer is one of:

        * a status code 400..599: a JSON error with that status (429 carries
          ``Retry-After: 1``);
        * ``"retry_after:N"``: 429 with ``Retry-After: N``;
        * an OAuth error code (``"invalid_grant"``, ``"invalid_client"`` (401),
          ``"invalid_request"``, ``"invalid_scope"``, ``"invalid_target"``,
          ``"unauthorized_client"``, ``"unsupported_grant_type"``);
        * ``"html"``: 200 with an HTML login page instead of JSON;
        * ``"malformed_json"``: 200 ``application/json`` with a truncated body;
        * ``"slow:SECONDS"``: wait that long, then handle the request normally.

        Args:
            answers: the answers, in the order requests will receive them.
            grant_type: the grant they apply to, or None for any grant.

        Raises:
            ValueError: an answer is not understood (nothing is queued then).
        """
        parsed = [_Answer.parse(answer) for answer in answers]
        with self._lock:
            self._scripts[grant_type].extend(parsed)

    def introspect(self, access_token: str) -> TokenInfo | None:
        """Check an access token in-process, as the resource server does.

        Args:
            access_token: the bearer token presented to a resource server.

        Returns:
            The token's info when it is known, not revoked and not within
            :attr:`resource_early_expiry` of its expiry; None otherwise.
        """
        with self._lock:
            record = self._access.get(access_token)
            if record is None or (record.family is not None and record.family in self._revoked_families):
                return None
            expires_at = record.info.expires_at
            if expires_at is not None and self._clock() >= expires_at - self.resource_early_expiry:
                return None
            return record.info

    def invalidate_access_tokens(self) -> None:
        """Make every access token issued so far unusable; refresh tokens stay valid.

        Simulates a resource server that stops accepting tokens early (a key
        rotation, a server restart), so a client sees 401 and must refresh.
        """
        with self._lock:
            self._access.clear()

    # ------------------------------------------------------------------ routes

    def _routes(self) -> list[Route]:
        path = self.issuer_path
        routes: list[Route] = []
        if "oauth" in self._metadata_documents:
            routes.append(Route(f"/.well-known/oauth-authorization-server{path}", self._metadata))
        if "openid" in self._metadata_documents:
            routes.append(Route(f"/.well-known/openid-configuration{path}", self._metadata))
            if path:
                routes.append(Route(f"{path}/.well-known/openid-configuration", self._metadata))
        routes += [
            Route(f"{path}/authorize", self._authorize, methods=["GET"]),
            Route(f"{path}/authorize/decision", self._decision, methods=["POST"]),
            Route(f"{path}/token", self._token, methods=["POST"]),
            Route(f"{path}/revoke", self._revoke, methods=["POST"]),
        ]
        if self._registration_enabled:
            routes.append(Route(f"{path}/register", self._register, methods=["POST"]))
        return routes

    def _issuer(self, request: Request) -> str:
        return self.issuer_for(str(request.base_url))

    async def _delay(self) -> None:
        if self.latency > 0:
            await anyio.sleep(self.latency)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._counters, name, getattr(self._counters, name) + 1)

    async def _metadata(self, request: Request) -> Response:
        self._count("metadata")
        await self._delay()
        issuer = self._issuer(request)
        document: dict[str, object] = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "revocation_endpoint": f"{issuer}/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": list(_GRANT_TYPES),
            "token_endpoint_auth_methods_supported": list(TOKEN_ENDPOINT_AUTH_METHODS),
            "revocation_endpoint_auth_methods_supported": list(TOKEN_ENDPOINT_AUTH_METHODS),
            "authorization_response_iss_parameter_supported": self._iss_parameter_supported,
        }
        if self._registration_enabled:
            document["registration_endpoint"] = f"{issuer}/register"
        if self._code_challenge_methods is not None:
            document["code_challenge_methods_supported"] = self._code_challenge_methods
        if self._scopes_supported is not None:
            document["scopes_supported"] = list(self._scopes_supported)
        for key, value in self._metadata_overrides.items():
            if value is None:
                document.pop(key, None)
            else:
                document[key] = value
        return JSONResponse(document)

    # ------------------------------------------------------------------ registration

    async def _register(self, request: Request) -> Response:
        self._count("register")
        await self._delay()
        try:
            body = await request.json()
        except ValueError:
            return _oauth_error("invalid_client_metadata", "the registration body is not JSON")
        if not isinstance(body, dict):
            return _oauth_error("invalid_client_metadata", "the registration body must be a JSON object")
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in TOKEN_ENDPOINT_AUTH_METHODS:
            return _oauth_error("invalid_client_metadata", f"token_endpoint_auth_method {method!r} is not supported")
        grant_types = body.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not all(g in _GRANT_TYPES for g in grant_types):
            return _oauth_error("invalid_client_metadata", f"grant_types {grant_types!r} are not supported")
        redirect_uris = body.get("redirect_uris", [])
        if not isinstance(redirect_uris, list) or not all(
            isinstance(uri, str) and urlsplit(uri).scheme in ("http", "https") and urlsplit(uri).netloc
            for uri in redirect_uris
        ):
            return _oauth_error("invalid_redirect_uri", "redirect_uris must be absolute http(s) URIs")
        if "authorization_code" in grant_types and not redirect_uris:
            return _oauth_error("invalid_redirect_uri", "the authorization_code grant needs redirect_uris")
        scope = body.get("scope")
        if scope is not None and not isinstance(scope, str):
            return _oauth_error("invalid_client_metadata", "scope must be a space-separated string")
        client = SimulatedClient(
            client_id=f"client-{secrets.token_hex(8)}",
            client_secret=None if method == "none" else secrets.token_urlsafe(24),
            redirect_uris=tuple(redirect_uris),
            token_endpoint_auth_method=method,
            grant_types=tuple(grant_types),
            scope=scope,
        )
        self.add_client(client)
        answer: dict[str, object] = {
            **body,
            "client_id": client.client_id,
            "client_id_issued_at": int(self._clock()),
            "token_endpoint_auth_method": method,
            "grant_types": list(grant_types),
            "redirect_uris": list(redirect_uris),
        }
        if client.client_secret is not None:
            answer["client_secret"] = client.client_secret
            answer["client_secret_expires_at"] = 0
        return _no_store(JSONResponse(answer, status_code=201))

    # ------------------------------------------------------------------ authorization

    def _error_page(self, message: str) -> HTMLResponse:
        return HTMLResponse(
            f"<!doctype html><title>Authorization error</title><h1>Authorization error</h1>"
            f"<p>{html.escape(message)}</p>",
            status_code=400,
        )

    def _redirect(self, request: Request, uri: str, params: dict[str, str]) -> RedirectResponse:
        if self._iss_parameter_supported:
            params["iss"] = self._issuer(request)
        return RedirectResponse(_with_query(uri, params), status_code=302)

    def _parse_scopes(self, requested: str | None, client: SimulatedClient) -> tuple[str, ...]:
        if requested is None or not requested.strip():
            default = client.scope.split() if client.scope else self._default_scopes
            return tuple(default)
        scopes = tuple(dict.fromkeys(requested.split()))
        if self._scopes_supported is not None:
            unknown = [s for s in scopes if s not in self._scopes_supported]
            if unknown:
                raise _OAuthFailure("invalid_scope", f"unknown scopes: {' '.join(unknown)}")
        return scopes

    async def _authorize(self, request: Request) -> Response:
        self._count("authorize")
        await self._delay()
        query = request.query_params
        with self._lock:
            client = self._clients.get(query.get("client_id", ""))
        if client is None:
            return self._error_page("Unknown client_id: register the client first.")
        given = query.get("redirect_uri")
        if given is None:
            if len(client.redirect_uris) != 1:
                return self._error_page("redirect_uri is required for this client.")
            redirect_uri = client.redirect_uris[0]
        elif any(_redirect_uri_matches(registered, given) for registered in client.redirect_uris):
            redirect_uri = given
        else:
            return self._error_page("redirect_uri does not match a registered redirect URI.")

        state = query.get("state")
        base: dict[str, str] = {} if state is None else {"state": state}

        def fail(error: str, description: str) -> Response:
            return self._redirect(request, redirect_uri, {"error": error, "error_description": description, **base})

        if query.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        if "authorization_code" not in client.grant_types:
            return fail("unauthorized_client", "client is not registered for authorization_code")
        if not state:
            return fail("invalid_request", "state is required")
        challenge = query.get("code_challenge")
        if not challenge or query.get("code_challenge_method") != "S256":
            return fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
        try:
            scopes = self._parse_scopes(query.get("scope"), client)
        except _OAuthFailure as failure:
            return fail(failure.error, failure.description)
        pending = _PendingAuthorization(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            redirect_uri_given=given is not None,
            code_challenge=challenge,
            state=state,
            scopes=scopes,
            resource=query.get("resource"),
        )
        if self.auto_approve:
            return self._approve(request, pending)
        request_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[request_id] = pending
        return self._consent_page(request, client, pending, request_id)

    def _consent_page(
        self, request: Request, client: SimulatedClient, pending: _PendingAuthorization, request_id: str
    ) -> HTMLResponse:
        action = html.escape(f"{self._issuer(request)}/authorize/decision", quote=True)
        scopes = html.escape(" ".join(pending.scopes) or "(none)")
        resource = html.escape(pending.resource or "(unspecified)")
        return HTMLResponse(
            "<!doctype html><html><head><title>Authorize access</title></head><body>"
            f"<h1>Authorize {html.escape(client.client_id)}</h1>"
            f"<p>Scopes: <code>{scopes}</code></p><p>Resource: <code>{resource}</code></p>"
            f'<form method="post" action="{action}">'
            f'<input type="hidden" name="request_id" value="{html.escape(request_id, quote=True)}">'
            '<button type="submit" id="approve" name="decision" value="approve">Approve</button> '
            '<button type="submit" id="deny" name="decision" value="deny">Deny</button>'
            "</form></body></html>",
            headers={"Cache-Control": "no-store"},
        )

    async def _decision(self, request: Request) -> Response:
        self._count("decisions")
        await self._delay()
        try:
            form = await _read_form(request)
        except _OAuthFailure as failure:
            return self._error_page(failure.description)
        with self._lock:
            pending = self._pending.pop(form.get("request_id", ""), None)
        if pending is None:
            return self._error_page("This authorization request is unknown or was already decided.")
        if form.get("decision") == "approve":
            return self._approve(request, pending)
        return self._redirect(
            request,
            pending.redirect_uri,
            {"error": "access_denied", "error_description": "the user denied access", "state": pending.state},
        )

    def _approve(self, request: Request, pending: _PendingAuthorization) -> RedirectResponse:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(request=pending, expires_at=self._clock() + _CODE_LIFETIME)
            self._counters.codes_issued += 1
        return self._redirect(request, pending.redirect_uri, {"code": code, "state": pending.state})

    # ------------------------------------------------------------------ token endpoint

    def _authenticate_client(self, request: Request, form: Mapping[str, str]) -> SimulatedClient:
        """Authenticate the client with the method it registered. Call with the lock held."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                raw_id, raw_secret = decoded.split(":", 1)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _OAuthFailure("invalid_client", "malformed Basic authorization", 401) from exc
            client_id, secret, method = unquote(raw_id), unquote(raw_secret), "client_secret_basic"
        elif "client_secret" in form:
            client_id, secret, method = form.get("client_id", ""), form["client_secret"], "client_secret_post"
        else:
            client_id, secret, method = form.get("client_id", ""), None, "none"
        client = self._clients.get(client_id)
        if client is None:
            raise _OAuthFailure("invalid_client", "unknown client", 401)
        if client.token_endpoint_auth_method != method:
            raise _OAuthFailure(
                "invalid_client",
                f"client authenticated with {method}, registered {client.token_endpoint_auth_method}",
                401,
            )
        if client.client_secret is not None and not secrets.compare_digest(
            (secret or "").encode(), client.client_secret.encode()
        ):
            raise _OAuthFailure("invalid_client", "wrong client secret", 401)
        return client

    def _next_answer(self, grant_type: str) -> _Answer | None:
        with self._lock:
            for key in (grant_type, None):
                queue = self._scripts.get(key)
                if queue:
                    self._counters.scripted_answers += 1
                    return queue.popleft()
        return None

    async def _token(self, request: Request) -> Response:
        try:
            form = await _read_form(request)
        except _OAuthFailure as failure:
            form = {}
            early: Response | None = _oauth_error(failure.error, failure.description, failure.status)
        else:
            early = None
        grant_type = form.get("grant_type", "")
        with self._lock:
            self._counters.token += 1
            self._counters.token_by_grant[grant_type] += 1
        await self._delay()
        if early is not None:
            return _no_store(early)
        answer = self._next_answer(grant_type)
        if answer is not None:
            if answer.kind != "slow":
                return _no_store(answer.response())
            await anyio.sleep(answer.delay)
        try:
            with self._lock:
                client = self._authenticate_client(request, form)
                if grant_type not in _GRANT_TYPES:
                    raise _OAuthFailure("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
                if grant_type not in client.grant_types:
                    raise _OAuthFailure("unauthorized_client", f"client may not use {grant_type}")
                if grant_type == "authorization_code":
                    body = self._grant_code(client, form)
                elif grant_type == "refresh_token":
                    body = self._grant_refresh(client, form)
                else:
                    body = self._grant_client_credentials(client, form)
        except _OAuthFailure as failure:
            return _no_store(_oauth_error(failure.error, failure.description, failure.status))
        return _no_store(JSONResponse(body))

    def _issue(
        self,
        client: SimulatedClient,
        scopes: tuple[str, ...],
        resource: str | None,
        family: str | None,
        refresh: bool,
    ) -> dict[str, object]:
        """Mint an access token (and a refresh token when asked). Call with the lock held."""
        now = self._clock()
        lifetime = self.access_token_lifetime
        access_token = f"at_{secrets.token_urlsafe(24)}"
        info = TokenInfo(
            client_id=client.client_id,
            scopes=scopes,
            issued_at=now,
            expires_at=None if lifetime is None else now + lifetime,
            resource=resource,
        )
        self._access[access_token] = _AccessRecord(info=info, family=family)
        self._counters.tokens_issued += 1
        body: dict[str, object] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "scope": " ".join(scopes),
        }
        if lifetime is not None:
            body["expires_in"] = int(lifetime) if float(lifetime).is_integer() else lifetime
        if refresh and family is not None:
            refresh_token = f"rt_{secrets.token_urlsafe(24)}"
            rt_lifetime = self.refresh_token_lifetime
            self._refresh[refresh_token] = _RefreshRecord(
                client_id=client.client_id,
                scopes=scopes,
                resource=resource,
                family=family,
                expires_at=None if rt_lifetime is None else now + rt_lifetime,
            )
            body["refresh_token"] = refresh_token
        return body

    def _revoke_family(self, family: str) -> None:
        """Revoke every token descending from one authorization. Call with the lock held."""
        self._revoked_families.add(family)

    def _grant_code(self, client: SimulatedClient, form: Mapping[str, str]) -> dict[str, object]:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            raise _OAuthFailure("invalid_grant", "unknown authorization code")
        if code.family is not None:
            # RFC 6749 section 4.1.2: a code used twice revokes what it produced.
            self._revoke_family(code.family)
            raise _OAuthFailure("invalid_grant", "authorization code already used")
        pending = code.request
        if pending.client_id != client.client_id:
            raise _OAuthFailure("invalid_grant", "authorization code was issued to another client")
        if self._clock() >= code.expires_at:
            raise _OAuthFailure("invalid_grant", "authorization code expired")
        given_uri = form.get("redirect_uri")
        if (pending.redirect_uri_given or given_uri is not None) and given_uri != pending.redirect_uri:
            raise _OAuthFailure("invalid_grant", "redirect_uri differs from the authorization request")
        if not _pkce_matches(form.get("code_verifier", ""), pending.code_challenge):
            raise _OAuthFailure("invalid_grant", "PKCE code_verifier does not match the code_challenge")
        resource = form.get("resource", pending.resource)
        if pending.resource is not None and resource != pending.resource:
            raise _OAuthFailure("invalid_target", "resource differs from the authorization request")
        code.family = secrets.token_hex(8)
        refresh = self.issue_refresh_tokens and "refresh_token" in client.grant_types
        return self._issue(client, pending.scopes, resource, code.family, refresh=refresh)

    def _grant_refresh(self, client: SimulatedClient, form: Mapping[str, str]) -> dict[str, object]:
        record = self._refresh.get(form.get("refresh_token", ""))
        if record is None or record.client_id != client.client_id:
            raise _OAuthFailure("invalid_grant", "unknown refresh token")
        if record.family in self._revoked_families:
            raise _OAuthFailure("invalid_grant", "refresh token was revoked")
        if record.rotated:
            if self.detect_refresh_reuse:
                self._counters.reuse_detected += 1
                self._revoke_family(record.family)
            raise _OAuthFailure("invalid_grant", "refresh token was already used")
        if record.expires_at is not None and self._clock() >= record.expires_at:
            raise _OAuthFailure("invalid_grant", "refresh token expired")
        scopes = record.scopes
        if "scope" in form:
            requested = tuple(dict.fromkeys(form["scope"].split()))
            if not set(requested) <= set(record.scopes):
                raise _OAuthFailure("invalid_scope", "a refresh cannot widen the granted scopes")
            scopes = requested
        resource = form.get("resource", record.resource)
        if record.resource is not None and resource != record.resource:
            raise _OAuthFailure("invalid_target", "resource differs from the original grant")
        rotate = self.rotate_refresh_tokens
        if rotate:
            record.rotated = True
        self._counters.refreshes += 1
        return self._issue(client, scopes, resource, record.family, refresh=rotate)

    def _grant_client_credentials(self, client: SimulatedClient, form: Mapping[str, str]) -> dict[str, object]:
        if client.client_secret is None:
            raise _OAuthFailure("unauthorized_client", "client_credentials needs a confidential client")
        scopes = self._parse_scopes(form.get("scope"), client)
        return self._issue(client, scopes, form.get("resource"), family=None, refresh=False)

    # ------------------------------------------------------------------ revocation

    async def _revoke(self, request: Request) -> Response:
        self._count("revoke")
        await self._delay()
        try:
            form = await _read_form(request)
            with self._lock:
                client = self._authenticate_client(request, form)
                token = form.get("token")
                if not token:
                    raise _OAuthFailure("invalid_request", "token is required")
                refresh = self._refresh.get(token)
                access = self._access.get(token)
                if refresh is not None and refresh.client_id == client.client_id:
                    # RFC 7009 section 2.1: revoking a refresh token revokes its grant.
                    self._revoke_family(refresh.family)
                elif access is not None and access.info.client_id == client.client_id:
                    del self._access[token]
        except _OAuthFailure as failure:
            return _oauth_error(failure.error, failure.description, failure.status)
        # RFC 7009 section 2.2: unknown tokens are answered with 200 as well.
        return Response(status_code=200)
