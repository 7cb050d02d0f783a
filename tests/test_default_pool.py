"""The module-level helpers (``call_mcp_tool``, ``get_tool_schema``, ...) over the default pool,
against a real MCP server on loopback (the open endpoint: no OAuth in the way)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import mcp_tether
from mcp_tether import (
    ServerNotFound,
    ServerPool,
    call_mcp_tool,
    close_default_pool,
    configure_default_pool,
    get_tool_schema,
    list_mcp_tools,
    use_pool,
)
from mcp_tether import default as default_module
from mcp_tether.testing.serve import LoopbackOAuthEnvironment


@pytest.fixture(scope="module")
def env() -> Iterator[LoopbackOAuthEnvironment]:
    with LoopbackOAuthEnvironment() as environment:
        yield environment


@pytest.fixture
def config(tmp_path: Path, env: LoopbackOAuthEnvironment, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A configuration with one lazy and one eager server, found through the environment variables."""
    path = tmp_path / "claude.json"
    servers = {
        "open": {"type": "http", "url": env.open_mcp_url, "disabled": True},
        "eager": {"type": "http", "url": env.open_mcp_url},
    }
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    monkeypatch.setenv("MCP_CONFIG_PATH", str(path))
    monkeypatch.setenv("MCP_TETHER_TOKEN_DIR", str(tmp_path / "tokens"))
    monkeypatch.setenv("CONNECTED_SERVERS", "eager")
    monkeypatch.setattr(default_module, "_current", None)
    monkeypatch.setattr(default_module, "_options", {})
    yield path
    assert default_module._current is None, "a test left the default pool open"


def text(result: object) -> str:
    content = result.content  # type: ignore[attr-defined]
    return str(content[0].text)


async def test_the_helpers_build_one_pool_from_the_environment_on_first_use(config: Path) -> None:
    results = await asyncio.gather(*(call_mcp_tool("open", "echo", {"text": str(i)}) for i in range(20)))
    assert [text(r) for r in results] == [str(i) for i in range(20)]
    pool = await mcp_tether.default.default_pool()
    assert pool.config.path == config
    assert pool.connection("open").counters["connects"] == 1
    assert pool.state("eager") == "connected"  # CONNECTED_SERVERS connect when the pool is entered
    schema = await get_tool_schema("open", "echo")
    assert schema["properties"]["text"]["type"] == "string"
    assert "sleep" in {tool.name for tool in await list_mcp_tools("open")}
    with pytest.raises(ServerNotFound) as missing:
        await call_mcp_tool("nope", "echo", {})
    assert "eager" in str(missing.value) and "open" in str(missing.value)
    await close_default_pool()
    assert pool.state("open") == "closed"


async def test_configure_sets_the_options_before_the_pool_is_built(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"mcpServers": {"elsewhere": {"type": "http", "url": "http://127.0.0.1:9/"}}}))
    with pytest.raises(TypeError):
        configure_default_pool(interactiv=False)
    configure_default_pool(config_path=other, interactive=False)
    pool = await mcp_tether.default.default_pool()
    assert pool.servers() == ["elsewhere"] and pool.interactive is False
    with pytest.raises(RuntimeError, match="already built"):
        configure_default_pool()
    await close_default_pool()
    configure_default_pool()  # back to the defaults: the environment's configuration
    assert text(await call_mcp_tool("open", "echo", {"text": "again"})) == "again"
    await close_default_pool()


async def test_use_pool_hands_the_helpers_a_pool_the_caller_owns(config: Path, tmp_path: Path) -> None:
    async with ServerPool.from_config(config, tmp_path / "mine", connected_servers="") as mine:
        use_pool(mine)
        assert text(await call_mcp_tool("open", "echo", {"text": "mine"})) == "mine"
        assert mine.state("open") == "connected"
        await close_default_pool()  # lets go of it; the owner closes it
        assert mine.state("open") == "connected"
    assert mine.state("open") == "closed"


def test_a_new_event_loop_gets_a_new_pool(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One ``asyncio.run`` per execution: the pool of a closed loop is replaced, with a warning."""

    async def execution(value: str) -> tuple[str, ServerPool]:
        result = await call_mcp_tool("open", "echo", {"text": value})
        return text(result), await mcp_tether.default.default_pool()

    first, first_pool = asyncio.run(execution("one"))
    second, second_pool = asyncio.run(execution("two"))
    assert (first, second) == ("one", "two")
    assert first_pool is not second_pool
    assert "closed without close_default_pool()" in caplog.text

    async def close() -> None:
        await close_default_pool()

    asyncio.run(close())  # the second loop is closed too: nothing to close, the state is cleared


async def test_a_second_running_loop_is_refused(config: Path) -> None:
    ready, stop = threading.Event(), threading.Event()

    def other_loop() -> None:
        async def hold() -> None:
            await mcp_tether.default.default_pool()
            ready.set()
            for _ in range(1000):  # at most 10 s
                if stop.is_set():
                    break
                await asyncio.sleep(0.01)
            await close_default_pool()

        asyncio.run(hold())

    thread = threading.Thread(target=other_loop)
    thread.start()
    try:
        assert ready.wait(10)
        with pytest.raises(RuntimeError, match="another event loop that is still running"):
            await call_mcp_tool("open", "echo", {"text": "x"})
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
