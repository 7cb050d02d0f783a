"""Discovery: RFC 9728 then RFC 8414, issuer and resource checks, PKCE, unsafe URLs, redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
import respx
from oauth_fakes import (
    ISSUER,
    PRM_URL,
    SERVER_URL,
    TOKEN_URL,
    WWW_AUTHENTICATE,
    FakeAuthorizationServer,
    as_document,
    prm_document,
)

from mcp_tether.adapters.oauth import (
    DiscoveryError,
    InsecureServerError,
    OAuthClient,
    OAuthSettings,
    select_scope,
    step_up_scope,
)
from mcp_tether.statemachine.failures import FailureClass


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def server(router: respx.Router) -> FakeAuthorizationServer:
    return FakeAuthorizationServer(router)


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthClient]:
    async with httpx2.AsyncClient() as http:
        yield OAuthClient(
            http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(), clock=lambda: 1000.0
        )


async def test_discovery_follows_www_authenticate_then_issuer_metadata(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    discovery = await oauth.discover(WWW_AUTHENTICATE)
    assert discovery.issuer == ISSUER
    assert discovery.resource == SERVER_URL
    assert discovery.resource_metadata_url == PRM_URL
    assert discovery.token_endpoint == TOKEN_URL
    assert discovery.registration_endpoint == f"{ISSUER}/register"
    assert discovery.revocation_endpoint == f"{ISSUER}/revoke"
    assert discovery.scopes_supported == ("read", "write")
    assert discovery.iss_parameter_supported
    assert server.prm.call_count == 1


async def test_discovery_without_header_uses_path_aware_well_known(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    discovery = await oauth.discover(None)
    assert discovery.resource_metadata_url == PRM_URL


async def test_discovery_falls_back_to_openid_configuration(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(404)
    router.get(f"{ISSUER}/.well-known/openid-configuration").respond(200, json=as_document())
    assert (await oauth.discover(None)).issuer == ISSUER


async def test_legacy_server_without_metadata_gets_default_endpoints(oauth: OAuthClient, router: respx.Router) -> None:
    router.get(url__regex=r"https://mcp\.example/\.well-known/.*").respond(404)
    discovery = await oauth.discover(None)
    assert discovery.issuer == "https://mcp.example"
    assert discovery.token_endpoint == "https://mcp.example/token"
    assert discovery.resource == SERVER_URL


@pytest.mark.parametrize("methods", [None, [], ["plain"]])
async def test_pkce_without_s256_is_refused(
    oauth: OAuthClient, server: FakeAuthorizationServer, methods: list[str] | None
) -> None:
    server.metadata.respond(200, json=as_document(code_challenge_methods_supported=methods))
    with pytest.raises(InsecureServerError, match="S256") as caught:
        await oauth.discover(WWW_AUTHENTICATE)
    assert caught.value.server_name == "notes"
    assert server.register.call_count == server.authorize.call_count == server.token.call_count == 0


@pytest.mark.parametrize("issuer", ["https://evil.example", f"{ISSUER}/tenant", "https://AS.example"])
async def test_wrong_issuer_in_metadata_is_refused(
    oauth: OAuthClient, server: FakeAuthorizationServer, issuer: str
) -> None:
    server.metadata.respond(200, json=as_document(issuer=issuer))
    with pytest.raises(InsecureServerError, match="issuer"):
        await oauth.discover(WWW_AUTHENTICATE)


async def test_root_issuer_with_trailing_slash_is_the_same_server(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(200, json=as_document(issuer=f"{ISSUER}/"))
    assert (await oauth.discover(WWW_AUTHENTICATE)).issuer == f"{ISSUER}/"


async def test_resource_that_does_not_cover_the_server_is_refused(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    server.prm.respond(200, json=prm_document(resource="https://other.example/mcp"))
    with pytest.raises(InsecureServerError, match="resource"):
        await oauth.discover(WWW_AUTHENTICATE)
    assert server.metadata.call_count == 0


@pytest.mark.parametrize(
    "location",
    [
        "http://as.example",  # plain http to a public host
        "https://169.254.169.254/latest",  # cloud metadata
        "https://0x7f000001/",  # loopback in hex
        "https://[::ffff:10.0.0.1]/",  # IPv4-mapped private
        "https://user:pw@as.example/",  # credentials in the URL
    ],
)
async def test_authorization_server_urls_that_point_inward_are_not_fetched(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer, location: str
) -> None:
    server.prm.respond(200, json=prm_document(authorization_servers=[location]))
    with pytest.raises(InsecureServerError):
        await oauth.discover(WWW_AUTHENTICATE)
    assert [str(call.request.url) for call in router.calls] == [PRM_URL]


async def test_resource_metadata_hint_pointing_inward_is_not_fetched(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer
) -> None:
    with pytest.raises(InsecureServerError):
        await oauth.discover('Bearer resource_metadata="https://169.254.169.254/prm"')
    assert not router.calls


async def test_endpoint_on_plain_http_is_refused(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    server.metadata.respond(200, json=as_document(token_endpoint="http://as.example/token"))
    with pytest.raises(InsecureServerError, match="token endpoint"):
        await oauth.discover(WWW_AUTHENTICATE)


async def test_authorization_endpoint_unsafe_for_a_browser_is_refused(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(200, json=as_document(authorization_endpoint="https://as.example/a'$(id)"))
    with pytest.raises(InsecureServerError, match="browser"):
        await oauth.discover(WWW_AUTHENTICATE)


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_during_discovery_are_transient_and_never_fall_back(
    oauth: OAuthClient, router: respx.Router, status: int
) -> None:
    router.get(url__regex=r"https://mcp\.example/\.well-known/.*").respond(status)
    with pytest.raises(DiscoveryError) as caught:
        await oauth.discover(None)
    assert caught.value.failure_class is FailureClass.TRANSIENT
    assert all("oauth-protected-resource" in str(call.request.url) for call in router.calls)


async def test_timeout_during_discovery_is_transient(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    server.metadata.side_effect = httpx2.ReadTimeout("slow")
    with pytest.raises(DiscoveryError, match="notes") as caught:
        await oauth.discover(WWW_AUTHENTICATE)
    assert caught.value.failure_class is FailureClass.TRANSIENT


async def test_named_authorization_server_without_metadata_is_final(
    oauth: OAuthClient, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(404)
    with pytest.raises(DiscoveryError) as caught:
        await oauth.discover(WWW_AUTHENTICATE)
    assert caught.value.failure_class is FailureClass.FINAL


async def test_same_origin_redirect_is_followed(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(307, headers={"Location": "/moved/metadata"})
    router.get(f"{ISSUER}/moved/metadata").respond(200, json=as_document())
    assert (await oauth.discover(WWW_AUTHENTICATE)).issuer == ISSUER


async def test_cross_origin_redirect_is_not_followed(
    oauth: OAuthClient, router: respx.Router, server: FakeAuthorizationServer
) -> None:
    server.metadata.respond(307, headers={"Location": "https://evil.example/metadata"})
    elsewhere = router.get("https://evil.example/metadata").respond(200, json=as_document())
    with pytest.raises(DiscoveryError):
        await oauth.discover(WWW_AUTHENTICATE)
    assert elsewhere.call_count == 0


async def test_client_level_auth_is_never_sent_to_the_authorization_server(
    router: respx.Router, server: FakeAuthorizationServer
) -> None:
    async with httpx2.AsyncClient(headers={}, auth=("mcp-user", "mcp-password")) as http:
        oauth = OAuthClient(http, server_name="notes", server_url=SERVER_URL, settings=OAuthSettings(), clock=float)
        await oauth.discover(WWW_AUTHENTICATE)
    assert all("authorization" not in call.request.headers for call in router.calls)


async def test_oversized_metadata_is_refused(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    server.metadata.respond(200, content=b" " * (2 << 20))
    with pytest.raises(DiscoveryError) as caught:
        await oauth.discover(WWW_AUTHENTICATE)
    assert caught.value.failure_class is FailureClass.TRANSIENT


async def test_scope_selection_order(oauth: OAuthClient, server: FakeAuthorizationServer) -> None:
    discovery = await oauth.discover(WWW_AUTHENTICATE)
    assert select_scope(WWW_AUTHENTICATE, discovery) == "read offline_access"
    assert select_scope(None, discovery) == "read write offline_access"
    assert select_scope(None, discovery, configured="admin") == "admin offline_access"
    bare = discovery.__class__(issuer=ISSUER, token_endpoint=TOKEN_URL)
    assert select_scope(None, bare) is None


def test_step_up_scope_is_the_ordered_union() -> None:
    assert step_up_scope("read", "read profile", "write read") == "read profile write"
    assert step_up_scope(None, None, "write") == "write"
    assert step_up_scope(None, None, None) is None
