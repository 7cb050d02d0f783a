"""Browser authorization with a real headless Chromium as the browser.

The library's own browser adapter (``open_in_browser``, through ``webbrowser`` and
``$BROWSER``) opens the authorization URL in Chromium; the simulated
authorization server shows its consent page; the test clicks Approve, and the
redirect reaches the library's loopback callback. A second sign-in answered
with a forged ``state`` shows the failure page and obtains nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
import webbrowser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cdp import Chromium, chromium_for_tests

from mcp_tether.adapters.authorization import StateMismatch, authorize_in_browser
from mcp_tether.adapters.oauth import OAuthClient, OAuthSettings
from mcp_tether.statemachine.tokens import ClientRegistration
from mcp_tether.testing.authserver import SimulatedAuthorizationServer
from mcp_tether.testing.serve import LoopbackOAuthEnvironment

pytestmark = pytest.mark.browser

OPEN_TAB = Path(__file__).parent / "open_tab.py"


def redirect_uri_of(authorization_url: str) -> str:
    return parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]


async def test_real_chromium_approves_and_a_forged_state_obtains_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    executable = chromium_for_tests()
    auth = SimulatedAuthorizationServer(auto_approve=False)
    async with LoopbackOAuthEnvironment(auth) as env, Chromium.launch(executable) as browser:
        monkeypatch.setenv("BROWSER", f"{sys.executable} {OPEN_TAB} %s")
        monkeypatch.setenv("MCP_TETHER_DEVTOOLS_PORT", str(browser.devtools_port))
        monkeypatch.setattr(webbrowser, "_tryorder", None)  # webbrowser reads $BROWSER on its first use
        async with httpx2.AsyncClient() as http:
            oauth = OAuthClient(
                http, server_name="notion", server_url=env.mcp_url, settings=OAuthSettings(), clock=time.time
            )
            discovery = await oauth.discover(None)

            async def client_for(redirect_uri: str | None) -> ClientRegistration:
                return await oauth.ensure_client(discovery, None, redirect_uri)

            def authorization_page(url: str) -> bool:
                return url.startswith(f"{env.issuer}/authorize?")

            # 1. A person approves on the consent page.
            flow = asyncio.create_task(authorize_in_browser(oauth, discovery, client_for, timeout=30))
            page = await browser.attach(authorization_page)
            callback = redirect_uri_of(await page.url())
            await page.wait_for_selector("#approve")
            await page.click("#approve")
            await page.wait_for_url(lambda url: url.startswith(callback))
            assert "Signed in" in await page.text()
            tokens = await asyncio.wait_for(flow, timeout=30)
            info = auth.introspect(tokens.access_token)
            assert info is not None
            assert info.resource == env.mcp_url

            # 2. A forged callback (wrong state) reaches the loopback server instead.
            token_requests = auth.counters().token
            flow = asyncio.create_task(authorize_in_browser(oauth, discovery, client_for, timeout=3))
            page = await browser.attach(authorization_page)
            callback = redirect_uri_of(await page.url())
            await page.goto(f"{callback}?code=stolen-code&state=forged-state")
            assert "does not match" in await page.text()
            with pytest.raises(StateMismatch):
                await asyncio.wait_for(flow, timeout=30)
            assert auth.counters().token == token_requests
