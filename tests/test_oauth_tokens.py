"""Token requests: refresh with rotation, classification of every failure, client auth, revocation."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import webbrowser
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oauth_fakes import ISSUER, SERVER_URL, TOKEN_URL, form_of, handler

from mcp_tether.adapters.oauth import OAuthClient, OAuthSettings, TokenFailure, parse_retry_after
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet

NOW = 1_700_000_000.0
DISCOVERY = Discovery(
    resource=SERVER_URL,
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=TOKEN_URL,
    revocation_endpoint=f"{ISSUER}/revoke",
)
PUBLIC = ClientRegistration(client_id="client-1", issuer=ISSUER, redirect_uris=("http://127.0.0.1:1/callback",))
TOKENS = TokenSet(
    access_token="at-old-secret",
    refresh_token="rt-old-secret",
    scope="read",
    issued_at=NOW - 4000,
    expires_in=3600,
)


@pytest.fixture(autouse=True)
def no_browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Token requests, failed or not, never open a browser."""
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *args, **kwargs: opened.append(url))
    yield
    assert opened == []


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthClient]:
    async with httpx2.AsyncClient() as http:
        yield OAuthClient(http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(), clock=lambda: NOW)


async def test_refresh_rotates_and_sends_resource(oauth: OAuthClient, router: respx.Router) -> None:
    route = router.post(TOKEN_URL).respond(
        200,
        json={"access_token": "at-new", "refresh_token": "rt-new", "expires_in": 60, "token_type": "bearer"},
    )
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenSet)
    assert (result.access_token, result.refresh_token, result.issued_at) == ("at-new", "rt-new", NOW)
    assert result.scope == "read"  # kept: the response did not say
    form = form_of(route.calls.last.request)
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-old-secret",
        "client_id": "client-1",
        "resource": SERVER_URL,
    }


async def test_refresh_without_rotation_keeps_the_refresh_token(oauth: OAuthClient, router: respx.Router) -> None:
    router.post(TOKEN_URL).respond(200, json={"access_token": "at-new"})
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenSet)
    assert result.refresh_token == "rt-old-secret"
    assert result.expires_in is None


async def test_refresh_without_refresh_token_sends_nothing(oauth: OAuthClient, router: respx.Router) -> None:
    result = await oauth.refresh(DISCOVERY, PUBLIC, TokenSet(access_token="at", issued_at=NOW))
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.FINAL
    assert not router.calls


HTTP_DATE = email.utils.formatdate(NOW + 90, usegmt=True)


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retry_after"),
    [
        (400, {"error": "invalid_grant"}, {}, FailureClass.FINAL, None),
        (400, {"error": "invalid_client"}, {}, FailureClass.CLIENT_INVALID, None),
        (401, {"error": "invalid_client"}, {}, FailureClass.CLIENT_INVALID, None),
        (401, b"", {}, FailureClass.CLIENT_INVALID, None),
        (400, {"error": "invalid_scope"}, {}, FailureClass.FINAL, None),
        (400, {"error": "unauthorized_client"}, {}, FailureClass.FINAL, None),
        (400, {"error": "temporarily_unavailable"}, {}, FailureClass.TRANSIENT, None),
        (500, {"error": "server_error"}, {}, FailureClass.TRANSIENT, None),
        (502, b"<html>bad gateway</html>", {}, FailureClass.TRANSIENT, None),
        (503, b"", {"Retry-After": "120"}, FailureClass.TRANSIENT, 120.0),
        (429, b"", {"Retry-After": HTTP_DATE}, FailureClass.TRANSIENT, 90.0),
        (429, b"", {"Retry-After": "soon"}, FailureClass.TRANSIENT, None),
        (408, b"", {}, FailureClass.TRANSIENT, None),
        (200, b"<html>login</html>", {}, FailureClass.TRANSIENT, None),
        (200, b'{"access_token": ', {}, FailureClass.TRANSIENT, None),
        (200, {"token_type": "Bearer"}, {}, FailureClass.TRANSIENT, None),
        (200, {"access_token": ""}, {}, FailureClass.TRANSIENT, None),
        (200, [1, 2], {}, FailureClass.TRANSIENT, None),
        (400, b"<html>oops</html>", {}, FailureClass.TRANSIENT, None),
        (404, b"", {}, FailureClass.TRANSIENT, None),
    ],
)
async def test_refresh_failures_are_classified(
    oauth: OAuthClient,
    router: respx.Router,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: FailureClass,
    retry_after: float | None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    router.post(TOKEN_URL).respond(status, content=content, headers=headers)
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is expected
    assert result.retry_after == pytest.approx(retry_after, abs=1.0) if retry_after else result.retry_after is None
    assert "notes" in result.reason


@pytest.mark.parametrize(
    "trouble",
    [
        httpx2.ReadTimeout("slow"),
        httpx2.ConnectTimeout("slow"),
        httpx2.ConnectError("refused"),
        httpx2.RemoteProtocolError("reset"),
        httpx2.ReadError("reset"),
    ],
)
async def test_transport_trouble_is_transient(oauth: OAuthClient, router: respx.Router, trouble: Exception) -> None:
    router.post(TOKEN_URL).mock(side_effect=trouble)
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.TRANSIENT


async def test_slow_drip_response_hits_the_total_deadline(router: respx.Router) -> None:
    async def slow(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(5)
        return httpx2.Response(200, json={"access_token": "late"})

    router.post(TOKEN_URL).mock(side_effect=handler(slow))
    async with httpx2.AsyncClient() as http:
        oauth = OAuthClient(
            http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(), clock=float,
            request_timeout=0.2,
        )  # fmt: skip
        result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.TRANSIENT


async def test_echoed_refresh_token_is_redacted_from_the_reason(oauth: OAuthClient, router: respx.Router) -> None:
    router.post(TOKEN_URL).respond(
        400, json={"error": "invalid_grant", "error_description": "token rt-old-secret was revoked"}
    )
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenFailure)
    assert "rt-old-secret" not in result.reason
    assert "[redacted]" in result.reason
    assert "rt-old-secret" not in repr(result)


async def test_cross_origin_redirect_from_token_endpoint_is_not_followed(
    oauth: OAuthClient, router: respx.Router
) -> None:
    router.post(TOKEN_URL).respond(307, headers={"Location": "https://evil.example/token"})
    elsewhere = router.post("https://evil.example/token").respond(200, json={"access_token": "x"})
    result = await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.TRANSIENT
    assert elsewhere.call_count == 0
    assert len(router.calls) == 1


async def test_same_origin_307_from_token_endpoint_is_followed_with_the_body(
    oauth: OAuthClient, router: respx.Router
) -> None:
    router.post(TOKEN_URL).respond(307, headers={"Location": "/v2/token"})
    moved = router.post(f"{ISSUER}/v2/token").respond(200, json={"access_token": "at-new"})
    assert isinstance(await oauth.refresh(DISCOVERY, PUBLIC, TOKENS), TokenSet)
    assert form_of(moved.calls.last.request)["refresh_token"] == "rt-old-secret"


async def test_client_bound_to_another_issuer_sends_nothing(oauth: OAuthClient, router: respx.Router) -> None:
    foreign = ClientRegistration(client_id="c", client_secret="s3cret", issuer="https://old-as.example")
    result = await oauth.refresh(DISCOVERY, foreign, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.CLIENT_INVALID
    assert not router.calls


async def test_client_secret_basic(oauth: OAuthClient, router: respx.Router) -> None:
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "at"})
    client = ClientRegistration(
        client_id="id:1",
        client_secret="p@ss word",
        issuer=ISSUER,
        token_endpoint_auth_method="client_secret_basic",
    )
    await oauth.refresh(DISCOVERY, client, TOKENS)
    request = route.calls.last.request
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"id%3A1:p%40ss%20word").decode()
    assert "client_secret" not in form_of(request)


async def test_client_secret_post(oauth: OAuthClient, router: respx.Router) -> None:
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "at"})
    client = ClientRegistration(
        client_id="id", client_secret="pw", issuer=ISSUER, token_endpoint_auth_method="client_secret_post"
    )
    await oauth.refresh(DISCOVERY, client, TOKENS)
    request = route.calls.last.request
    assert "authorization" not in request.headers
    assert form_of(request)["client_secret"] == "pw"


async def test_unsupported_client_auth_method_sends_nothing(oauth: OAuthClient, router: respx.Router) -> None:
    client = ClientRegistration(client_id="id", issuer=ISSUER, token_endpoint_auth_method="private_key_jwt")
    result = await oauth.refresh(DISCOVERY, client, TOKENS)
    assert isinstance(result, TokenFailure)
    assert result.failure_class is FailureClass.CLIENT_INVALID
    assert not router.calls


async def test_client_credentials_grant(oauth: OAuthClient, router: respx.Router) -> None:
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "m2m", "expires_in": 300})
    client = ClientRegistration(
        client_id="svc",
        client_secret="pw",
        token_endpoint_auth_method="client_secret_basic",
        source="preregistered",
    )
    result = await oauth.client_credentials(DISCOVERY, client, "read")
    assert isinstance(result, TokenSet)
    assert result.scope == "read"
    assert result.refresh_token is None
    assert form_of(route.calls.last.request) == {
        "grant_type": "client_credentials",
        "scope": "read",
        "client_id": "svc",
        "resource": SERVER_URL,
    }


async def test_code_exchange_records_requested_scope_when_response_omits_it(
    oauth: OAuthClient, router: respx.Router
) -> None:
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "at", "refresh_token": "rt"})
    result = await oauth.exchange_code(
        DISCOVERY,
        PUBLIC,
        code="c0de",
        code_verifier="v" * 43,
        redirect_uri="http://127.0.0.1:1/callback",
        scope="read",
    )
    assert isinstance(result, TokenSet)
    assert result.scope == "read"
    form = form_of(route.calls.last.request)
    assert form["resource"] == SERVER_URL
    assert form["code_verifier"] == "v" * 43


async def test_revoke_sends_both_tokens(oauth: OAuthClient, router: respx.Router) -> None:
    route = router.post(f"{ISSUER}/revoke").respond(200)
    assert await oauth.revoke(DISCOVERY, PUBLIC, TOKENS)
    sent = [(form_of(call.request)["token"], form_of(call.request)["token_type_hint"]) for call in route.calls]
    assert sent == [("rt-old-secret", "refresh_token"), ("at-old-secret", "access_token")]


async def test_revoke_reports_failure_and_absence_without_raising(oauth: OAuthClient, router: respx.Router) -> None:
    router.post(f"{ISSUER}/revoke").mock(side_effect=httpx2.ConnectError("down"))
    assert not await oauth.revoke(DISCOVERY, PUBLIC, TOKENS)
    without = Discovery(issuer=ISSUER, token_endpoint=TOKEN_URL)
    assert not await oauth.revoke(without, PUBLIC, TOKENS)


def test_parse_retry_after_bounds() -> None:
    assert parse_retry_after("5", NOW) == 5.0
    assert parse_retry_after("99999999", NOW) == 3600.0
    assert parse_retry_after(email.utils.formatdate(NOW - 100, usegmt=True), NOW) == 0.0
    assert parse_retry_after("-3", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize("value", ["²", "٣", "１２", "5²"])
def test_parse_retry_after_refuses_non_ascii_digits(value: str) -> None:
    # str.isdigit() accepts these; RFC 9110 delta-seconds are ASCII digits only.
    assert parse_retry_after(value, NOW) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
token_like = st.fixed_dictionaries(
    {},
    optional={
        "access_token": json_values | st.text(min_size=1, max_size=10),
        "refresh_token": json_values,
        "expires_in": json_values,
        "scope": json_values,
        "token_type": json_values,
        "error": json_values | st.sampled_from(["invalid_grant", "invalid_client", "invalid_scope"]),
        "error_description": json_values,
    },
)
bodies = st.one_of(
    token_like.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from([200, 201, 204, 301, 307, 400, 401, 403, 404, 418, 429, 500, 503]),
    body=bodies,
    retry_after=st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30),
)
def test_hostile_token_responses_never_raise(status: int, body: bytes, retry_after: str | None) -> None:
    headers = {b"Retry-After": retry_after.encode("latin-1")} if retry_after is not None else {}

    async def run() -> TokenSet | TokenFailure:
        with respx.mock(assert_all_called=False) as mock:
            mock.post(TOKEN_URL).respond(status, content=body, headers=headers)
            async with httpx2.AsyncClient() as http:
                oauth = OAuthClient(
                    http,
                    server_name="notes",
                    server_url=SERVER_URL,
                    settings=OAuthSettings(),
                    clock=lambda: NOW,
                )
                return await oauth.refresh(DISCOVERY, PUBLIC, TOKENS)

    result = asyncio.run(run())
    if isinstance(result, TokenSet):
        assert status == 200
        assert result.issued_at == NOW
        assert result.access_token
        assert result.expires_in is None or result.expires_in > 0
    else:
        assert result.failure_class in FailureClass
        assert "rt-old-secret" not in result.reason
        assert result.retry_after is None or 0 <= result.retry_after <= 3600
