"""The loopback test servers of ``mcp_tether.testing``, driven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from mcp_types import CallToolResult, TextContent
from pydantic import AnyUrl

from mcp_tether.testing.authserver import SimulatedAuthorizationServer, SimulatedClient
from mcp_tether.testing.sdk import MemoryTokenStorage
from mcp_tether.testing.serve import (
    LoopbackOAuthEnvironment,
    LoopbackServer,
    serve_loopback,
    serve_loopback_async,
)

REDIRECT = "http://127.0.0.1:33418/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class AS:
    """A served authorization server plus a client for it."""

    def __init__(self, server: SimulatedAuthorizationServer, url: str) -> None:
        self.server = server
        self.url = url
        self.issuer = server.issuer_for(url)
        self.http = httpx2.Client(base_url=url, follow_redirects=False, timeout=10)

    def register(self, **metadata: object) -> dict[str, object]:
        body: dict[str, object] = {
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }
        body.update(metadata)
        response = self.http.post(f"{self.server.issuer_path}/register", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, object] = response.json()
        return result

    def authorize(self, client_id: str, challenge: str, **extra: str) -> httpx2.Response:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st-1",
            "resource": "http://127.0.0.1:1/mcp",
            **extra,
        }
        return self.http.get(f"{self.server.issuer_path}/authorize", params=params)

    def token(self, form: dict[str, str], **kwargs: object) -> httpx2.Response:
        return self.http.post(f"{self.server.issuer_path}/token", data=form, **kwargs)  # type: ignore[arg-type]

    def login(self, client_id: str) -> dict[str, object]:
        """Authorize (auto-approved) and exchange the code; return the token response."""
        verifier, challenge = pkce_pair()
        location = self.authorize(client_id, challenge).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        response = self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client_id,
                "resource": "http://127.0.0.1:1/mcp",
            }
        )
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()
        return result

    def refresh(self, client_id: str, refresh_token: object) -> httpx2.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": str(refresh_token), "client_id": client_id})


@pytest.fixture
def served() -> Iterator[AS]:
    server = SimulatedAuthorizationServer()
    with serve_loopback(server.app) as url:
        helper = AS(server, url)
        yield helper
        helper.http.close()


# ----------------------------------------------------------------------------- serve


def test_loopback_server_knows_its_url_before_start_and_stops_cleanly() -> None:
    server = LoopbackServer()
    assert server.url.startswith("http://127.0.0.1:")
    app = SimulatedAuthorizationServer().app
    with server.running(app) as url:
        assert url == server.url
        assert httpx2.get(f"{url}/.well-known/oauth-authorization-server").status_code == 200
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{url}/.well-known/oauth-authorization-server")
    with pytest.raises(RuntimeError, match="already started"):
        server.start(app)


async def test_async_variant_leaves_the_event_loop_free() -> None:
    server = SimulatedAuthorizationServer()
    async with serve_loopback_async(server.app) as url, httpx2.AsyncClient() as client:
        response = await client.get(f"{url}/.well-known/oauth-authorization-server")
    assert response.json()["issuer"] == url


# ----------------------------------------------------------------------------- metadata


def test_metadata_advertises_the_mcp_profile(served: AS) -> None:
    document = served.http.get("/.well-known/oauth-authorization-server").json()
    assert document["issuer"] == served.issuer
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["token_endpoint_auth_methods_supported"] == ["none", "client_secret_post", "client_secret_basic"]
    assert set(document["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    for endpoint in ("authorization", "token", "registration", "revocation"):
        assert document[f"{endpoint}_endpoint"].startswith(served.issuer + "/")
    assert served.server.counters().metadata == 1


def test_path_aware_issuer_openid_variant_and_metadata_knobs() -> None:
    server = SimulatedAuthorizationServer(
        issuer_path="/tenant1",
        metadata_documents=("openid",),
        code_challenge_methods=None,
        iss_parameter_supported=False,
        registration_enabled=False,
        metadata_overrides={"issuer": "https://elsewhere.example", "scopes_supported": None},
    )
    with serve_loopback(server.app) as url:
        assert httpx2.get(f"{url}/.well-known/oauth-authorization-server/tenant1").status_code == 404
        for path in ("/.well-known/openid-configuration/tenant1", "/tenant1/.well-known/openid-configuration"):
            document = httpx2.get(url + path).json()
            assert document["issuer"] == "https://elsewhere.example"
            assert document["token_endpoint"] == f"{url}/tenant1/token"
            assert "code_challenge_methods_supported" not in document
            assert "registration_endpoint" not in document
            assert "scopes_supported" not in document
            assert document["authorization_response_iss_parameter_supported"] is False
        assert httpx2.post(f"{url}/tenant1/register", json={}).status_code in (404, 405)
    assert server.issuer_for(url) == f"{url}/tenant1"


# ----------------------------------------------------------------------------- authorization code + PKCE


def test_registration_authorize_and_code_exchange(served: AS) -> None:
    registered = served.register(token_endpoint_auth_method="none")
    client_id = str(registered["client_id"])
    assert "client_secret" not in registered
    verifier, challenge = pkce_pair()
    response = served.authorize(client_id, challenge)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert response.headers["location"].startswith(REDIRECT + "?")
    assert query["state"] == ["st-1"]
    assert query["iss"] == [served.issuer]
    code = query["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": "x" * 43,
    }
    bad = served.token(form)
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
    good = served.token({**form, "code_verifier": verifier})
    assert good.status_code == 200
    assert good.headers["cache-control"] == "no-store"
    tokens = good.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["scope"] == "mcp"
    info = served.server.introspect(tokens["access_token"])
    assert info is not None
    assert (info.client_id, info.scopes, info.resource) == (client_id, ("mcp",), "http://127.0.0.1:1/mcp")
    # Codes are single-use, and a replayed code revokes what it produced.
    replay = served.token({**form, "code_verifier": verifier})
    assert replay.json()["error"] == "invalid_grant"
    assert served.server.introspect(tokens["access_token"]) is None
    counters = served.server.counters()
    assert (counters.register, counters.authorize, counters.codes_issued, counters.tokens_issued) == (1, 1, 1, 1)
    assert counters.token_by_grant == {"authorization_code": 3}


def test_loopback_redirect_uri_may_change_port_but_nothing_else(served: AS) -> None:
    client_id = str(served.register()["client_id"])
    _, challenge = pkce_pair()
    other_port = served.authorize(client_id, challenge, redirect_uri="http://127.0.0.1:40999/callback")
    assert other_port.status_code == 302
    assert other_port.headers["location"].startswith("http://127.0.0.1:40999/callback?")
    for wrong in ("http://127.0.0.1:33418/other", "http://evil.example/callback", "https://127.0.0.1:33418/callback"):
        response = served.authorize(client_id, challenge, redirect_uri=wrong)
        assert response.status_code == 400, wrong
        assert "location" not in response.headers


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"state": ""}, "invalid_request"),
        ({"scope": "mcp unknown:scope"}, "invalid_scope"),
    ],
)
def test_authorize_errors_redirect_with_error(served: AS, override: dict[str, str], error: str) -> None:
    client_id = str(served.register()["client_id"])
    _, challenge = pkce_pair()
    response = served.authorize(client_id, challenge, **override)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == [error]


def test_consent_page_approve_and_deny(served: AS) -> None:
    served.server.auto_approve = False
    client_id = str(served.register()["client_id"])
    _, challenge = pkce_pair()
    for decision, expected in (("approve", "code"), ("deny", "error")):
        page = served.authorize(client_id, challenge)
        assert page.status_code == 200
        assert "Approve" in page.text and "Deny" in page.text
        request_id = page.text.split('name="request_id" value="')[1].split('"')[0]
        answer = served.http.post("/authorize/decision", data={"request_id": request_id, "decision": decision})
        assert answer.status_code == 302
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert expected in query and query["state"] == ["st-1"]
        if decision == "deny":
            assert query["error"] == ["access_denied"]
        again = served.http.post("/authorize/decision", data={"request_id": request_id, "decision": decision})
        assert again.status_code == 400
    assert served.server.counters().decisions == 4


# ----------------------------------------------------------------------------- client authentication


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_confidential_clients_authenticate_with_their_method(served: AS, method: str) -> None:
    registered = served.register(token_endpoint_auth_method=method)
    client_id, secret = str(registered["client_id"]), str(registered["client_secret"])
    verifier, challenge = pkce_pair()
    code = parse_qs(urlsplit(served.authorize(client_id, challenge).headers["location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    wrong = served.token({**form, "client_id": client_id, "client_secret": "nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    if method == "client_secret_post":
        response = served.token({**form, "client_id": client_id, "client_secret": secret})
    else:
        response = served.token(form, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    assert "refresh_token" in response.json()


def test_client_credentials_grant_and_forgotten_client() -> None:
    client = SimulatedClient(
        client_id="machine",
        client_secret="s3cret-value",
        token_endpoint_auth_method="client_secret_basic",
        grant_types=("client_credentials",),
    )
    assert "s3cret" not in repr(client)
    server = SimulatedAuthorizationServer(clients=[client], access_token_lifetime=2.5)
    with serve_loopback(server.app) as url:
        form = {"grant_type": "client_credentials", "scope": "mcp:admin"}
        response = httpx2.post(f"{url}/token", data=form, auth=("machine", "s3cret-value"))
        assert response.status_code == 200
        assert response.json()["expires_in"] == 2.5
        assert "refresh_token" not in response.json()
        server.forget_client("machine")
        response = httpx2.post(f"{url}/token", data=form, auth=("machine", "s3cret-value"))
        assert response.json()["error"] == "invalid_client"
    assert server.counters().token_by_grant == {"client_credentials": 2}


# ----------------------------------------------------------------------------- refresh


def test_refresh_rotates_and_reuse_revokes_the_family(served: AS) -> None:
    client_id = str(served.register()["client_id"])
    first = served.login(client_id)
    second = served.refresh(client_id, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    third = served.refresh(client_id, second["refresh_token"]).json()
    assert served.server.introspect(str(third["access_token"])) is not None
    # A retired refresh token comes back: the whole family dies.
    reuse = served.refresh(client_id, first["refresh_token"])
    assert reuse.json()["error"] == "invalid_grant"
    assert served.server.introspect(str(third["access_token"])) is None
    assert served.refresh(client_id, third["refresh_token"]).json()["error"] == "invalid_grant"
    counters = served.server.counters()
    assert (counters.refreshes, counters.reuse_detected) == (2, 1)


def test_refresh_without_rotation_keeps_the_refresh_token(served: AS) -> None:
    served.server.rotate_refresh_tokens = False
    client_id = str(served.register()["client_id"])
    first = served.login(client_id)
    for _ in range(2):
        answer = served.refresh(client_id, first["refresh_token"]).json()
        assert "refresh_token" not in answer and "access_token" in answer
    assert served.server.counters().reuse_detected == 0


def test_reuse_detection_can_be_switched_off(served: AS) -> None:
    served.server.detect_refresh_reuse = False
    client_id = str(served.register()["client_id"])
    first = served.login(client_id)
    second = served.refresh(client_id, first["refresh_token"]).json()
    assert served.refresh(client_id, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert served.server.introspect(str(second["access_token"])) is not None
    assert served.server.counters().reuse_detected == 0


def test_token_lifetime_and_early_expiry_on_the_resource_side() -> None:
    now = [1000.0]
    server = SimulatedAuthorizationServer(access_token_lifetime=2.0, resource_early_expiry=0.5, clock=lambda: now[0])
    with serve_loopback(server.app) as url:
        helper = AS(server, url)
        tokens = helper.login(str(helper.register()["client_id"]))
        assert tokens["expires_in"] == 2
        info = server.introspect(str(tokens["access_token"]))
        assert info is not None and info.expires_at == 1002.0
        now[0] = 1001.4
        assert server.introspect(str(tokens["access_token"])) is not None
        now[0] = 1001.5
        assert server.introspect(str(tokens["access_token"])) is None
        helper.http.close()


# ----------------------------------------------------------------------------- revocation


def test_revocation_of_access_and_refresh_tokens(served: AS) -> None:
    client_id = str(served.register()["client_id"])
    tokens = served.login(client_id)
    unknown = served.http.post("/revoke", data={"token": "nonsense", "client_id": client_id})
    assert unknown.status_code == 200
    served.http.post("/revoke", data={"token": tokens["access_token"], "client_id": client_id})
    assert served.server.introspect(str(tokens["access_token"])) is None
    fresh = served.refresh(client_id, tokens["refresh_token"]).json()
    served.http.post(
        "/revoke",
        data={"token": fresh["refresh_token"], "token_type_hint": "refresh_token", "client_id": client_id},
    )
    assert served.server.introspect(str(fresh["access_token"])) is None
    assert served.refresh(client_id, fresh["refresh_token"]).json()["error"] == "invalid_grant"
    assert served.server.counters().revoke == 3


# ----------------------------------------------------------------------------- failure script


def test_scripted_token_answers_then_normal_service(served: AS) -> None:
    client_id = str(served.register()["client_id"])
    tokens = served.login(client_id)
    served.server.script_token_answers(
        [503, "retry_after:7", "invalid_client", "html", "malformed_json", "slow:0.3"], grant_type="refresh_token"
    )
    served.server.script_token_answers(["invalid_grant"])
    answers = [served.refresh(client_id, tokens["refresh_token"]) for _ in range(5)]
    assert [a.status_code for a in answers] == [503, 429, 401, 200, 200]
    assert answers[1].headers["retry-after"] == "7"
    assert answers[2].json()["error"] == "invalid_client"
    assert answers[3].headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError, match="Unterminated"):
        answers[4].json()
    started = time.monotonic()
    slow = served.refresh(client_id, tokens["refresh_token"])
    assert time.monotonic() - started >= 0.3
    assert slow.status_code == 200 and "refresh_token" in slow.json()
    # The any-grant queue applies once the grant's own queue is empty.
    assert served.refresh(client_id, slow.json()["refresh_token"]).json()["error"] == "invalid_grant"
    counters = served.server.counters()
    assert counters.scripted_answers == 7
    assert counters.refreshes == 1
    assert counters.reuse_detected == 0
    with pytest.raises(ValueError, match="not understood"):
        served.server.script_token_answers(["teapot"])


def test_counters_read_from_another_thread_while_serving(served: AS) -> None:
    client_id = str(served.register()["client_id"])
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(served.server.counters().token)
            time.sleep(0.001)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            served.login(client_id)
    finally:
        stop.set()
        thread.join(5)
    assert seen == sorted(seen)
    assert served.server.counters().tokens_issued == 5


# ----------------------------------------------------------------------------- resource server


def bearer_for(env: LoopbackOAuthEnvironment, scope: str = "mcp", resource: str | None = None) -> str:
    """Log in through the environment's authorization server and return an access token."""
    with httpx2.Client(base_url=env.auth_url, timeout=10) as http:
        helper = AS(env.auth, env.auth_url)
        helper.http = http
        client_id = str(helper.register()["client_id"])
        verifier, challenge = pkce_pair()
        target = resource or env.mcp_url
        location = helper.authorize(client_id, challenge, scope=scope, resource=target).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        tokens = helper.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client_id,
                "resource": target,
            }
        ).json()
    return str(tokens["access_token"])


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def env() -> Iterator[LoopbackOAuthEnvironment]:
    with LoopbackOAuthEnvironment(challenge_scope="mcp") as environment:
        yield environment


def test_environment_urls_are_distinct_and_metadata_names_the_issuer(env: LoopbackOAuthEnvironment) -> None:
    assert urlsplit(env.issuer).netloc != urlsplit(env.mcp_url).netloc
    assert env.mcp_url == f"{env.resource_url}/mcp"
    assert env.open_mcp_url == f"{env.resource_url}/open/mcp"
    document = httpx2.get(env.resource_metadata_url).json()
    assert document == {
        "resource": env.mcp_url,
        "authorization_servers": [env.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp", "mcp:admin"],
    }
    assert httpx2.get(f"{env.resource_url}/.well-known/oauth-protected-resource").json() == document
    issuer_document = httpx2.get(f"{env.issuer}/.well-known/oauth-authorization-server").json()
    assert issuer_document["issuer"] == env.issuer


def test_protected_endpoint_challenges_without_a_valid_token(env: LoopbackOAuthEnvironment) -> None:
    before = env.resource.counters().unauthorized
    missing = httpx2.post(env.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{env.resource_metadata_url}", scope="mcp"'
    )
    bogus = httpx2.post(env.mcp_url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"})
    assert bogus.status_code == 401
    assert bogus.headers["www-authenticate"].startswith('Bearer error="invalid_token", resource_metadata=')
    # A token issued for another resource (RFC 8707 audience) is refused too.
    foreign = bearer_for(env, resource="http://127.0.0.1:1/mcp")
    wrong_audience = httpx2.post(
        env.mcp_url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {foreign}"}
    )
    assert wrong_audience.status_code == 401
    assert env.resource.counters().unauthorized == before + 3


def test_step_up_scope_is_demanded_with_403(env: LoopbackOAuthEnvironment) -> None:
    token = bearer_for(env, scope="mcp")
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "needs_scope", "arguments": {}}}
    response = httpx2.post(env.mcp_url, json=call, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp mcp:admin"' in challenge
    assert env.resource.counters().forbidden >= 1


def _text(result: CallToolResult) -> str:
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def test_sdk_client_calls_tools_with_a_bearer_token(env: LoopbackOAuthEnvironment) -> None:
    token = await asyncio.to_thread(bearer_for, env, "mcp mcp:admin")
    before = env.resource.counters()
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as http,
        streamable_http_client(env.mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert _text(await session.call_tool("echo", {"text": "hi"})) == "hi"
        assert float(_text(await session.call_tool("add", {"a": 2, "b": 3}))) == 5
        assert _text(await session.call_tool("sleep", {"ms": 20})) == "20"
        assert _text(await session.call_tool("needs_scope", {})) == "granted"
        who = (await session.call_tool("whoami", {})).structured_content
        assert who is not None
        assert who["scopes"] == ["mcp", "mcp:admin"]
        assert str(who["client_id"]).startswith("client-")
    after = env.resource.counters()
    assert after.mcp_requests > before.mcp_requests
    assert after.tool_calls["echo"] == before.tool_calls.get("echo", 0) + 1


async def test_open_endpoint_serves_the_same_tools_without_auth(env: LoopbackOAuthEnvironment) -> None:
    before = env.resource.counters().open_requests
    async with (
        httpx2.AsyncClient(timeout=10) as http,
        streamable_http_client(env.open_mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == {"echo", "add", "sleep", "whoami", "needs_scope"}
        assert _text(await session.call_tool("echo", {"text": "open"})) == "open"
        who = (await session.call_tool("whoami", {})).structured_content
        assert who is not None and who["client_id"] is None
    assert env.resource.counters().open_requests > before


# ----------------------------------------------------------------------------- stdio server


async def test_stdio_server_serves_the_tools() -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_tether.testing.stdio_server"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert _text(await session.call_tool("echo", {"text": "pipe"})) == "pipe"
        assert float(_text(await session.call_tool("add", {"a": 1.5, "b": 1}))) == 2.5
        failed = await session.call_tool("sleep", {"ms": -1})
        assert failed.is_error


# ----------------------------------------------------------------------------- interoperability


async def test_sdk_oauth_provider_discovers_registers_consents_and_refreshes() -> None:
    """The mcp SDK's own OAuth client completes the whole flow against the simulated servers."""
    auth = SimulatedAuthorizationServer(auto_approve=False, access_token_lifetime=1.0)
    async with LoopbackOAuthEnvironment(auth) as environment:
        redirect: dict[str, str] = {}

        async def click_approve(url: str) -> None:
            async with httpx2.AsyncClient(timeout=10) as browser:
                page = await browser.get(url)
                request_id = page.text.split('name="request_id" value="')[1].split('"')[0]
                answer = await browser.post(
                    f"{environment.issuer}/authorize/decision", data={"request_id": request_id, "decision": "approve"}
                )
            redirect.update({k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()})

        async def callback() -> AuthorizationCodeResult:
            return AuthorizationCodeResult(code=redirect["code"], state=redirect["state"], iss=redirect["iss"])

        provider = OAuthClientProvider(
            environment.mcp_url,
            OAuthClientMetadata(
                redirect_uris=[AnyUrl(REDIRECT)],
                token_endpoint_auth_method="none",
                grant_types=["authorization_code", "refresh_token"],
            ),
            MemoryTokenStorage(),
            click_approve,
            callback,
        )
        async with (
            httpx2.AsyncClient(auth=provider, timeout=10) as http,
            streamable_http_client(environment.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert _text(await session.call_tool("echo", {"text": "first"})) == "first"
            await asyncio.sleep(1.1)  # the access token expires; the provider refreshes
            assert _text(await session.call_tool("echo", {"text": "second"})) == "second"
        counters = auth.counters()
        assert (counters.register, counters.decisions, counters.refreshes, counters.reuse_detected) == (1, 1, 1, 0)
        assert environment.resource.counters().unauthorized == 1
