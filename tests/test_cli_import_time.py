"""Commands that connect nothing must not import the mcp client stack or httpx2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcp_tether.statemachine.logcodec import encode_line
from mcp_tether.statemachine.tokenlog import AuthorizationStarted, LogRecord

HEAVY = ("mcp", "httpx2", "httpx", "hypothesis", "uvicorn", "starlette")


def imported_modules(*argv: str, home: Path) -> set[str]:
    """The modules ``python -X importtime -m mcp_tether ARGV`` imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mcp_tether", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "MCP_TETHER_TOKEN_DIR": str(home / "tokens")},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    assert heavy(imported_modules("--help", home=tmp_path)) == []


def test_replay_imports_nothing_heavy(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    log.write_bytes(encode_line(LogRecord(seq=1, at=0.0, event=AuthorizationStarted(reason="no_tokens")), server="x"))
    modules = imported_modules("replay", str(log), home=tmp_path)
    assert "mcp_tether.replay" in modules
    assert heavy(modules) == []


def test_status_imports_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / ".claude.json").write_text('{"mcpServers": {"a": {"type": "http", "url": "http://127.0.0.1:9/"}}}')
    assert heavy(imported_modules("status", home=tmp_path)) == []
