"""``mcp-tether demo``: one OAuth-protected server through its whole lifecycle, on loopback.

Everything runs in this process on 127.0.0.1 and in one temporary directory:
a simulated authorization server and an MCP resource server
(:class:`~mcp_tether.testing.serve.LoopbackOAuthEnvironment`), a configuration
file naming the resource server as a lazy server, and the token directory.
The clock is the real one plus an offset (:class:`~mcp_tether.testing.clock.OffsetClock`),
so the demo can jump into the refresh window instead of waiting for it.

The steps: a lazy pool; a first tool call (connecting, browser authorization
by a headless browser, clearly labelled, connected); the clock moved into the
refresh window (expiring, a background refresh made slow on purpose while
calls continue); a restart that reuses the stored tokens with no browser; the
replay of the token log. Each state change is printed as it happens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mcp_tether.cli import EXIT_FAILED, EXIT_OK, Console
from mcp_tether.replay import build_timeline, read_log_file, timeline_text

if TYPE_CHECKING:
    from mcp_tether.connection import TransitionRecord
    from mcp_tether.pool import ServerPool
    from mcp_tether.testing.clock import OffsetClock
    from mcp_tether.testing.serve import LoopbackOAuthEnvironment

__all__ = ["LIFETIME", "SERVER", "run_demo"]

#: The demo server's name in the temporary configuration.
SERVER: Final = "demo"
#: Access token lifetime (seconds); the refresh window opens 300 s before expiry.
LIFETIME: Final = 600.0
#: How far the clock jumps: into the refresh window, not past expiry.
_JUMP: Final = 320.0
#: Seconds the authorization server takes to answer the refresh, so calls visibly continue meanwhile.
_REFRESH_LATENCY: Final = 1.0
#: Longest any single step may take.
_STEP_TIMEOUT: Final = 20.0


class DemoFailed(Exception):
    """A step of the demo did not behave as the library promises."""


class _Demo:
    def __init__(self, console: Console, directory: Path) -> None:
        self.console = console
        self.directory = directory
        self.config_path = directory / "claude.json"
        self.token_dir = directory / "tokens"
        self.started = time.monotonic()
        from mcp_tether.testing.browser import HeadlessBrowser

        #: The headless stand-in for a person at a browser (approves automatically; counts launches).
        self.browser = HeadlessBrowser(timeout=_STEP_TIMEOUT)
        self.states: list[str] = []

    # --- output ----------------------------------------------------------------

    def step(self, text: str) -> None:
        self.console.line()
        self.console.line(self.console.bold(f"== {text}"))

    def say(self, text: str) -> None:
        self.console.line(f"   {text}")

    def on_transition(self, record: TransitionRecord) -> None:
        """Print one state-machine step as it happens."""
        if not self.states or self.states[-1] != record.before:
            self.states.append(record.before)
        if record.after != record.before:
            self.states.append(record.after)
        elapsed = time.monotonic() - self.started
        arrow = f"{record.before} -> {record.after}" if record.after != record.before else f"{record.before} (stays)"
        note = f"  {self.console.dim(record.note)}" if record.note else ""
        self.console.line(f"   {elapsed:5.2f}s  {record.server}: {self.console.bold(arrow)}  on {record.event}{note}")

    def open_url(self, url: str) -> bool:
        """Say what is opened, then hand it to the headless browser."""
        label = self.console.yellow("[headless browser: approving automatically, no person involved]")
        self.say(f"{label} opening {url.split('?')[0]}?...")
        return self.browser(url)

    # --- steps -------------------------------------------------------------------

    def pool(self, clock: OffsetClock) -> ServerPool:
        from mcp_tether.pool import ServerPool

        return ServerPool.from_config(
            self.config_path,
            self.token_dir,
            connected_servers="",
            clock=clock,
            open_url=self.open_url,
            authorization_timeout=_STEP_TIMEOUT,
            on_transition=self.on_transition,
        )

    async def echo(self, pool: ServerPool, text: str) -> str:
        async with asyncio.timeout(_STEP_TIMEOUT):
            result = await pool.call_tool(SERVER, "echo", {"text": text})
        content = result.content[0] if result.content else None
        answer = getattr(content, "text", None)
        if result.is_error or answer != text:
            raise DemoFailed(f"server {SERVER!r}: the echo tool answered {answer!r} instead of {text!r}")
        return text

    async def wait_for(self, pool: ServerPool, state: str) -> None:
        deadline = time.monotonic() + _STEP_TIMEOUT
        while pool.state(SERVER) != state:
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"server {SERVER!r}: still {pool.state(SERVER)!r} after {_STEP_TIMEOUT:g} s, expected {state!r}"
                )
            await asyncio.sleep(0.02)

    async def run(self, env: LoopbackOAuthEnvironment, clock: OffsetClock) -> None:
        console = self.console
        self.step("Setup")
        self.say(f"authorization server {env.issuer} (access tokens live {LIFETIME:g} s, refresh tokens rotate)")
        self.say(f"MCP server {env.mcp_url} (OAuth-protected, tools: echo, add, ...)")
        self.config_path.write_text(
            json.dumps({"mcpServers": {SERVER: {"type": "http", "url": env.mcp_url, "disabled": True}}}),
            encoding="utf-8",
        )
        self.say(f"configuration {self.config_path} (server {SERVER!r}, lazy), tokens in {self.token_dir}")

        self.step("1. A pool is created: the lazy server costs nothing yet")
        async with self.pool(clock) as pool:
            self.say(f"state of {SERVER!r}: {console.bold(pool.state(SERVER))}; no request sent, no file written")

            self.step("2. The first tool call connects it: discovery, registration, browser authorization")
            self.say(f"echo answered {await self.echo(pool, 'hello')!r}")

            self.step(f"3. The clock jumps {_JUMP:g} s forward, into the refresh window ({LIFETIME - _JUMP:g} s left)")
            env.auth.script_token_answers([f"slow:{_REFRESH_LATENCY:g}"], grant_type="refresh_token")
            refreshes = env.auth.counters().refreshes
            clock.advance(_JUMP)
            await self.wait_for(pool, "expiring")
            self.say("a background refresh is in flight (the server answers slowly on purpose); calls continue:")
            for n in range(3):
                self.say(f"call {n + 1} while refreshing: echo answered {await self.echo(pool, f'call {n + 1}')!r}")
            await self.wait_for(pool, "connected")
            if env.auth.counters().refreshes != refreshes + 1:
                raise DemoFailed(
                    f"server {SERVER!r}: expected exactly one refresh, saw {env.auth.counters().refreshes - refreshes}"
                )
            self.say(f"refreshed once; echo answered {await self.echo(pool, 'after the refresh')!r}")

        self.step("4. A restart: a new pool, the same token directory")
        launches = self.browser.launches
        async with self.pool(clock) as pool:
            self.say(f"echo answered {await self.echo(pool, 'after the restart')!r}")
        if self.browser.launches != launches:
            raise DemoFailed(f"server {SERVER!r}: the restart opened the browser although tokens were stored")
        self.say(console.green("the stored tokens were reused: 0 browser launches on restart"))

        self.step("5. The token log, replayed (mcp-tether replay; secrets redacted)")
        from mcp_tether.adapters.token_store import TokenStore

        path = TokenStore(self.token_dir).log(SERVER).path
        timeline = build_timeline(read_log_file(path, server=SERVER), now=clock.now())
        for text in timeline_text(timeline, **console.timeline_styles()):
            self.say(text)

        counters = env.auth.counters()
        self.step("Done")
        self.say(
            f"browser launches {self.browser.launches}, refreshes {counters.refreshes}, "
            f"refresh-token reuse detected {counters.reuse_detected}, states in order: {' -> '.join(self.states)}"
        )


async def _main(console: Console, directory: Path) -> None:
    from mcp_tether.testing.authserver import SimulatedAuthorizationServer
    from mcp_tether.testing.clock import OffsetClock
    from mcp_tether.testing.serve import LoopbackOAuthEnvironment

    clock = OffsetClock()
    auth = SimulatedAuthorizationServer(clock=clock.now, access_token_lifetime=LIFETIME)
    async with LoopbackOAuthEnvironment(auth) as env:
        await _Demo(console, directory).run(env, clock)


def run_demo(console: Console, *, keep: bool = False) -> int:
    """Run the demo; everything it writes goes to one temporary directory.

    Args:
        console: where to print.
        keep: leave the temporary directory (configuration, token log) for inspection.

    Returns:
        0 when every step behaved as promised, 1 otherwise (the message says which step).
    """
    directory = Path(tempfile.mkdtemp(prefix="mcp-tether-demo-"))
    try:
        asyncio.run(_main(console, directory))
    except DemoFailed as error:
        console.error(f"the demo failed: {error}. Please report it with the output above.")
        return EXIT_FAILED
    finally:
        if keep:
            console.line(f"\nKept {directory} (configuration and token log); remove it when done.")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return EXIT_OK
