"""End to end against a real authorization server on loopback.

The simulated authorization server (``mcp_tether.testing.authserver``) and a
small protected resource (RFC 9728 metadata and a 401 with
``WWW-Authenticate``, accepting only tokens the authorization server issued for
it) are served by uvicorn on 127.0.0.1. The flow runs through the real loopback
callback server, with a test browser that follows the authorization redirect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import attrs
import httpx2
import pytest
from oauth_fakes import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_tether.adapters.authorization import authorize_in_browser
from mcp_tether.adapters.oauth import OAuthClient, OAuthSettings, TokenFailure, select_scope
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, TokenSet
from mcp_tether.testing.authserver import SimulatedAuthorizationServer
from mcp_tether.testing.serve import LoopbackServer, serve_loopback_async


@attrs.frozen
class Environment:
    authorization_server: SimulatedAuthorizationServer
    issuer: str
    resource: str


def resource_app(authorization_server: SimulatedAuthorizationServer, issuer: str, base_url: str) -> Starlette:
    resource = f"{base_url}/mcp"
    metadata_url = f"{base_url}/.well-known/oauth-protected-resource/mcp"

    async def metadata(request: Request) -> Response:
        return JSONResponse({"resource": resource, "authorization_servers": [issuer], "scopes_supported": ["mcp"]})

    async def mcp(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        info = authorization_server.introspect(token) if token else None
        if info is None or info.resource != resource:
            challenge = f'Bearer resource_metadata="{metadata_url}", scope="mcp"'
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": challenge})
        return JSONResponse({"client_id": info.client_id, "scopes": list(info.scopes)})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-protected-resource/mcp", metadata),
            Route("/mcp", mcp, methods=["GET", "POST"]),
        ]
    )


@pytest.fixture
async def environment() -> AsyncIterator[Environment]:
    authorization_server = SimulatedAuthorizationServer()
    async with serve_loopback_async(authorization_server.app) as as_url:
        issuer = authorization_server.issuer_for(as_url)
        resource_server = LoopbackServer()  # bound now: the app needs its URL
        await asyncio.to_thread(resource_server.start, resource_app(authorization_server, issuer, resource_server.url))
        try:
            yield Environment(
                authorization_server=authorization_server,
                issuer=issuer,
                resource=f"{resource_server.url}/mcp",
            )
        finally:
            await asyncio.to_thread(resource_server.stop)


@pytest.mark.parametrize("method", [None, "client_secret_post", "client_secret_basic"])
async def test_discovery_registration_authorization_refresh_and_revocation(
    environment: Environment, method: str | None
) -> None:
    now = [1_800_000_000.0]
    async with httpx2.AsyncClient(timeout=10) as http:
        oauth = OAuthClient(
            http,
            server_name="simulated",
            server_url=environment.resource,
            settings=OAuthSettings(token_endpoint_auth_method=method),
            clock=lambda: now[0],
        )
        challenge = await http.get(environment.resource)
        assert challenge.status_code == 401
        www_authenticate = challenge.headers["www-authenticate"]

        discovery = await oauth.discover(www_authenticate)
        assert discovery.issuer == environment.issuer
        assert discovery.resource == environment.resource
        scope = select_scope(www_authenticate, discovery)
        assert scope == "mcp"

        browser = Browser()
        registered: list[ClientRegistration] = []

        async def client_for(redirect_uri: str) -> ClientRegistration:
            registered.append(await oauth.ensure_client(discovery, None, redirect_uri, scope=scope))
            return registered[-1]

        tokens = await authorize_in_browser(oauth, discovery, client_for, scope=scope, open_url=browser, timeout=10)
        client = registered[0]
        assert client.token_endpoint_auth_method == (method or "none")
        assert (client.client_secret is not None) is (method is not None)
        assert len(browser.opened) == 1
        assert browser.callback_pages[0].status_code == 200
        assert tokens.refresh_token is not None
        assert tokens.issued_at == now[0]
        assert tokens.expires_in == 3600
        assert (await http.get(environment.resource, headers=_bearer(tokens))).status_code == 200

        now[0] += 3500
        refreshed = await oauth.refresh(discovery, client, tokens)
        assert isinstance(refreshed, TokenSet)
        assert refreshed.refresh_token not in (None, tokens.refresh_token)  # rotated
        assert refreshed.issued_at == now[0]
        assert (await http.get(environment.resource, headers=_bearer(refreshed))).status_code == 200

        assert await oauth.revoke(discovery, client, refreshed)
        assert (await http.get(environment.resource, headers=_bearer(refreshed))).status_code == 401
        dead = await oauth.refresh(discovery, client, refreshed)
        assert isinstance(dead, TokenFailure)
        assert dead.failure_class is FailureClass.FINAL
        assert dead.error == "invalid_grant"

    counters = environment.authorization_server.counters()
    assert (counters.register, counters.authorize) == (1, 1)


async def test_forgotten_client_is_reported_as_client_invalid(environment: Environment) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        oauth = OAuthClient(
            http,
            server_name="simulated",
            server_url=environment.resource,
            settings=OAuthSettings(),
            clock=lambda: 0.0,
        )
        discovery = await oauth.discover(None)
        registered: list[ClientRegistration] = []

        async def client_for(redirect_uri: str) -> ClientRegistration:
            registered.append(await oauth.ensure_client(discovery, None, redirect_uri, scope="mcp"))
            return registered[-1]

        tokens = await authorize_in_browser(oauth, discovery, client_for, scope="mcp", open_url=Browser(), timeout=10)
        environment.authorization_server.forget_client(registered[0].client_id)
        failure = await oauth.refresh(discovery, registered[0], tokens)
        assert isinstance(failure, TokenFailure)
        assert failure.failure_class is FailureClass.CLIENT_INVALID


def _bearer(tokens: TokenSet) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access_token}"}
