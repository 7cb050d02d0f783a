"""Browser authorization: the authorization code flow with PKCE through a loopback callback.

Theory of operation
-------------------
:func:`authorize_in_browser` runs one authorization, in this order:

1. Generate a 256-bit ``state`` and a PKCE S256 pair.
2. Start the loopback callback server. Port: the configured ``callback_port``
   when set (a busy port is an error); otherwise the preferred port (by
   default the port of the registration's redirect URI, so a dynamic client
   registered on an earlier run keeps working), falling back to an ephemeral
   port when that one is taken.
3. Get the client for the callback's redirect URI: a registration is used as
   is; a factory (usually ``lambda uri: oauth.ensure_client(...)``) may
   register a new client when the port changed.
4. Build the authorization URL (``resource``, ``scope``, S256 challenge) and
   validate it; an unsafe URL is refused before anything sees it.
5. Tell ``on_url`` and open the URL with ``open_url`` (``webbrowser``, never a
   shell). Without a display or a browser, the URL is printed to stderr and the
   flow keeps waiting for a person to open it elsewhere.
6. Await the callback (bounded by ``timeout``): callbacks with a wrong
   ``state`` are ignored, so a forged one cannot end the flow; RFC 9207 ``iss``
   is checked exactly when present and required when advertised.
7. Exchange the code (with the PKCE verifier and ``resource``) for tokens.

Failures raise an :class:`AuthorizationError` naming the server, what
happened, and what to do; no code is redeemed after a state or issuer failure.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable

from mcp.client.auth.oauth2 import PKCEParameters

from mcp_tether.adapters.browser import UnsafeURLError, open_in_browser, validate_authorization_url
from mcp_tether.adapters.callback import (
    CallbackResult,
    CallbackStatus,
    LoopbackCallbackServer,
    loopback_redirect_port,
)
from mcp_tether.adapters.oauth import InsecureServerError, OAuthClient, TokenFailure
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet

__all__ = [
    "DEFAULT_AUTHORIZATION_TIMEOUT",
    "AuthorizationDenied",
    "AuthorizationError",
    "AuthorizationTimeout",
    "CallbackPortUnavailable",
    "ClientFactory",
    "IssuerMismatch",
    "StateMismatch",
    "TokenExchangeFailed",
    "authorize_in_browser",
]

#: Seconds a person has to complete the authorization in the browser.
DEFAULT_AUTHORIZATION_TIMEOUT = 300.0
#: Seconds a browser launch may take before the flow stops waiting for it.
_OPEN_TIMEOUT = 30.0

#: Builds (or fetches) the client registration for a redirect URI.
ClientFactory = Callable[[str], Awaitable[ClientRegistration]]


class AuthorizationError(Exception):
    """A browser authorization did not produce tokens.

    Attributes:
        server_name: the configured server this is about.
    """

    def __init__(self, message: str, *, server_name: str) -> None:
        super().__init__(message)
        self.server_name = server_name


class AuthorizationDenied(AuthorizationError):
    """The authorization server answered with an error (``access_denied`` and others).

    Attributes:
        error: the OAuth ``error`` code.
        error_description: the server's description, if any.
    """

    def __init__(self, message: str, *, server_name: str, error: str, error_description: str | None) -> None:
        super().__init__(message, server_name=server_name)
        self.error = error
        self.error_description = error_description


class AuthorizationTimeout(AuthorizationError):
    """Nobody completed the authorization in time."""


class StateMismatch(AuthorizationError):
    """Only callbacks with a wrong ``state`` arrived (possibly forged); none was redeemed."""


class IssuerMismatch(AuthorizationError):
    """The RFC 9207 ``iss`` was wrong, or missing although advertised; the code was not redeemed."""


class CallbackPortUnavailable(AuthorizationError):
    """The configured loopback callback port could not be bound."""


class TokenExchangeFailed(AuthorizationError):
    """The authorization code could not be exchanged for tokens.

    Attributes:
        failure: the classified token endpoint failure.
    """

    def __init__(self, message: str, *, server_name: str, failure: TokenFailure) -> None:
        super().__init__(message, server_name=server_name)
        self.failure = failure


def _print_url(server_name: str, url: str) -> None:
    print(
        f"mcp-tether: server '{server_name}' needs authorization, and no browser could be opened here.\n"
        f"Open this URL in a browser on this machine to continue:\n\n  {url}\n",
        file=sys.stderr,
        flush=True,
    )


async def _bind(
    oauth: OAuthClient,
    state: str,
    discovery: Discovery,
    preferred_port: int | None,
) -> LoopbackCallbackServer:
    configured = oauth.settings.callback_port
    candidates = [configured] if configured else [p for p in (preferred_port, 0) if p is not None]
    last: OSError | None = None
    for port in candidates:
        server = LoopbackCallbackServer(
            server_name=oauth.server_name,
            expected_state=state,
            expected_issuer=discovery.issuer,
            issuer_required=discovery.iss_parameter_supported,
            port=port,
        )
        try:
            return await server.__aenter__()
        except OSError as exc:
            last = exc
    raise CallbackPortUnavailable(
        f"Server '{oauth.server_name}': cannot listen for the authorization callback on 127.0.0.1 port "
        f"{candidates[-1]} ({last}); free the port or change callback_port in the server's configuration.",
        server_name=oauth.server_name,
    )


async def _open(open_url: Callable[[str], bool], url: str, server_name: str) -> bool:
    try:
        async with asyncio.timeout(_OPEN_TIMEOUT):
            return await asyncio.to_thread(open_url, url)
    except UnsafeURLError as exc:
        raise _refused(server_name, exc) from exc
    except TimeoutError:
        return False


def _refused(server_name: str, error: UnsafeURLError) -> InsecureServerError:
    return InsecureServerError(
        f"Server '{server_name}': refusing to open the authorization URL ({error}). "
        "Report this to the server's operator.",
        server_name=server_name,
    )


def _raise_for(result: CallbackResult, server_name: str, timeout: float) -> None:
    if result.status is CallbackStatus.ISSUER_MISMATCH:
        raise IssuerMismatch(
            f"Server '{server_name}': the authorization response came from an unexpected authorization "
            f"server ({result.error}); the code was not used. This can be a mix-up attack; try again, and "
            "report it to the server's operator if it repeats.",
            server_name=server_name,
        )
    if result.status is CallbackStatus.ERROR:
        error = result.error or "invalid_request"
        description = f" ({result.error_description})" if result.error_description else ""
        advice = (
            "authorization was declined in the browser; call again to retry"
            if error == "access_denied"
            else "check the server's configuration (scopes, client) and try again"
        )
        raise AuthorizationDenied(
            f"Server '{server_name}': the authorization server answered {error}{description}; {advice}.",
            server_name=server_name,
            error=error,
            error_description=result.error_description,
        )
    if result.status is CallbackStatus.TIMEOUT and result.forged:
        raise StateMismatch(
            f"Server '{server_name}': {result.forged} authorization response(s) arrived with a state that "
            "does not match this sign-in and were ignored, and no valid one arrived in "
            f"{timeout:g} s. Use the most recent authorization link and try again.",
            server_name=server_name,
        )
    if result.status is CallbackStatus.TIMEOUT:
        raise AuthorizationTimeout(
            f"Server '{server_name}': the authorization was not completed within {timeout:g} s; "
            "call again to get a new authorization link.",
            server_name=server_name,
        )


async def authorize_in_browser(
    oauth: OAuthClient,
    discovery: Discovery,
    client_or_factory: ClientRegistration | ClientFactory,
    *,
    scope: str | None = None,
    open_url: Callable[[str], bool] = open_in_browser,
    timeout: float = DEFAULT_AUTHORIZATION_TIMEOUT,  # noqa: ASYNC109  # a person's deadline, not an IO one
    on_url: Callable[[str], None] | None = None,
    preferred_port: int | None = None,
) -> TokenSet:
    """Authorize in the browser and exchange the code for tokens.

    Args:
        oauth: the server's OAuth client.
        discovery: what discovery found (must have an authorization endpoint).
        client_or_factory: the client registration, or an async factory taking
            the redirect URI (to register or re-register for the callback port).
        scope: the scope to request, or None to omit it.
        open_url: opens a validated URL, returning whether a browser was
            launched; called in a worker thread. Defaults to ``webbrowser``.
        timeout: seconds a person has to complete the authorization.
        on_url: told the URL before it is opened (e.g. to show it); without it,
            the URL is printed to stderr when no browser could be opened.
        preferred_port: loopback port to try first when no ``callback_port`` is
            configured; defaults to the port of the given registration's
            redirect URI.

    Returns:
        The new tokens.

    Raises:
        AuthorizationDenied: the authorization server answered with an error.
        AuthorizationTimeout: nothing arrived within ``timeout``.
        StateMismatch: only callbacks with a wrong state arrived.
        IssuerMismatch: the RFC 9207 issuer check failed.
        TokenExchangeFailed: the code exchange failed (see its ``failure``).
        CallbackPortUnavailable: the configured callback port is taken.
        InsecureServerError: the authorization URL is unsafe to open.
        DiscoveryError, RegistrationError: from building the request or the factory.
    """
    name = oauth.server_name
    state = secrets.token_urlsafe(32)
    pkce = PKCEParameters.generate()
    if preferred_port is None and isinstance(client_or_factory, ClientRegistration):
        preferred_port = loopback_redirect_port(client_or_factory)
    server = await _bind(oauth, state, discovery, preferred_port)
    try:
        redirect_uri = server.redirect_uri
        if isinstance(client_or_factory, ClientRegistration):
            client = client_or_factory
        else:
            client = await client_or_factory(redirect_uri)
        url = oauth.authorization_url(
            discovery,
            client,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=pkce.code_challenge,
            scope=scope,
        )
        try:
            validate_authorization_url(url)
        except UnsafeURLError as exc:
            raise _refused(name, exc) from exc
        if on_url is not None:
            on_url(url)
        if not await _open(open_url, url, name) and on_url is None:
            _print_url(name, url)
        result = await server.wait(timeout)
    finally:
        await server.__aexit__(None, None, None)
    _raise_for(result, name, timeout)
    assert result.code is not None  # CODE is the only status left
    tokens = await oauth.exchange_code(
        discovery,
        client,
        code=result.code,
        code_verifier=pkce.code_verifier,
        redirect_uri=redirect_uri,
        scope=scope,
    )
    if isinstance(tokens, TokenFailure):
        raise TokenExchangeFailed(
            f"{tokens.reason} The authorization code could not be exchanged for tokens; "
            + (
                "this is usually temporary, try again shortly."
                if tokens.failure_class is FailureClass.TRANSIENT
                else "try authorizing again."
            ),
            server_name=name,
            failure=tokens,
        )
    return tokens
