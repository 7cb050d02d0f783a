"""ServerPool against real loopback servers: an OAuth authorization server, an MCP
resource server over streamable HTTP, and an MCP server subprocess over stdio."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_tether import AuthorizationRequired, ServerNotFound, ServerPool, ServerUnavailable
from mcp_tether.testing.authserver import SimulatedAuthorizationServer
from mcp_tether.testing.browser import HeadlessBrowser
from mcp_tether.testing.clock import OffsetClock
from mcp_tether.testing.serve import LoopbackOAuthEnvironment


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def env(clock: OffsetClock) -> Iterator[LoopbackOAuthEnvironment]:
    server = SimulatedAuthorizationServer(clock=clock.now, access_token_lifetime=3600.0)
    with LoopbackOAuthEnvironment(server) as environment:
        yield environment


def write_config(tmp_path: Path, servers: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "claude.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def oauth_config(tmp_path: Path, env: LoopbackOAuthEnvironment) -> Path:
    return write_config(tmp_path, {"notion": {"type": "http", "url": env.mcp_url, "disabled": True}})


def make_pool(config: Path, tmp_path: Path, clock: OffsetClock, browser: HeadlessBrowser, **kw: object) -> ServerPool:
    return ServerPool.from_config(
        config, tmp_path / "tokens", connected_servers="", clock=clock, open_url=browser, **kw  # type: ignore[arg-type]
    )


async def authorized_then_expired(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> tuple[Path, HeadlessBrowser]:
    """One pool authorizes (one browser launch) and closes; then the access token expires."""
    config = oauth_config(tmp_path, env)
    browser = HeadlessBrowser()
    async with make_pool(config, tmp_path, clock, browser) as pool:
        await echo(pool)
    clock.advance(2 * 3600)
    return config, browser


async def echo(pool: ServerPool, text: str = "hi") -> str:
    result = await pool.call_tool("notion", "echo", {"text": text})
    assert not result.is_error
    return result.content[0].text  # type: ignore[union-attr]


async def test_cold_start_then_warm_restart_without_authorization_requests(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config = oauth_config(tmp_path, env)
    browser = HeadlessBrowser()
    async with make_pool(config, tmp_path, clock, browser) as pool:
        assert pool.state("notion") == "lazy"
        assert await echo(pool) == "hi"
        assert pool.state("notion") == "connected"
    assert browser.launches == 1
    cold = env.auth.counters()
    assert cold.register == 1
    assert cold.token_by_grant["authorization_code"] == 1

    async with make_pool(config, tmp_path, clock, browser) as pool:
        assert await echo(pool, "again") == "again"
    warm = env.auth.counters()
    assert browser.launches == 1
    assert (warm.metadata, warm.register, warm.authorize, warm.token) == (
        cold.metadata,
        cold.register,
        cold.authorize,
        cold.token,
    )


async def test_restart_with_expired_access_token_refreshes_once_and_opens_no_browser(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config, browser = await authorized_then_expired(tmp_path, env, clock)
    before = env.auth.counters()
    async with make_pool(config, tmp_path, clock, browser) as pool:
        assert await echo(pool) == "hi"
    after = env.auth.counters()
    assert after.refreshes - before.refreshes == 1
    assert browser.launches == 1
    assert after.reuse_detected == 0


async def test_transient_refresh_failures_never_open_a_browser(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config, browser = await authorized_then_expired(tmp_path, env, clock)
    env.auth.script_token_answers([503, 503], grant_type="refresh_token")
    async with make_pool(config, tmp_path, clock, browser) as pool:
        assert await echo(pool) == "hi"
    assert browser.launches == 1
    assert env.auth.counters().token_by_grant["refresh_token"] == 3


async def test_rejected_refresh_token_opens_the_browser_exactly_once(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config, browser = await authorized_then_expired(tmp_path, env, clock)
    env.auth.script_token_answers(["invalid_grant"], grant_type="refresh_token")
    async with make_pool(config, tmp_path, clock, browser) as pool:
        assert await echo(pool) == "hi"
        assert await echo(pool) == "hi"
    assert browser.launches == 2


async def test_rejected_refresh_token_without_interaction_raises_authorization_required(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config, browser = await authorized_then_expired(tmp_path, env, clock)
    env.auth.script_token_answers(["invalid_grant"], grant_type="refresh_token")
    async with make_pool(config, tmp_path, clock, browser, interactive=False) as pool:
        with pytest.raises(AuthorizationRequired) as caught:
            await echo(pool)
        assert caught.value.server == "notion"
        assert "mcp-tether login notion" in str(caught.value)
        assert pool.state("notion") == "needs_auth"
    assert browser.launches == 1


async def test_fifty_concurrent_first_calls_connect_once(
    tmp_path: Path, env: LoopbackOAuthEnvironment, clock: OffsetClock
) -> None:
    config = oauth_config(tmp_path, env)
    browser = HeadlessBrowser()
    async with make_pool(config, tmp_path, clock, browser) as pool:
        results = await asyncio.gather(*(echo(pool, str(i)) for i in range(50)))
        assert results == [str(i) for i in range(50)]
        counters = pool.connection("notion").counters
        assert counters["connects"] == 1
        assert counters["authorizations"] == 1
    assert browser.launches == 1
    server = env.auth.counters()
    assert server.register == 1
    assert server.refreshes == 0


async def test_calls_flow_across_expiries_without_a_single_401(tmp_path: Path, clock: OffsetClock) -> None:
    server = SimulatedAuthorizationServer(access_token_lifetime=1.5)
    with LoopbackOAuthEnvironment(server) as env:
        config = oauth_config(tmp_path, env)
        browser = HeadlessBrowser()
        async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser) as pool:
            await echo(pool)
            unauthorized_before = env.resource.counters().unauthorized
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 4.5
            calls = 0
            while loop.time() < deadline:
                await echo(pool, str(calls))
                calls += 1
                await asyncio.sleep(0.02)
        assert env.resource.counters().unauthorized == unauthorized_before
        assert env.auth.counters().refreshes >= 2
        assert env.auth.counters().reuse_detected == 0
        assert browser.launches == 1
        assert calls > 50


async def test_a_server_that_expires_tokens_early_is_answered_by_a_refresh(tmp_path: Path) -> None:
    server = SimulatedAuthorizationServer(access_token_lifetime=3.0, resource_early_expiry=2.9)
    with LoopbackOAuthEnvironment(server) as env:
        config = oauth_config(tmp_path, env)
        browser = HeadlessBrowser()
        async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser) as pool:
            await echo(pool)
            await asyncio.sleep(0.3)
            for i in range(5):
                assert await echo(pool, str(i)) == str(i)
        assert browser.launches == 1
        assert env.auth.counters().refreshes >= 1


async def test_a_lazy_pool_of_a_hundred_servers_touches_nothing(tmp_path: Path) -> None:
    servers: dict[str, dict[str, object]] = {
        f"s{i}": {"type": "http", "url": f"http://127.0.0.1:9/mcp/{i}", "disabled": True} for i in range(100)
    }
    config = write_config(tmp_path, servers)
    browser = HeadlessBrowser()
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser) as pool:
        assert {pool.state(name) for name in pool.servers()} == {"lazy"}
        assert all(pool.connection(name).counters["connects"] == 0 for name in pool.servers())
    assert not (tmp_path / "tokens").exists()
    assert browser.launches == 0


#: Modules a pool of servers nobody used has no business loading.
CONNECTION_MODULES = (
    "mcp_tether.connection",
    "mcp_tether.statemachine.machine",
    "mcp_tether.statemachine.logcodec",
    "mcp_tether.adapters.token_store",
    "mcp_tether.adapters.oauth",
    "mcp_tether.adapters.browser",
    "mcp_tether.adapters.callback",
    "transitions",
    "filelock",
    "mcp",
    "httpx2",
)

LAZY_POOL_CHILD = """
import asyncio, json, sys
from mcp_tether import ServerPool

async def main():
    pool = ServerPool.from_config(sys.argv[1], sys.argv[2], connected_servers=[])
    async with pool:
        states = {name: pool.state(name) for name in pool.servers()}
        problems = {name: pool.problem(name) for name in pool.servers()}
        loaded = sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)
    return {"states": states, "problems": problems, "loaded": loaded, "after": pool.state("s0")}

print(json.dumps(asyncio.run(main())))
"""


def test_a_lazy_pool_loads_no_connection_machinery(tmp_path: Path) -> None:
    servers: dict[str, dict[str, object]] = {
        f"s{i}": {"type": "http", "url": f"http://127.0.0.1:9/mcp/{i}"} for i in range(100)
    }
    servers["bad"] = {"type": "http", "url": "not a url"}
    config = write_config(tmp_path, servers)
    completed = subprocess.run(
        [sys.executable, "-c", LAZY_POOL_CHILD, str(config), str(tmp_path / "tokens"), json.dumps(CONNECTION_MODULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    seen = json.loads(completed.stdout)
    assert seen["loaded"] == []
    assert seen["states"] == {**{f"s{i}": "lazy" for i in range(100)}, "bad": "failed"}
    assert seen["problems"]["s0"] is None
    assert "'bad' is misconfigured" in seen["problems"]["bad"] and "`url`" in seen["problems"]["bad"]
    assert seen["after"] == "closed"
    assert not (tmp_path / "tokens").exists()


async def test_a_server_never_used_answers_as_its_connection_would(tmp_path: Path) -> None:
    """state() and problem() of an unused server agree with the connection its first use makes."""
    config = write_config(
        tmp_path,
        {"bad": {"type": "http", "url": "not a url"}, "idle": {"type": "http", "url": "http://127.0.0.1:9/mcp"}},
    )
    pool = ServerPool.from_config(config, tmp_path / "tokens", connected_servers="")
    async with pool:
        before = (pool.state("bad"), pool.problem("bad"), pool.state("idle"), pool.problem("idle"))
        with pytest.raises(ServerUnavailable) as failed:
            await pool.list_tools("bad")
        assert before == (pool.connection("bad").state.value, pool.problem("bad"), "lazy", None)
        assert before[:2] == ("failed", failed.value.cause)
        with pytest.raises(ServerNotFound) as missing:
            pool.state("nope")
        assert "bad" in str(missing.value) and "idle" in str(missing.value)
    assert pool.state("idle") == pool.state("bad") == "closed"
    with pytest.raises(ServerUnavailable, match=r"'idle'.*closed"):
        await pool.call_tool("idle", "echo", {})
    with pytest.raises(ServerUnavailable, match=r"'bad'.*closed"):
        await pool.call_tool("bad", "echo", {})


async def test_stdio_server_connects_on_first_use_and_is_stopped_on_close(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"local": {"type": "stdio", "command": sys.executable, "args": ["-m", "mcp_tether.testing.stdio_server"]}},
    )
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="") as pool:
        assert pool.state("local") == "lazy"
        result = await pool.call_tool("local", "add", {"a": 2, "b": 3})
        assert result.content[0].text in {"5", "5.0"}  # type: ignore[union-attr]
        schema = await pool.get_tool_schema("local", "echo")
        assert "text" in schema["properties"]
        assert pool.state("local") == "connected"
    assert pool.state("local") == "closed"


async def test_eager_servers_connect_on_entry(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"local": {"type": "stdio", "command": sys.executable, "args": ["-m", "mcp_tether.testing.stdio_server"]}},
    )
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="local") as pool:
        assert pool.state("local") == "connected"


async def test_errors_name_the_server_and_what_to_do(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "broken": {"type": "http", "url": "not a url"},
            "down": {"type": "http", "url": "http://127.0.0.1:9/mcp"},
        },
    )
    async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="") as pool:
        with pytest.raises(ServerNotFound) as missing:
            await pool.call_tool("nope", "echo", {})
        assert "broken" in str(missing.value)
        assert pool.state("broken") == "failed"
        with pytest.raises(ServerUnavailable) as broken:
            await pool.list_tools("broken")
        assert "broken" in str(broken.value)
        with pytest.raises(ServerUnavailable) as down:
            await pool.list_tools("down")
        assert "down" in str(down.value)
        assert pool.state("down") == "failed"


async def test_two_processes_share_the_token_log_through_rotations(tmp_path: Path) -> None:
    server = SimulatedAuthorizationServer(access_token_lifetime=1.0)
    with LoopbackOAuthEnvironment(server) as env:
        config = oauth_config(tmp_path, env)
        browser = HeadlessBrowser()
        worker = Path(__file__).parent / "support" / "pool_worker.py"
        async with ServerPool.from_config(config, tmp_path / "tokens", connected_servers="", open_url=browser) as pool:
            await echo(pool)  # the one authorization; both processes then live on refreshes
            child = await asyncio.create_subprocess_exec(
                sys.executable, str(worker), str(config), str(tmp_path / "tokens"), "4",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            calls = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 4.0
            while loop.time() < deadline:
                await echo(pool, str(calls))
                calls += 1
                await asyncio.sleep(0.03)
            out, err = await asyncio.wait_for(child.communicate(), timeout=60)
        assert child.returncode == 0, err.decode()
        report = json.loads(out.decode().strip().splitlines()[-1])
        counters = env.auth.counters()
        assert report["failures"] == 0, err.decode()
        assert report["browser_launches"] == 0
        assert browser.launches == 1
        assert counters.reuse_detected == 0
        assert counters.refreshes >= 4  # several rotations happened while both processes called
        assert calls > 30
        assert report["calls"] > 30
