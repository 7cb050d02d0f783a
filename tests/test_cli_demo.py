"""``mcp-tether demo`` end to end: every lifecycle state in order, nothing left behind, no secret shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_tether import cli

LIFECYCLE = (
    "lazy -> connecting -> valid -> connecting -> browser_auth -> valid -> connected -> expiring -> connected "
    "-> closed -> lazy -> connecting -> valid -> connected -> closed"
)


def test_demo_walks_the_lifecycle_in_order_and_keeps_its_directory_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    code = cli.main(["demo", "--keep"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"states in order: {LIFECYCLE}" in out
    assert "[headless browser: approving automatically, no person involved]" in out
    assert "browser launches 1, refreshes 1, refresh-token reuse detected 0" in out
    assert "0 browser launches on restart" in out
    steps = [line for line in out.splitlines() if line.startswith("== ")]
    assert [step.split(" ")[1] for step in steps] == ["Setup", "1.", "2.", "3.", "4.", "5.", "Done"]
    for call in ("call 1", "call 2", "call 3"):
        assert f"{call} while refreshing: echo answered '{call}'" in out
    assert out.index("expiring (stays)  on use_requested") < out.index("expiring -> connected  on refresh_succeeded")
    kept = re.search(r"Kept (\S+) \(configuration and token log\)", out)
    assert kept is not None
    directory = Path(kept.group(1))
    assert directory.parent == tmp_path
    logs = list((directory / "tokens").glob("*.jsonl"))
    assert len(logs) == 1
    secrets = set(re.findall(r'"(?:access_token|refresh_token|client_secret)":"([^"]+)"', logs[0].read_text()))
    assert len(secrets) >= 4
    for secret in secrets:
        assert secret not in out + err


def test_python_m_demo_touches_nothing_outside_its_temporary_directory(tmp_path: Path) -> None:
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    environ = {"HOME": str(home), "TMPDIR": str(temp), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [sys.executable, "-m", "mcp_tether", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert LIFECYCLE in result.stdout
    assert "\033[" not in result.stdout  # piped: plain text
    assert list(home.iterdir()) == []
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "tmp"]
