"""Browser authorization through the real loopback callback server, against a respx authorization server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
import respx
from oauth_fakes import (
    ISSUER,
    SERVER_URL,
    WWW_AUTHENTICATE,
    Browser,
    FakeAuthorizationServer,
    as_document,
    assert_secrets_only_sent_to,
    form_of,
    handler,
)

from mcp_tether.adapters.authorization import (
    AuthorizationDenied,
    AuthorizationTimeout,
    CallbackPortUnavailable,
    IssuerMismatch,
    StateMismatch,
    TokenExchangeFailed,
    authorize_in_browser,
)
from mcp_tether.adapters.oauth import InsecureServerError, OAuthClient, OAuthSettings
from mcp_tether.statemachine.failures import FailureClass
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock


@pytest.fixture
def server(router: respx.Router) -> FakeAuthorizationServer:
    return FakeAuthorizationServer(router)


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthClient]:
    async with httpx2.AsyncClient() as http:
        yield OAuthClient(http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(), clock=lambda: 5.0)


async def _authorize(oauth: OAuthClient, browser: Callable[[str], bool], wait: float = 10.0) -> TokenSet:
    discovery = await oauth.discover(WWW_AUTHENTICATE)

    async def client_for(redirect_uri: str) -> ClientRegistration:
        return await oauth.ensure_client(discovery, None, redirect_uri, scope="read")

    return await authorize_in_browser(oauth, discovery, client_for, scope="read", open_url=browser, timeout=wait)


async def test_happy_path(oauth: OAuthClient, server: FakeAuthorizationServer, router: respx.Router) -> None:
    browser = Browser()
    tokens = await _authorize(oauth, browser)
    assert tokens.scope == "read"
    assert tokens.issued_at == 5.0
    assert len(browser.opened) == 1
    assert browser.callback_pages[0].status_code == 200
    params = {key: values[0] for key, values in parse_qs(urlsplit(browser.opened[0]).query).items()}
    assert params["code_challenge_method"] == "S256"
    assert params["resource"] == SERVER_URL
    assert params["scope"] == "read"
    assert len(params["state"]) >= 43  # 256 bits, url-safe base64
    assert params["redirect_uri"].startswith("http://127.0.0.1:")
    exchange = form_of(server.token.calls.last.request)
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["resource"] == SERVER_URL
    assert exchange["redirect_uri"] == params["redirect_uri"]
    assert len(exchange["code_verifier"]) >= 43
    secrets = [exchange["code"], exchange["code_verifier"], tokens.access_token]
    assert_secrets_only_sent_to(router.calls, secrets)


async def test_every_authorization_has_a_fresh_state(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    browser = Browser()
    await _authorize(oauth, browser)
    await _authorize(oauth, browser)
    states = [parse_qs(urlsplit(url).query)["state"][0] for url in browser.opened]
    assert states[0] != states[1]


@pytest.mark.parametrize("iss", ["https://evil.example", f"{ISSUER}/", None])
async def test_wrong_or_missing_iss_is_refused_before_any_exchange(
    oauth: OAuthClient, server: FakeAuthorizationServer, router: respx.Router, iss: str | None
) -> None:
    server.iss = iss
    browser = Browser()
    with pytest.raises(IssuerMismatch, match="notes"):
        await _authorize(oauth, browser)
    assert server.token.call_count == 0
    assert_secrets_only_sent_to(router.calls, list(server.codes), allowed=None)


async def test_forged_state_is_never_redeemed(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    class ForgingBrowser(Browser):
        def __call__(self, url: str) -> bool:
            self.opened.append(url)
            with httpx2.Client(follow_redirects=False) as client:
                location = client.get(url).headers["location"]
                parts = urlsplit(location)
                params = {key: values[0] for key, values in parse_qs(parts.query).items()}
                params["state"] = "forged-state"
                self.callback_pages.append(client.get(f"{location.split('?')[0]}?{urlencode(params)}"))
            return True

    browser = ForgingBrowser()
    with pytest.raises(StateMismatch, match="state"):
        await _authorize(oauth, browser, wait=0.5)
    assert server.token.call_count == 0
    assert browser.callback_pages[0].status_code == 400


async def test_access_denied(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    def deny(request: httpx2.Request) -> httpx2.Response:
        params = {key: values[0] for key, values in parse_qs(urlsplit(str(request.url)).query).items()}
        answer = urlencode({"error": "access_denied", "state": params["state"], "iss": ISSUER})
        return httpx2.Response(302, headers={"Location": f"{params['redirect_uri']}?{answer}"})

    server.authorize.side_effect = handler(deny)
    with pytest.raises(AuthorizationDenied, match="access_denied") as caught:
        await _authorize(oauth, Browser())
    assert caught.value.error == "access_denied"
    assert server.token.call_count == 0


async def test_nobody_completes_it(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    browser = Browser(follow=False)
    with pytest.raises(AuthorizationTimeout, match="not completed"):
        await _authorize(oauth, browser, wait=0.2)
    assert len(browser.opened) == 1


async def test_transient_code_exchange_failure(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    server.token.side_effect = handler(lambda request: httpx2.Response(503, text="<html>busy</html>"))
    browser = Browser()
    with pytest.raises(TokenExchangeFailed) as caught:
        await _authorize(oauth, browser)
    assert caught.value.failure.failure_class is FailureClass.TRANSIENT
    assert len(browser.opened) == 1


async def test_without_a_browser_the_url_is_printed_and_the_flow_waits(
    oauth: OAuthClient, server: FakeAuthorizationServer, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Browser()

    def no_browser(url: str) -> bool:
        person(url)  # someone opens the printed URL on another screen
        return False

    tokens = await _authorize(oauth, no_browser)
    assert tokens.access_token
    assert person.opened[0] in capsys.readouterr().err


async def test_on_url_is_told_the_url(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    told: list[str] = []
    browser = Browser()
    discovery = await oauth.discover(WWW_AUTHENTICATE)

    async def client_for(redirect_uri: str) -> ClientRegistration:
        return await oauth.ensure_client(discovery, None, redirect_uri)

    await authorize_in_browser(oauth, discovery, client_for, open_url=browser, on_url=told.append, timeout=5)
    assert told == browser.opened


async def test_unsafe_authorization_endpoint_opens_nothing(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer
) -> None:
    discovery = Discovery(issuer=ISSUER, token_endpoint=f"{ISSUER}/token", authorization_endpoint="file:///etc/passwd")
    browser = Browser()
    client = ClientRegistration(client_id="c", issuer=ISSUER)
    with pytest.raises(InsecureServerError):
        await authorize_in_browser(oauth, discovery, client, open_url=browser, timeout=1)
    assert browser.opened == []
    assert not router.calls


async def test_pkce_refusal_happens_before_any_browser(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    server.metadata.respond(200, json=as_document(code_challenge_methods_supported=["plain"]))
    browser = Browser()
    with pytest.raises(InsecureServerError):
        await _authorize(oauth, browser)
    assert browser.opened == []
    assert server.register.call_count == 0


async def test_busy_configured_port_is_a_clear_error(server: FakeAuthorizationServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with httpx2.AsyncClient() as http:
            oauth = OAuthClient(
                http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(callback_port=port),
                clock=float,
            )  # fmt: skip
            with pytest.raises(CallbackPortUnavailable, match="callback_port"):
                await _authorize(oauth, Browser())


async def test_registered_port_is_reused_and_busy_one_falls_back(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    discovery = await oauth.discover(WWW_AUTHENTICATE)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    registered = await oauth.ensure_client(discovery, None, f"http://127.0.0.1:{free_port}/callback", scope="read")
    browser = Browser()
    await authorize_in_browser(oauth, discovery, registered, scope="read", open_url=browser, timeout=5)
    assert f"127.0.0.1%3A{free_port}" in browser.opened[0]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        seen: list[str] = []

        async def reregister(uri: str) -> ClientRegistration:
            seen.append(uri)
            return await oauth.ensure_client(discovery, registered, uri, scope="read")

        await authorize_in_browser(
            oauth, discovery, reregister, scope="read", open_url=browser, timeout=5, preferred_port=free_port
        )
    assert seen
    assert f":{free_port}/" not in seen[0]
