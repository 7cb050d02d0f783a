"""Lost sessions and closing, against real processes and loopback servers: a stdio server
that dies is replaced on a later call; closing the pool leaves no process, socket or lock."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_tether import ServerPool, TetherError, ToolCallError
from mcp_tether.testing.authserver import SimulatedAuthorizationServer
from mcp_tether.testing.browser import HeadlessBrowser
from mcp_tether.testing.serve import LoopbackOAuthEnvironment

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

STDIO = {"type": "stdio", "command": sys.executable, "args": ["-m", "mcp_tether.testing.stdio_server"]}


def write_config(tmp_path: Path, servers: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "claude.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def stdio_children() -> set[int]:
    """Live (not zombie) child processes of this process running the stdio test server."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == os.getpid() and state != "Z" and b"mcp_tether.testing.stdio_server" in cmdline:
            found.add(int(entry.name))
    return found


def established_to(port: int) -> int:
    """How many of this process's TCP sockets are connected to ``127.0.0.1:port``."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


def lock_is_free(lock_path: Path) -> bool:
    """Whether another process can take the token-log lock at once."""
    code = "import filelock, sys; filelock.FileLock(sys.argv[1]).acquire(timeout=0); print('free')"
    completed = subprocess.run(
        [sys.executable, "-c", code, str(lock_path)], capture_output=True, text=True, timeout=30, check=False
    )
    return completed.stdout.strip() == "free"


async def test_a_dead_stdio_server_is_replaced_on_a_later_call(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"local": STDIO})
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="") as pool:
        await pool.call_tool("local", "echo", {"text": "first"})
        (first,) = stdio_children()
        os.kill(first, signal.SIGKILL)
        # Each call finds the transport closed and reports the lost session; the first report
        # replaces the session, the others change nothing, and every call is retried once on it.
        calls = (pool.call_tool("local", "echo", {"text": f"again {i}"}) for i in range(10))
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
        assert [r.content[0].text for r in results] == [f"again {i}" for i in range(10)]  # type: ignore[union-attr]
        (second,) = stdio_children()
        assert second != first
        assert pool.connection("local").counters["connects"] == 2
    assert stdio_children() == set()


async def test_closing_the_pool_leaves_no_process_socket_or_lock(tmp_path: Path) -> None:
    with LoopbackOAuthEnvironment(SimulatedAuthorizationServer(access_token_lifetime=3600.0)) as env:
        config = write_config(
            tmp_path,
            {
                "notion": {"type": "http", "url": env.mcp_url},
                "open": {"type": "http", "url": env.open_mcp_url},
                "local": STDIO,
            },
        )
        port = int(env.resource_url.rsplit(":", 1)[1].split("/")[0])
        pool = ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=HeadlessBrowser())
        async with pool:
            await asyncio.gather(
                *(pool.call_tool(name, "echo", {"text": name}) for name in ("notion", "open", "local"))
            )
            assert {pool.state(name) for name in pool.servers()} == {"connected"}
            assert len(stdio_children()) == 1
            assert established_to(port) >= 2
            lock = pool.store.log("notion")._lock_path
        assert {pool.state(name) for name in pool.servers()} == {"closed"}
        assert stdio_children() == set()
        for _ in range(50):  # the server side may take a moment to see the close; our side is immediate
            if established_to(port) == 0:
                break
            await asyncio.sleep(0.02)
        assert established_to(port) == 0
        assert lock_is_free(lock)


async def test_closing_during_a_browser_authorization_ends_it_and_frees_the_lock(tmp_path: Path) -> None:
    """A person who never comes back does not keep the pool, its caller or the lock waiting."""
    with LoopbackOAuthEnvironment() as env:
        config = write_config(tmp_path, {"notion": {"type": "http", "url": env.mcp_url}})
        opened: list[str] = []

        def absent_person(url: str) -> bool:
            opened.append(url)
            return True  # a browser opened; nobody ever approves

        pool = ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=absent_person)
        async with pool:
            call = asyncio.create_task(pool.call_tool("notion", "echo", {"text": "x"}))
            for _ in range(500):  # at most 10 s
                if opened:
                    break
                await asyncio.sleep(0.02)
            assert opened and pool.state("notion") == "browser_auth"
            lock = pool.store.log("notion")._lock_path
            assert not lock_is_free(lock)  # held across the authorization
            started = time.monotonic()
        with pytest.raises(TetherError) as ended:
            await asyncio.wait_for(call, timeout=10)
        assert time.monotonic() - started < 10
        assert "notion" in str(ended.value)
        assert pool.state("notion") == "closed"
        assert lock_is_free(lock)
        assert env.auth.counters().token == 0


class FakeSession:
    def __init__(self, *, answers: bool) -> None:
        self.answers = answers
        self.pings = 0

    async def send_ping(self) -> object:
        self.pings += 1
        if not self.answers:
            raise RuntimeError("Connection closed")
        return object()


class FakeConnection:
    name = "local"

    def __init__(self, *, gone: bool) -> None:
        self.session_gone = gone


@pytest.mark.parametrize(
    ("code", "gone", "answers", "lost", "pings"),
    [
        (-32000, False, False, "connection to 'local' closed", 1),  # the SDK's CONNECTION_CLOSED, session gone
        (-32000, False, True, None, 1),  # the same code as the server's own error: the session still answers
        (-32602, False, False, None, 0),  # any other error is the server's answer; no ping
        (-32600, True, True, "no longer knows the session", 0),  # the server answered 404 to the session ID
    ],
)
async def test_only_a_closed_or_forgotten_session_counts_as_lost(
    code: int, gone: bool, answers: bool, lost: str | None, pings: int
) -> None:
    from mcp_tether.pool import _lost_session

    session = FakeSession(answers=answers)
    cause = await _lost_session(FakeConnection(gone=gone), code, session)  # type: ignore[arg-type]
    assert (cause is None) is (lost is None)
    assert lost is None or (cause is not None and lost in cause)
    assert session.pings == pings


async def test_a_restarted_http_server_gets_a_new_session_on_the_next_call(tmp_path: Path) -> None:
    """The server forgets every session (404 for their IDs); the next call opens a new one."""
    with LoopbackOAuthEnvironment(SimulatedAuthorizationServer(access_token_lifetime=3600.0)) as env:
        servers = {"notion": {"type": "http", "url": env.mcp_url}, "open": {"type": "http", "url": env.open_mcp_url}}
        config = write_config(tmp_path, servers)
        browser = HeadlessBrowser()
        async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser) as pool:
            for name in ("notion", "open"):
                assert (await pool.call_tool(name, "echo", {"text": "before"})).content[0].text == "before"  # type: ignore[union-attr]
            assert env.resource.forget_sessions() == 2
            for name in ("notion", "open"):
                result = await asyncio.wait_for(pool.call_tool(name, "echo", {"text": "after"}), timeout=30)
                assert result.content[0].text == "after"  # type: ignore[union-attr]
                assert pool.connection(name).counters["connects"] == 2
                assert pool.state(name) == "connected"
            assert browser.launches == 1  # the tokens were never in question


async def test_a_call_that_takes_too_long_fails_alone(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"local": STDIO})
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", call_timeout=1.0) as pool:
        await pool.call_tool("local", "echo", {"text": "up"})
        started = time.monotonic()
        with pytest.raises(ToolCallError, match=r"no answer within 1 s") as slow:
            await pool.call_tool("local", "sleep", {"ms": 10_000})
        assert time.monotonic() - started < 5
        assert (slow.value.server, slow.value.tool) == ("local", "sleep")
        result = await pool.call_tool("local", "echo", {"text": "still here"})  # the session is unharmed
        assert result.content[0].text == "still here"  # type: ignore[union-attr]
        assert pool.connection("local").counters["connects"] == 1


async def test_a_hanging_server_neither_blocks_nor_fails_the_others(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: the others' calls go on; closing ends the wait."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        port = silent.getsockname()[1]
        config = write_config(
            tmp_path,
            {
                "silent": {"type": "http", "url": f"http://127.0.0.1:{port}/mcp"},
                "local": STDIO,
                "broken": {"type": "http", "url": "not a url"},
            },
        )
        pool = ServerPool.from_config(config, tmp_path / "tokens", connected_servers="")
        async with pool:
            stuck = asyncio.create_task(pool.call_tool("silent", "echo", {"text": "x"}))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            for i in range(5):
                result = await pool.call_tool("local", "echo", {"text": str(i)})
                assert result.content[0].text == str(i)  # type: ignore[union-attr]
            with pytest.raises(TetherError, match="broken"):
                await pool.call_tool("broken", "echo", {})
            assert time.monotonic() - started < 10
            assert not stuck.done() and pool.state("silent") == "valid"  # still waiting for its session
            closing = time.monotonic()
        assert time.monotonic() - closing < 4  # a session still opening is cancelled, not waited for
        with pytest.raises(TetherError) as ended:
            await asyncio.wait_for(stuck, timeout=10)
        assert "silent" in str(ended.value)
        assert stdio_children() == set()


async def test_the_older_sse_transport_serves_tools_and_closes(tmp_path: Path) -> None:
    with LoopbackOAuthEnvironment() as env:
        config = write_config(tmp_path, {"legacy": {"type": "sse", "url": env.sse_url}})
        port = int(env.resource_url.rsplit(":", 1)[1].split("/")[0])
        async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="") as pool:
            assert "echo" in {tool.name for tool in await pool.list_tools("legacy")}
            results = await asyncio.gather(*(pool.call_tool("legacy", "add", {"a": i, "b": 1}) for i in range(10)))
            assert [float(r.content[0].text) for r in results] == [i + 1.0 for i in range(10)]  # type: ignore[union-attr]
            assert pool.state("legacy") == "connected"
            assert pool.connection("legacy").counters["connects"] == 1
        assert pool.state("legacy") == "closed"
        for _ in range(50):
            if established_to(port) == 0:
                break
            await asyncio.sleep(0.02)
        assert established_to(port) == 0


async def test_the_older_sse_transport_with_oauth(tmp_path: Path) -> None:
    """A protected HTTP+SSE server: discovery from its 401, one browser authorization, then stored tokens."""
    with LoopbackOAuthEnvironment(SimulatedAuthorizationServer(access_token_lifetime=3600.0)) as env:
        config = write_config(tmp_path, {"tracker": {"type": "sse", "url": env.secure_sse_url}})
        browser = HeadlessBrowser()
        for _ in range(2):  # a cold start, then a restart with the stored tokens
            pool = ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser)
            async with pool:
                results = await asyncio.gather(*(pool.call_tool("tracker", "whoami", {}) for _ in range(5)))
                assert all(not r.is_error for r in results)
                assert pool.state("tracker") == "connected"
        assert browser.launches == 1
        counters = env.auth.counters()
        assert (counters.register, counters.codes_issued, counters.refreshes) == (1, 1, 0)
        assert env.resource.counters().unauthorized == 1  # only the first GET, before any token existed
