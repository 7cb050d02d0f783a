"""The CDP driver against real headless Chromium: a local page, a late button, a click, a navigation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from cdp import BrowserError, Chromium, chromium_for_tests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

pytestmark = pytest.mark.browser

# The button appears only after a delay, so the driver has to wait for it.
CONSENT_PAGE = """<!doctype html>
<html><head><title>Consent</title></head><body>
<h1>Allow access?</h1>
<form method="post" action="/decide" id="decision"></form>
<script>
  setTimeout(() => {
    const button = document.createElement("button");
    button.id = "approve"; button.name = "choice"; button.value = "approve";
    button.textContent = "Approve";
    document.getElementById("decision").appendChild(button);
  }, 300);
</script>
</body></html>"""


async def consent(request: Request) -> HTMLResponse:
    return HTMLResponse(CONSENT_PAGE)


async def decide(request: Request) -> RedirectResponse:
    form = await request.form()
    return RedirectResponse(f"/done?choice={form.get('choice')}", status_code=303)


async def done(request: Request) -> HTMLResponse:
    return HTMLResponse(f"<p>Decision recorded: {request.query_params.get('choice')}</p>")


@contextlib.asynccontextmanager
async def serve_consent_site() -> AsyncIterator[str]:
    app = Starlette(routes=[
        Route("/", consent), Route("/decide", decide, methods=["POST"]), Route("/done", done),
    ])  # fmt: skip
    listener = socket.create_server(("127.0.0.1", 0))  # listening before uvicorn starts: no race
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        listener.close()


@pytest.fixture
def chromium() -> str:
    return chromium_for_tests()


@pytest.mark.timeout(60)
async def test_click_a_late_button_and_read_the_page_after_navigation(chromium: str) -> None:
    async with serve_consent_site() as origin, Chromium.launch(chromium) as browser:
        page = await browser.new_page()
        await page.goto(f"{origin}/")
        assert "Allow access?" in await page.text()

        await page.click("button#approve")
        url = await page.wait_for_url(lambda url: url.startswith(f"{origin}/done"))

        assert url == f"{origin}/done?choice=approve"
        assert await page.text() == "Decision recorded: approve"


@pytest.mark.timeout(60)
async def test_waiting_for_a_missing_element_fails_with_the_page_address(chromium: str) -> None:
    async with serve_consent_site() as origin, Chromium.launch(chromium) as browser:
        page = await browser.new_page()
        await page.goto(f"{origin}/done?choice=none")

        with pytest.raises(BrowserError, match=r"button#approve.*/done\?choice=none"):
            await page.with_wait(0.5).wait_for_selector("button#approve")
