"""A minimal Chrome DevTools Protocol driver for real-browser tests with headless Chromium.

It launches the system's Chromium (Debian's `chromium`) headless with a fresh profile, connects to
its DevTools websocket, and drives one page: open a URL, wait for a selector, click an element with
real mouse events, wait for a navigation, read the page's text. Everything is bounded in time and
stays on loopback; no browser is downloaded.

    async with Chromium.launch() as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8000/consent")
        await page.click("button#approve")
        await page.wait_for_url(lambda url: url.startswith("http://127.0.0.1:9000/callback"))
        text = await page.text()

Tests get the executable from `chromium_for_tests()`, which skips when Chromium is absent, or
fails when `MCP_TETHER_REQUIRE_BROWSER=1` says it must be there (as CI sets after installing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "CHROMIUM_FLAGS",
    "REQUIRE_BROWSER_ENV",
    "BrowserError",
    "Chromium",
    "Page",
    "chromium_for_tests",
    "find_chromium",
]

# Headless, and quiet on a machine whose only network is loopback: without the background-network
# flags Chromium keeps dialling Google's services and every attempt is refused.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
REQUIRE_BROWSER_ENV = "MCP_TETHER_REQUIRE_BROWSER"
# Bounds on every wait: Chromium's start, one DevTools command, and a page's default wait.
STARTUP_SECONDS = 20.0
COMMAND_SECONDS = 10.0
DEFAULT_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.05
_NOT_INSTALLED = "Chromium is not installed (run .ci/install-chromium.sh or apt-get install chromium)"


class BrowserError(Exception):
    """Chromium could not be started, or a page did not do what a test waited for."""


def find_chromium() -> str | None:
    """Locate a Chromium executable.

    Returns:
        `$CHROMIUM` if set and executable, else `chromium` or `chromium-browser` on PATH, else None.
    """
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def chromium_for_tests() -> str:
    """Return the Chromium executable for a test, or skip the test when there is none.

    Returns:
        The executable's path.

    Raises:
        pytest.skip.Exception: Chromium is absent (install Debian's `chromium`, e.g. with
            `.ci/install-chromium.sh`).
        pytest.fail.Exception: Chromium is absent although `MCP_TETHER_REQUIRE_BROWSER=1`.
    """
    found = find_chromium()
    if found is not None:
        return found
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{_NOT_INSTALLED}, and {REQUIRE_BROWSER_ENV}=1 requires it")
    pytest.skip(_NOT_INSTALLED)


class _Connection:
    """One DevTools websocket: numbered commands answered by id, events handed to waiters."""

    def __init__(self, websocket: ClientConnection) -> None:
        self._websocket = websocket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._websocket:
                message = json.loads(raw)
                future = self._pending.pop(message.get("id", 0), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError("the DevTools connection closed"))
            self._pending.clear()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        """Send a command and return its result, raising BrowserError on a protocol error or no answer."""
        if self._reader.done():
            raise BrowserError(f"cannot send {method}: the DevTools connection is closed")
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._websocket.send(json.dumps(message))
        try:
            reply = await asyncio.wait_for(future, COMMAND_SECONDS)
        except TimeoutError as exc:
            raise BrowserError(f"Chromium did not answer {method} within {COMMAND_SECONDS} s") from exc
        finally:
            self._pending.pop(command_id, None)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error'].get('message', reply['error'])}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def close(self) -> None:
        await self._websocket.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@attrs.define(eq=False)
class Page:
    """One browser tab, driven through its own DevTools session.

    Every wait of its methods is bounded by `wait_seconds`; `with_wait()` gives a handle on the same
    tab with another bound.
    """

    _connection: _Connection
    _session_id: str
    wait_seconds: float = DEFAULT_WAIT_SECONDS

    def with_wait(self, seconds: float) -> Page:
        """Return a handle on the same tab whose waits are bounded by `seconds`."""
        return attrs.evolve(self, wait_seconds=seconds)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its value (JSON-serialisable).

        Args:
            expression: The expression; a promise is awaited (within the DevTools command bound).

        Returns:
            The expression's value.

        Raises:
            BrowserError: The expression threw, or the page did not answer in time.
        """
        result = await self._connection.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session_id=self._session_id,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in the page: {description}")
        return result.get("result", {}).get("value")

    async def _poll(self, expression: str, *, what: str) -> Any:
        """Evaluate until the value is truthy, within `wait_seconds`.

        An error while a navigation swaps documents (no execution context) counts as not yet.
        """
        last_error = ""
        try:
            async with asyncio.timeout(self.wait_seconds):
                while True:
                    try:
                        value = await self.evaluate(expression)
                    except BrowserError as exc:
                        value, last_error = None, f" Last error: {exc}"
                    if value:
                        return value
                    await asyncio.sleep(_POLL_SECONDS)
        except TimeoutError:
            seen = await self._where()
            raise BrowserError(
                f"timed out after {self.wait_seconds} s waiting for {what}{seen}.{last_error}"
            ) from None

    async def _where(self) -> str:
        try:
            return f"; the page is at {await self.evaluate('location.href')}"
        except BrowserError:
            return ""

    async def goto(self, url: str) -> None:
        """Navigate to a URL and wait until that document has loaded.

        Args:
            url: The address to open.

        Raises:
            BrowserError: The navigation failed or did not finish in time.
        """
        result = await self._connection.send("Page.navigate", {"url": url}, session_id=self._session_id)
        if result.get("errorText"):
            raise BrowserError(f"Chromium could not open {url}: {result['errorText']}")
        await self._poll(
            "document.readyState === 'complete' && location.href !== 'about:blank'", what=f"{url} to load"
        )

    async def wait_for_selector(self, selector: str) -> None:
        """Wait until an element matching a CSS selector is in the document.

        Args:
            selector: The CSS selector.

        Raises:
            BrowserError: No such element appeared in time.
        """
        await self._poll(
            f"document.querySelector({json.dumps(selector)}) !== null",
            what=f"an element matching {selector!r}",
        )

    async def click(self, selector: str) -> None:
        """Click the centre of the first element matching a selector with real mouse events.

        Waits for the element, scrolls it into view, then presses and releases the left button at
        its centre, as a user would (the page sees trusted events, and a form button submits).

        Args:
            selector: The CSS selector.

        Raises:
            BrowserError: The element did not appear, or has no visible box.
        """
        await self.wait_for_selector(selector)
        box = await self.evaluate(
            f"""(() => {{
                const element = document.querySelector({json.dumps(selector)});
                element.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = element.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height}};
            }})()"""
        )
        if not box or box["w"] <= 0 or box["h"] <= 0:
            raise BrowserError(f"the element matching {selector!r} has no visible box to click")
        for event in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": event, "x": box["x"], "y": box["y"]}
            if event != "mouseMoved":
                params |= {"button": "left", "clickCount": 1}
            await self._connection.send("Input.dispatchMouseEvent", params, session_id=self._session_id)

    async def url(self) -> str:
        """Return the address of the current document."""
        return str(await self.evaluate("location.href"))

    async def wait_for_url(self, matches: Callable[[str], bool]) -> str:
        """Wait until the current document's address satisfies a predicate and it has loaded.

        Args:
            matches: Predicate on the address, e.g. `lambda url: url.startswith(callback)`.

        Returns:
            The address.

        Raises:
            BrowserError: No matching document loaded within `wait_seconds`.
        """
        seen = ""
        try:
            async with asyncio.timeout(self.wait_seconds):
                while True:
                    try:
                        url, ready = await self.evaluate("[location.href, document.readyState]")
                    except BrowserError:
                        url, ready = seen, ""
                    seen = url
                    if ready == "complete" and matches(url):
                        return str(url)
                    await asyncio.sleep(_POLL_SECONDS)
        except TimeoutError:
            raise BrowserError(
                f"timed out after {self.wait_seconds} s waiting for a matching address "
                f"(last seen: {seen or 'none'})"
            ) from None

    async def text(self) -> str:
        """Return the visible text of the current document (`document.body.innerText`)."""
        return str(await self.evaluate("document.body ? document.body.innerText : ''"))


@attrs.define(eq=False)
class Chromium:
    """A running headless Chromium with its DevTools connection."""

    _connection: _Connection
    #: The DevTools port (its HTTP ``/json/new`` opens a tab from another process).
    devtools_port: int

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, executable: str | None = None) -> AsyncIterator[Chromium]:
        """Start headless Chromium with a fresh profile and connect to it; stop it on exit.

        Args:
            executable: The Chromium binary (default: `find_chromium()`).

        Yields:
            The running browser.

        Raises:
            BrowserError: Chromium is absent, exited, or did not open DevTools within STARTUP_SECONDS.
        """
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError(_NOT_INSTALLED)
        with tempfile.TemporaryDirectory(prefix="mcp-tether-chromium-") as scratch:
            profile = Path(scratch) / "profile"
            log_path = Path(scratch) / "chromium.log"
            with log_path.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                )  # fmt: skip
            try:
                try:
                    async with asyncio.timeout(STARTUP_SECONDS):
                        endpoint = await _devtools_endpoint(profile, process, log_path)
                        websocket = await connect(endpoint, max_size=None, proxy=None)
                except TimeoutError:
                    raise BrowserError(
                        f"Chromium did not open its DevTools port within {STARTUP_SECONDS} s "
                        f"(no {profile / 'DevToolsActivePort'})"
                    ) from None
                browser = cls(_Connection(websocket), int(endpoint.split(":")[2].split("/")[0]))
                try:
                    yield browser
                finally:
                    await browser._close()
            finally:
                await _stop(process)

    async def new_page(self) -> Page:
        """Open a new blank tab and attach to it.

        Returns:
            The page.
        """
        target = await self._connection.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        return Page(self._connection, attached["sessionId"])

    async def attach(self, matches: Callable[[str], bool], *, timeout: float = 10.0) -> Page:  # noqa: ASYNC109
        """Attach to a tab something else opened (e.g. a ``$BROWSER`` command) once its URL ``matches``.

        Args:
            matches: tells the wanted tab by its URL.
            timeout: seconds to wait for such a tab.

        Returns:
            The page.

        Raises:
            BrowserError: no matching tab appeared within ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    targets = await self._connection.send("Target.getTargets")
                    for target in targets["targetInfos"]:
                        if target["type"] == "page" and matches(target["url"]):
                            attached = await self._connection.send(
                                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                            )
                            return Page(self._connection, attached["sessionId"])
                    await asyncio.sleep(_POLL_SECONDS)
        except TimeoutError:
            raise BrowserError(f"no matching tab was opened within {timeout:g} s") from None

    async def _close(self) -> None:
        with contextlib.suppress(BrowserError, ConnectionClosed):
            await self._connection.send("Browser.close")
        await self._connection.close()


async def _devtools_endpoint(profile: Path, process: asyncio.subprocess.Process, log_path: Path) -> str:
    """Wait for the browser websocket address Chromium writes to <profile>/DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    while True:
        if process.returncode is not None:
            tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
            raise BrowserError(f"Chromium exited with {process.returncode} before opening DevTools:\n{tail}")
        with contextlib.suppress(FileNotFoundError):
            lines = (await asyncio.to_thread(port_file.read_text)).split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
        await asyncio.sleep(_POLL_SECONDS)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Wait briefly for Chromium to exit after Browser.close, then kill it."""
    if process.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5.0)
    if process.returncode is None:
        process.kill()
        await asyncio.wait_for(process.wait(), 5.0)
