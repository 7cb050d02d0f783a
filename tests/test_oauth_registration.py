"""Client identity: pre-registered > CIMD > dynamic registration, issuer binding, redirect URI changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import httpx2
import pytest
import respx
from oauth_fakes import ISSUER, SERVER_URL, TOKEN_URL, assert_secrets_only_sent_to, handler

from mcp_tether.adapters.oauth import OAuthClient, OAuthSettings, RegistrationError
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery

REGISTER_URL = f"{ISSUER}/register"
REDIRECT = "http://127.0.0.1:40123/callback"
DISCOVERY = Discovery(
    resource=SERVER_URL,
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=TOKEN_URL,
    registration_endpoint=REGISTER_URL,
    scopes_supported=("read", "write"),
    client_id_metadata_document_supported=True,
)
CIMD = "https://client.example/mcp-tether.json"


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def registrations(router: respx.Router) -> respx.Route:
    def register(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        secret = {"client_secret": "minted-secret"} if body["token_endpoint_auth_method"] != "none" else {}
        return httpx2.Response(201, json={**body, "client_id": f"dyn-{len(route.calls)}", **secret})

    route = router.post(REGISTER_URL).mock(side_effect=handler(register))
    return route


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def make(http: httpx2.AsyncClient, **settings: Any) -> OAuthClient:
    return OAuthClient(
        http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(**settings), clock=float
    )


async def test_preregistered_client_needs_no_network(http: httpx2.AsyncClient, router: respx.Router) -> None:
    oauth = make(http, client_id="pre", client_secret="pw", client_metadata_url=CIMD)
    offered = attrs.evolve(DISCOVERY, token_endpoint_auth_methods_supported=("client_secret_post",))
    client = await oauth.ensure_client(offered, None, REDIRECT)
    assert (client.client_id, client.client_secret, client.source) == ("pre", "pw", "preregistered")
    assert client.token_endpoint_auth_method == "client_secret_post"
    assert not router.calls


async def test_configured_auth_method_wins(http: httpx2.AsyncClient) -> None:
    oauth = make(http, client_id="pre", client_secret="pw", token_endpoint_auth_method="client_secret_basic")
    client = await oauth.ensure_client(DISCOVERY, None, REDIRECT)
    assert client.token_endpoint_auth_method == "client_secret_basic"


async def test_client_metadata_document_when_supported(http: httpx2.AsyncClient, router: respx.Router) -> None:
    client = await make(http, client_metadata_url=CIMD).ensure_client(DISCOVERY, None, REDIRECT)
    assert (client.client_id, client.source, client.token_endpoint_auth_method) == (
        CIMD,
        "metadata_document",
        "none",
    )
    assert not router.calls


async def test_invalid_client_metadata_url_is_a_configuration_error(http: httpx2.AsyncClient) -> None:
    with pytest.raises(RegistrationError, match="client_metadata_url"):
        await make(http, client_metadata_url="http://client.example/").ensure_client(DISCOVERY, None, REDIRECT)


async def test_dynamic_registration_when_cimd_unsupported(http: httpx2.AsyncClient, registrations: respx.Route) -> None:
    plain = attrs.evolve(DISCOVERY, client_id_metadata_document_supported=False)
    client = await make(http, client_metadata_url=CIMD).ensure_client(plain, None, REDIRECT, scope="admin")
    assert client.source == "dynamic"
    assert client.issuer == ISSUER
    assert client.redirect_uris == (REDIRECT,)
    sent = json.loads(registrations.calls.last.request.content)
    assert sent["redirect_uris"] == [REDIRECT]
    assert sent["token_endpoint_auth_method"] == "none"
    assert sent["grant_types"] == ["authorization_code", "refresh_token"]
    assert sent["scope"] == "admin read write"
    assert sent["client_name"] == "mcp-tether"


async def test_secret_method_when_server_does_not_offer_none(
    http: httpx2.AsyncClient, registrations: respx.Route
) -> None:
    offered = attrs.evolve(DISCOVERY, token_endpoint_auth_methods_supported=("client_secret_basic",))
    client = await make(http).ensure_client(offered, None, REDIRECT)
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert client.client_secret == "minted-secret"


async def test_current_registration_is_reused(http: httpx2.AsyncClient, router: respx.Router) -> None:
    current = ClientRegistration(client_id="dyn-old", issuer=ISSUER, redirect_uris=(REDIRECT,))
    assert await make(http).ensure_client(DISCOVERY, current, REDIRECT) is current
    legacy = ClientRegistration(client_id="dyn-legacy", issuer=None, redirect_uris=(REDIRECT,))
    assert await make(http).ensure_client(DISCOVERY, legacy, REDIRECT) is legacy
    assert not router.calls


async def test_registration_for_another_issuer_is_replaced_and_its_secret_never_sent(
    http: httpx2.AsyncClient, router: respx.Router, registrations: respx.Route
) -> None:
    current = ClientRegistration(
        client_id="old-client-id-secret",
        client_secret="old-secret",
        issuer="https://old-as.example",
        redirect_uris=(REDIRECT,),
        token_endpoint_auth_method="client_secret_post",
    )
    client = await make(http).ensure_client(DISCOVERY, current, REDIRECT)
    assert client.client_id != current.client_id
    assert client.issuer == ISSUER
    assert_secrets_only_sent_to(router.calls, ["old-secret", "old-client-id-secret"], allowed=None)


async def test_new_callback_port_registers_again(http: httpx2.AsyncClient, registrations: respx.Route) -> None:
    current = ClientRegistration(client_id="dyn-old", issuer=ISSUER, redirect_uris=(REDIRECT,))
    client = await make(http).ensure_client(DISCOVERY, current, "http://127.0.0.1:40999/callback")
    assert client.redirect_uris == ("http://127.0.0.1:40999/callback",)
    assert registrations.call_count == 1


@pytest.mark.parametrize(("status", "expected"), [(500, FailureClass.TRANSIENT), (400, FailureClass.FINAL)])
async def test_registration_refused(
    http: httpx2.AsyncClient, router: respx.Router, status: int, expected: FailureClass
) -> None:
    router.post(REGISTER_URL).respond(status, json={"error": "invalid_client_metadata"})
    with pytest.raises(RegistrationError, match="notes") as caught:
        await make(http).ensure_client(DISCOVERY, None, REDIRECT)
    assert caught.value.failure_class is expected


async def test_registration_timeout_is_transient(http: httpx2.AsyncClient, router: respx.Router) -> None:
    router.post(REGISTER_URL).mock(side_effect=httpx2.ConnectTimeout("slow"))
    with pytest.raises(RegistrationError) as caught:
        await make(http).ensure_client(DISCOVERY, None, REDIRECT)
    assert caught.value.failure_class is FailureClass.TRANSIENT


@pytest.mark.parametrize(
    "answer",
    [
        {"client_id": "x", "token_endpoint_auth_method": "private_key_jwt"},
        {"client_id": "x", "token_endpoint_auth_method": "client_secret_basic"},  # no secret issued
        {"no_client_id": True},
        "<html>",
    ],
)
async def test_unusable_registration_is_refused(http: httpx2.AsyncClient, router: respx.Router, answer: object) -> None:
    content = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
    router.post(REGISTER_URL).respond(201, content=content)
    with pytest.raises(RegistrationError) as caught:
        await make(http).ensure_client(DISCOVERY, None, REDIRECT)
    assert caught.value.failure_class is FailureClass.FINAL


async def test_no_registration_endpoint(http: httpx2.AsyncClient) -> None:
    closed = attrs.evolve(DISCOVERY, registration_endpoint=None)
    with pytest.raises(RegistrationError, match="client_id"):
        await make(http).ensure_client(closed, None, REDIRECT)


async def test_client_credentials_needs_a_configured_client(http: httpx2.AsyncClient) -> None:
    with pytest.raises(RegistrationError, match="client credentials"):
        await make(http, client_credentials=True).ensure_client(DISCOVERY, None, None)
