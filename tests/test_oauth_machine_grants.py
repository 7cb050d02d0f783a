"""Browserless grants: client credentials with private_key_jwt (RFC 7523 client
assertions) and cross-app access (SEP-990: RFC 8693 token exchange for an ID-JAG,
then the RFC 7523 jwt-bearer grant)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from oauth_fakes import ISSUER, SERVER_URL, TOKEN_URL, form_of

from mcp_tether.adapters.config import parse_config
from mcp_tether.adapters.oauth import OAuthClient, OAuthSettings, TokenFailure
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet

NOW = 1_700_000_000.0
DISCOVERY = Discovery(resource=SERVER_URL, issuer=ISSUER, token_endpoint=TOKEN_URL)
IDP_TOKEN_URL = "https://idp.example/token"


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def _oauth(http: httpx2.AsyncClient, settings: OAuthSettings) -> OAuthClient:
    return OAuthClient(http, server_name="notes", server_url=SERVER_URL, settings=settings, clock=lambda: NOW)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
async def test_private_key_jwt_signs_a_client_assertion_for_the_issuer(
    http: httpx2.AsyncClient, router: respx.Router, kind: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    settings = OAuthSettings(client_id="svc", client_credentials=True, private_key=_pem(key))
    oauth = _oauth(http, settings)
    client = await oauth.ensure_client(
        Discovery(
            resource=SERVER_URL,
            issuer=ISSUER,
            token_endpoint=TOKEN_URL,
            token_endpoint_auth_methods_supported=("private_key_jwt",),
        ),
        None,
        None,
    )
    assert client.token_endpoint_auth_method == "private_key_jwt"
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "m2m", "expires_in": 300})
    result = await oauth.client_credentials(DISCOVERY, client, None)
    assert isinstance(result, TokenSet)
    request = route.calls.last.request
    assert "authorization" not in request.headers
    form = form_of(request)
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    algorithm = "ES256" if kind == "ec" else "RS256"
    assert jwt.get_unverified_header(form["client_assertion"])["alg"] == algorithm
    claims = jwt.decode(
        form["client_assertion"],
        key.public_key(),
        algorithms=[algorithm],
        audience=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("svc", "svc", ISSUER)
    assert claims["iat"] == int(NOW) and 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 16


async def test_private_key_jwt_without_a_usable_key_sends_nothing(
    http: httpx2.AsyncClient, router: respx.Router
) -> None:
    client = ClientRegistration(client_id="svc", token_endpoint_auth_method="private_key_jwt", source="preregistered")
    for settings, expected in (
        (OAuthSettings(client_id="svc"), "no private key is configured"),
        (OAuthSettings(client_id="svc", private_key="-----BEGIN PRIVATE KEY-----\nnot-a-key\n"), "not an unencrypted"),
    ):
        result = await _oauth(http, settings).client_credentials(DISCOVERY, client, None)
        assert isinstance(result, TokenFailure)
        assert result.failure_class is FailureClass.CLIENT_INVALID
        assert expected in result.reason and "not-a-key" not in result.reason
    assert not router.calls


async def test_cross_app_access_exchanges_the_id_token_then_presents_the_id_jag(
    http: httpx2.AsyncClient, router: respx.Router
) -> None:
    settings = OAuthSettings(
        client_id="xaa",
        client_secret="xaa-secret",
        idp_token_endpoint=IDP_TOKEN_URL,
        idp_client_id="idp-client",
        idp_id_token="id-token-secret",
    )
    assert settings.without_browser and "id-token-secret" not in repr(settings)
    oauth = _oauth(http, settings)
    client = await oauth.ensure_client(DISCOVERY, None, None)
    idp = router.post(IDP_TOKEN_URL).respond(
        200,
        json={
            "access_token": "id-jag-secret",
            "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "token_type": "N_A",
        },
    )
    token = router.post(TOKEN_URL).respond(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})
    result = await oauth.grant_without_browser(DISCOVERY, client, "read")
    assert isinstance(result, TokenSet)
    assert (result.access_token, result.scope) == ("at", "read")
    assert form_of(idp.calls.last.request) == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "id-token-secret",
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
        "audience": ISSUER,
        "resource": SERVER_URL,
        "scope": "read",
        "client_id": "idp-client",
    }
    request = token.calls.last.request
    assert form_of(request) == {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": "id-jag-secret",
        "scope": "read",
        "client_id": "xaa",
        "resource": SERVER_URL,
    }
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"xaa:xaa-secret").decode()


async def test_a_refused_token_exchange_stops_before_the_authorization_server(
    http: httpx2.AsyncClient, router: respx.Router
) -> None:
    settings = OAuthSettings(client_id="xaa", idp_token_endpoint=IDP_TOKEN_URL, idp_id_token="id-token-secret")
    router.post(IDP_TOKEN_URL).respond(400, json={"error": "invalid_grant", "error_description": "expired"})
    token = router.post(TOKEN_URL).respond(200, json={"access_token": "at"})
    client = ClientRegistration(client_id="xaa", token_endpoint_auth_method="none", source="preregistered")
    result = await _oauth(http, settings).cross_app_access(DISCOVERY, client, None)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.FINAL
    assert "identity provider" in result.reason and "id-token-secret" not in result.reason
    assert not token.calls


def test_configuration_reads_key_and_identity_provider_settings() -> None:
    pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    document = {
        "mcpServers": {
            "jwt": {
                "url": SERVER_URL,
                "oauth": {
                    "clientId": "svc",
                    "clientCredentials": True,
                    "tokenEndpointAuthMethod": "private_key_jwt",
                    "privateKey": pem,
                    "signingAlgorithm": "ES256",
                },
            },
            "xaa": {
                "url": SERVER_URL,
                "oauth": {"clientId": "c", "idpTokenEndpoint": IDP_TOKEN_URL, "idpIdToken": "${ID_TOKEN}"},
            },
            "no-key": {"url": SERVER_URL, "oauth": {"clientId": "c", "tokenEndpointAuthMethod": "private_key_jwt"}},
            "no-token": {"url": SERVER_URL, "oauth": {"clientId": "c", "idpTokenEndpoint": IDP_TOKEN_URL}},
        }
    }
    config = parse_config(
        json.dumps(document), path=Path("/x/.claude.json"), cwd="/x", environ={"ID_TOKEN": "tok-secret"}
    )
    jwt_oauth = config.servers["jwt"].oauth
    assert jwt_oauth is not None and jwt_oauth.private_key == pem and jwt_oauth.signing_algorithm == "ES256"
    assert "PRIVATE KEY" not in repr(config)
    xaa_oauth = config.servers["xaa"].oauth
    assert xaa_oauth is not None and xaa_oauth.cross_app_access and xaa_oauth.idp_id_token == "tok-secret"
    assert "privateKey" in (config.servers["no-key"].problem or "")
    assert "idpIdToken" in (config.servers["no-token"].problem or "")
