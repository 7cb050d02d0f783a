"""``mcp-tether status``, ``tools``, ``call``, ``login``, ``logout``: output, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import mcp.types as mt
import pytest

from mcp_tether import cli
from mcp_tether.adapters.token_store import TokenStore
from mcp_tether.errors import AuthorizationRequired, ServerNotFound
from mcp_tether.statemachine.tokenlog import AuthorizationStarted, TokensIssued
from mcp_tether.statemachine.tokens import TokenSet

NOW = 1_767_225_600.0


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a configuration of three servers and an empty token directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MCP_CONFIG_PATH", raising=False)
    monkeypatch.delenv("MCP_TETHER_TOKEN_DIR", raising=False)
    monkeypatch.setenv("CONNECTED_SERVERS", "local,ghost")
    monkeypatch.setattr(cli, "wall_clock", lambda: NOW)
    config = {
        "mcpServers": {
            "notion": {"type": "http", "url": "http://127.0.0.1:9/mcp", "disabled": True},
            "local": {"command": "python3", "args": ["-m", "tools"]},
            "broken": {"type": "http"},
        }
    }
    (tmp_path / ".claude.json").write_text(json.dumps(config))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot_dir(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_status_lists_every_server_and_its_tokens(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_dir = env / "tokens"
    log = TokenStore(token_dir).log("notion")
    log.append([AuthorizationStarted(reason="no_tokens")], at=NOW - 4000)
    tokens = TokenSet(access_token="SECRET-AT", refresh_token="SECRET-RT", issued_at=NOW - 3900, expires_in=3600)
    log.append([TokensIssued(tokens=tokens, grant="authorization_code")], at=NOW - 3900)
    before = snapshot_dir(env)
    code, out, err = run(capsys, "status", "--token-dir", str(token_dir))
    assert code == 0, err
    assert snapshot_dir(env) == before  # no lock file, no repair, nothing
    assert "3 servers configured in" in out
    assert "CONNECTED_SERVERS names 'ghost', which is not configured" in out
    assert "notion  lazy  http http://127.0.0.1:9/mcp" in out
    assert "expired at 2025-12-31T23:55:00Z, refresh token available" in out
    assert "last event: #2 tokens_issued at 2025-12-31T22:55:00Z (65 min ago): browser authorization succeeded" in out
    assert "local  eager  stdio python3 -m tools" in out
    assert "tokens: not used (no OAuth on this transport)" in out
    assert "broken  misconfigured  unusable" in out and "problem:" in out
    assert "SECRET" not in out + err

    code, out, err = run(capsys, "status", "--token-dir", str(token_dir), "--json")
    assert code == 0, err
    entries = {entry["server"]: entry for entry in map(json.loads, out.splitlines())}
    assert entries["notion"]["tokens"]["condition"] == "expired_refreshable"
    assert entries["local"]["mode"] == "eager" and entries["local"]["tokens"] is None
    assert entries["broken"]["problem"]
    assert "SECRET" not in out


def test_status_with_a_corrupt_log_reports_it_and_changes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = TokenStore(env / "tokens").log("notion")
    log.append([AuthorizationStarted(reason="no_tokens")] * 3, at=NOW)
    damaged = log.path.read_bytes().replace(b'"seq":2', b'"seq":7')
    log.path.write_bytes(damaged)
    before = snapshot_dir(env)
    code, out, _ = run(capsys, "status", "--token-dir", str(env / "tokens"))
    assert code == 0
    assert "unreadable:" in out and "line 2 is damaged" in out
    assert snapshot_dir(env) == before


def test_status_config_errors(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--config", str(env / "missing.json"))
    assert code == cli.EXIT_USAGE
    assert "missing.json: no such configuration file" in err
    (env / "bad.json").write_text("{not json")
    code, _, err = run(capsys, "status", "--config", str(env / "bad.json"))
    assert code == cli.EXIT_FAILED
    assert "bad.json" in err
    (env / ".claude.json").unlink()
    code, out, _ = run(capsys, "status")
    assert code == 0 and "no servers configured" in out


class FakePool:
    """Stands in for ServerPool: one server, 'notion', with one tool."""

    def __init__(self, *, config_path: Path | None, token_dir: Path | None, on_url: Any) -> None:
        self.config_path = config_path
        self.token_dir = token_dir
        self.on_url = on_url
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.opened = False
        self.closed = False
        FakePool.last = self

    last: FakePool

    async def __aenter__(self) -> FakePool:
        self.opened = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True

    def check(self, name: str) -> None:
        if name != "notion":
            raise ServerNotFound(name, ["notion"])

    async def list_tools(self, name: str) -> list[mt.Tool]:
        self.check(name)
        return [mt.Tool(name="search", description="Search pages.\nMore.", input_schema={"type": "object"})]

    async def call_tool(self, name: str, tool: str, args: dict[str, Any]) -> mt.CallToolResult:
        self.check(name)
        self.calls.append((name, tool, args))
        if tool == "fail":
            return mt.CallToolResult(content=[mt.TextContent(type="text", text="no such page")], is_error=True)
        return mt.CallToolResult(content=[mt.TextContent(type="text", text=f"found {args.get('query')}")])

    async def login(self, name: str) -> None:
        self.check(name)
        raise AuthorizationRequired(name, reason="the authorization was declined in the browser")

    async def logout(self, name: str) -> bool:
        self.check(name)
        return True

    def state(self, name: str) -> str:
        return "connected"


@pytest.fixture
def fake_pool(env: Path, monkeypatch: pytest.MonkeyPatch) -> type[FakePool]:
    monkeypatch.setattr(cli, "make_pool", FakePool)
    return FakePool


def test_tools_and_call(fake_pool: type[FakePool], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tools", "notion")
    assert (code, err) == (0, "")
    assert "1 tools on server 'notion'" in out and "search  Search pages." in out
    assert fake_pool.last.opened and fake_pool.last.closed

    code, out, _ = run(capsys, "tools", "notion", "--json")
    assert json.loads(out)["inputSchema"] == {"type": "object"}

    code, out, err = run(capsys, "call", "notion", "search", "--args", '{"query": "cats"}')
    assert (code, out, err) == (0, "found cats\n", "")
    assert fake_pool.last.calls == [("notion", "search", {"query": "cats"})]

    code, out, _ = run(capsys, "call", "notion", "search", "--args", '{"query": "dogs"}', "--json")
    assert json.loads(out)["content"][0]["text"] == "found dogs"

    code, out, err = run(capsys, "call", "notion", "search", '{"query": "birds"}')  # ARGS, positional
    assert (code, out, err) == (0, "found birds\n", "")

    code, out, err = run(capsys, "call", "notion", "fail")
    assert code == cli.EXIT_FAILED
    assert "no such page" in out and "tool 'fail' reported an error" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call", "notion", "search", "--args", "{query: cats}"], "--args: not valid JSON"),
        (["call", "notion", "search", "--args", "[1, 2]"], "--args: expected a JSON object"),
        (["call", "notion", "search", "{query: cats}"], "ARGS: not valid JSON"),
        (["call", "notion", "search", "{}", "--args", "{}"], "the arguments were given twice"),
        (["tools", "nowhere"], "no MCP server named 'nowhere' is configured; configured servers: notion"),
        (["call", "nowhere", "search"], "no MCP server named 'nowhere'"),
        (["login", "nowhere"], "no MCP server named 'nowhere'"),
        (["tools", "notion", "--config", "/nonexistent/config.json"], "no such configuration file"),
    ],
)
def test_usage_errors_exit_2_and_touch_nothing(
    fake_pool: type[FakePool], env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    fake_pool.last = None  # type: ignore[assignment]
    before = snapshot_dir(env)
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert message in err and out == ""
    assert snapshot_dir(env) == before
    if argv[0] == "call" and argv[1] == "notion":
        assert fake_pool.last is None  # nothing was even opened


def test_login_failure_and_logout(fake_pool: type[FakePool], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "login", "notion")
    assert code == cli.EXIT_FAILED
    assert "'notion' needs a person to authorize it" in err and "mcp-tether login notion" in err
    code, out, _ = run(capsys, "logout", "notion")
    assert code == 0 and "revoked at the authorization server" in out


def test_bad_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["call", "notion"],
        ["simulate", "--processes", "0"],
        ["simulate", "--steps", "x"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == cli.EXIT_USAGE, argv
        assert "usage: mcp-tether" in err
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "exit codes:" in out and "2    usage error" in out
    for command in ("demo", "status", "replay", "tools", "call", "login", "logout", "simulate"):
        assert command in out


def test_colour_only_on_a_terminal_without_no_color() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    assert Console_for(Tty(), {}).color
    assert not Console_for(Tty(), {"NO_COLOR": "1"}).color
    assert not Console_for(Tty(), {"TERM": "dumb"}).color
    assert Console_for(Tty(), {}).green("ok") == "\033[32mok\033[0m"
    plain = cli.Console(out=None, err=None)  # type: ignore[arg-type]
    assert plain.green("ok") == "ok"


def Console_for(stream: Any, environ: dict[str, str]) -> cli.Console:
    return cli.Console.for_streams(stream, stream, environ)
