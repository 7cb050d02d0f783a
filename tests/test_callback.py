"""The loopback callback server: binding, Host check, state, iss, escaping, single use, timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from mcp_tether.adapters.callback import CallbackStatus, LoopbackCallbackServer, loopback_redirect_port
from mcp_tether.statemachine.tokens import ClientRegistration

STATE = "s" * 43
ISSUER = "https://as.example"


@pytest.fixture
async def server() -> AsyncIterator[LoopbackCallbackServer]:
    async with LoopbackCallbackServer(
        server_name="notes <b>", expected_state=STATE, expected_issuer=ISSUER, issuer_required=True
    ) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=5) as client:
        yield client


async def _hit(http: httpx2.AsyncClient, server: LoopbackCallbackServer, **params: str) -> httpx2.Response:
    return await http.get(server.redirect_uri, params=params)


async def test_binds_loopback_only_on_an_ephemeral_port(server: LoopbackCallbackServer) -> None:
    assert server.redirect_uri == f"http://127.0.0.1:{server.port}/callback"
    assert server.port > 0
    assert server._server is not None
    assert {sock.getsockname()[0] for sock in server._server.sockets} == {"127.0.0.1"}


async def test_code_with_right_state_and_issuer(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    page = await _hit(http, server, code="c0de", state=STATE, iss=ISSUER)
    assert page.status_code == 200
    assert "Signed in" in page.text
    assert "no-store" in page.headers["cache-control"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    result = await server.wait(1)
    assert result.status is CallbackStatus.CODE
    assert result.code == "c0de"
    assert "c0de" not in repr(result)


async def test_forged_state_is_ignored_and_the_real_callback_still_wins(
    server: LoopbackCallbackServer, http: httpx2.AsyncClient
) -> None:
    forged = await _hit(http, server, code="attacker-code", state="guess", iss=ISSUER)
    missing = await _hit(http, server, code="attacker-code", iss=ISSUER)
    assert forged.status_code == missing.status_code == 400
    assert "does not match" in forged.text
    real = await _hit(http, server, code="real-code", state=STATE, iss=ISSUER)
    assert real.status_code == 200
    result = await server.wait(1)
    assert result.status is CallbackStatus.CODE
    assert result.code == "real-code"
    assert result.forged == 2


async def test_duplicate_state_parameters_do_not_match(
    server: LoopbackCallbackServer, http: httpx2.AsyncClient
) -> None:
    page = await http.get(f"{server.redirect_uri}?code=c&state={STATE}&state=other&iss={ISSUER}")
    assert page.status_code == 400
    assert (await server.wait(0.05)).status is CallbackStatus.TIMEOUT


async def test_second_hit_after_success_is_refused(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    await _hit(http, server, code="c0de", state=STATE, iss=ISSUER)
    again = await _hit(http, server, code="other", state=STATE, iss=ISSUER)
    assert again.status_code == 410
    assert (await server.wait(1)).code == "c0de"


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{0}", "127.0.0.1:1", "localhost.evil.example"])
async def test_foreign_host_header_is_refused(
    server: LoopbackCallbackServer, http: httpx2.AsyncClient, host: str
) -> None:
    page = await http.get(
        server.redirect_uri, params={"code": "c", "state": STATE, "iss": ISSUER}, headers={"Host": host}
    )
    assert page.status_code == 421
    assert (await server.wait(0.05)).status is CallbackStatus.TIMEOUT


async def test_localhost_host_header_is_accepted(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    page = await http.get(
        f"http://localhost:{server.port}/callback", params={"code": "c", "state": STATE, "iss": ISSUER}
    )
    assert page.status_code == 200


async def test_other_paths_and_methods(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    assert (await http.get(f"http://127.0.0.1:{server.port}/favicon.ico")).status_code == 404
    assert (await http.post(server.redirect_uri, params={"code": "c", "state": STATE})).status_code == 405
    assert (await server.wait(0.05)).status is CallbackStatus.TIMEOUT


async def test_values_are_html_escaped(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    page = await _hit(
        http,
        server,
        state=STATE,
        iss=ISSUER,
        error="<img src=x onerror=alert(1)>",
        error_description="<script>x",
    )
    assert "<script>" not in page.text
    assert "<img" not in page.text
    assert "&lt;script&gt;x" in page.text
    assert "notes &lt;b&gt;" in page.text
    result = await server.wait(1)
    assert result.status is CallbackStatus.ERROR
    assert result.error_description == "<script>x"


async def test_access_denied(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    page = await _hit(http, server, state=STATE, iss=ISSUER, error="access_denied")
    assert "Access denied" in page.text
    result = await server.wait(1)
    assert result.status is CallbackStatus.ERROR
    assert result.error == "access_denied"


async def test_forged_error_does_not_end_the_flow(server: LoopbackCallbackServer, http: httpx2.AsyncClient) -> None:
    await _hit(http, server, state="guess", error="access_denied")
    result = await server.wait(0.05)
    assert result.status is CallbackStatus.TIMEOUT
    assert result.forged == 1


@pytest.mark.parametrize("iss", ["https://evil.example", f"{ISSUER}/", "https://AS.example", None])
async def test_issuer_mismatch(server: LoopbackCallbackServer, http: httpx2.AsyncClient, iss: str | None) -> None:
    params = {"code": "c0de", "state": STATE} | ({"iss": iss} if iss is not None else {})
    page = await _hit(http, server, **params)
    assert page.status_code == 400
    result = await server.wait(1)
    assert result.status is CallbackStatus.ISSUER_MISMATCH
    assert result.code is None


async def test_absent_iss_is_fine_when_not_advertised(http: httpx2.AsyncClient) -> None:
    async with LoopbackCallbackServer(
        server_name="notes", expected_state=STATE, expected_issuer=ISSUER, issuer_required=False
    ) as server:
        await _hit(http, server, code="c0de", state=STATE)
        assert (await server.wait(1)).status is CallbackStatus.CODE


async def test_timeout_then_late_callback_gets_the_expired_page(
    server: LoopbackCallbackServer, http: httpx2.AsyncClient
) -> None:
    assert (await server.wait(0.05)).status is CallbackStatus.TIMEOUT
    late = await _hit(http, server, code="c0de", state=STATE, iss=ISSUER)
    assert late.status_code == 410
    assert "expired" in late.text


async def test_oversized_or_garbage_requests_settle_nothing(server: LoopbackCallbackServer) -> None:
    for payload in (b"GET /callback?" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", b"\xff\xfe garbage\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert (await server.wait(0.05)).status is CallbackStatus.TIMEOUT


async def test_port_is_free_after_exit() -> None:
    async with LoopbackCallbackServer(
        server_name="n", expected_state=STATE, expected_issuer=ISSUER, issuer_required=False
    ) as first:
        port = first.port
    async with LoopbackCallbackServer(
        server_name="n", expected_state=STATE, expected_issuer=ISSUER, issuer_required=False, port=port
    ) as second:
        assert second.port == port


def test_loopback_redirect_port() -> None:
    assert loopback_redirect_port(None) is None
    client = ClientRegistration(
        client_id="c", redirect_uris=("https://app.example/cb", "http://127.0.0.1:5173/callback")
    )
    assert loopback_redirect_port(client) == 5173
    assert (
        loopback_redirect_port(ClientRegistration(client_id="c", redirect_uris=("http://127.0.0.1/callback",))) is None
    )
