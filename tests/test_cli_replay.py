"""``mcp-tether replay``: timelines of fixed logs (snapshots), warnings, redaction, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mcp_tether import cli
from mcp_tether.adapters.token_store import TokenStore
from mcp_tether.statemachine.logcodec import encode_line
from mcp_tether.statemachine.tokenlog import (
    AuthorizationStarted,
    ClientRegistered,
    DiscoveryRecorded,
    LogEvent,
    LoggedOut,
    LogRecord,
    RefreshFailedEvent,
    TokensIssued,
)
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, TokenSet

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SECRETS = ("SECRET-AT-1", "SECRET-RT-1", "SECRET-AT-2", "SECRET-RT-2", "SECRET-AT-3", "SECRET-RT-3", "CLIENT-SECRET")


def tokens(n: int, at: float, *, lifetime: float | None = 3600.0, refresh: bool = True) -> TokenSet:
    return TokenSet(
        access_token=f"SECRET-AT-{n}",
        refresh_token=f"SECRET-RT-{n}" if refresh else None,
        scope="read write",
        issued_at=at,
        expires_in=lifetime,
    )


def lifecycle() -> list[tuple[float, LogEvent]]:
    """Discovery, a browser authorization, a refresh with rotation, failures, a second login, logout."""
    discovery = Discovery(
        issuer="http://127.0.0.1:9000",
        authorization_endpoint="http://127.0.0.1:9000/authorize",
        token_endpoint="http://127.0.0.1:9000/token",
        revocation_endpoint="http://127.0.0.1:9000/revoke",
    )
    client = ClientRegistration(
        client_id="client-1",
        client_secret="CLIENT-SECRET",
        issuer="http://127.0.0.1:9000",
        token_endpoint_auth_method="client_secret_post",
    )
    return [
        (T0, DiscoveryRecorded(discovery=discovery)),
        (T0 + 1, ClientRegistered(client=client)),
        (T0 + 2, AuthorizationStarted(reason="no_tokens")),
        (T0 + 20, TokensIssued(tokens=tokens(1, T0 + 20), grant="authorization_code")),
        (T0 + 3400, TokensIssued(tokens=tokens(2, T0 + 3400), grant="refresh_token")),
        (T0 + 6800, RefreshFailedEvent(reason="HTTP 503", final=False)),
        (T0 + 7100, RefreshFailedEvent(reason="invalid_grant", final=True)),
        (T0 + 7200, AuthorizationStarted(reason="refresh_rejected")),
        (T0 + 7230, TokensIssued(tokens=tokens(3, T0 + 7230), grant="authorization_code")),
        (T0 + 7300, LoggedOut(revoked=True)),
    ]


def write_log(
    path: Path, events: list[tuple[float, LogEvent]], *, server: str = "notion", seqs: list[int] | None = None
) -> Path:
    numbers = seqs or list(range(1, len(events) + 1))
    with open(path, "wb") as file:
        for seq, (at, event) in zip(numbers, events, strict=True):
            file.write(encode_line(LogRecord(seq=seq, at=at, event=event), server=server))
    return path


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, now: float
) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "wall_clock", lambda: now)
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_snapshot(name: str, text: str, tmp_path: Path) -> None:
    text = text.replace(str(tmp_path), "<tmp>")
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path}; rerun with UPDATE_SNAPSHOTS=1 if intended"


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for secret in SECRETS:
            assert secret not in output


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_lifecycle_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    log = write_log(tmp_path / "notion.jsonl", lifecycle())
    before = log.read_bytes()
    code, out, err = run(capsys, monkeypatch, "replay", str(log), *(["--json"] if as_json else []), now=T0 + 9000)
    assert code == 0, err
    assert_no_secret(out, err)
    assert log.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notion.jsonl"]
    check_snapshot("replay_lifecycle.json" if as_json else "replay_lifecycle.txt", out, tmp_path)
    if as_json:
        lines = [json.loads(line) for line in out.splitlines()]
        assert lines[0]["type"] == "log"
        assert lines[-1]["type"] == "now"
        assert lines[-1]["state"]["condition"] == "logged_out"
        events = [obj for obj in lines if obj["type"] == "event"]
        assert [obj["seq"] for obj in events] == list(range(1, 11))
    else:
        assert "browser authorization started because no tokens stored for this server" in out
        assert "refresh succeeded" in out and "the refresh token was rotated" in out
        assert "because the authorization server rejected the refresh token (invalid_grant)" in out
        assert "the refresh window opened" in out
        assert out.index("the refresh window opened") < out.index("refresh succeeded")


def test_warnings_for_torn_tail_gap_and_backwards_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [
        (T0, AuthorizationStarted(reason="no_tokens")),
        (T0 + 10, TokensIssued(tokens=tokens(1, T0 + 10, lifetime=600), grant="authorization_code")),
        (T0 - 50, TokensIssued(tokens=tokens(2, T0 - 50, lifetime=600), grant="refresh_token")),
    ]
    log = write_log(tmp_path / "notion.jsonl", events, seqs=[1, 2, 5])
    with open(log, "ab") as file:
        file.write(b'{"v":1,"seq":6,"at":1767229200.0,"server":"notion","kind":"tokens_issued","data":{"tok')
    before = log.read_bytes()
    code, out, err = run(capsys, monkeypatch, "replay", str(log), now=T0 + 100)
    assert code == 0, err
    assert log.read_bytes() == before
    assert not (tmp_path / "notion.jsonl.broken").exists()
    assert_no_secret(out, err)
    check_snapshot("replay_warnings.txt", out, tmp_path)
    assert "the sequence jumps from 2 to 5" in out
    assert "the clock went backwards" in out
    assert "incomplete record" in out


def test_corrupt_middle_line_is_an_error_and_nothing_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write_log(tmp_path / "notion.jsonl", lifecycle())
    lines = log.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"SECRET-AT-1", b"SECRET-AT-X")  # checksum no longer matches
    log.write_bytes(b"\n".join(lines))
    before = log.read_bytes()
    code, out, err = run(capsys, monkeypatch, "replay", str(log), now=T0)
    assert code == cli.EXIT_FAILED
    assert out == ""
    assert f"{log}: line 4 is damaged" in err and "not modified" in err
    assert "SECRET-AT-X" not in err
    assert log.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notion.jsonl"]


def test_replay_by_server_name_reads_the_token_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(tmp_path / "tokens")
    for at, event in lifecycle()[:5]:
        store.log("notion").append([event], at=at)
    code, out, err = run(
        capsys, monkeypatch, "replay", "notion", "--token-dir", str(tmp_path / "tokens"), now=T0 + 6800
    )
    assert code == 0, err
    assert "Token log of server 'notion'" in out
    assert "expiring: valid until 2026-01-01T01:56:40Z" in out
    assert_no_secret(out, err)


def test_unknown_server_and_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, monkeypatch, "replay", "nowhere", "--token-dir", str(tmp_path), now=T0)
    assert code == cli.EXIT_FAILED
    assert "server 'nowhere': no token log at" in err and "--token-dir" in err
    assert list(tmp_path.iterdir()) == []
    code, _, err = run(capsys, monkeypatch, "replay", str(tmp_path / "missing.jsonl"), now=T0)
    assert code == cli.EXIT_USAGE
    assert "missing.jsonl: no such token log file" in err


def test_refresh_buffer_moves_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write_log(tmp_path / "notion.jsonl", lifecycle()[:4])
    _, default, _ = run(capsys, monkeypatch, "replay", str(log), now=T0 + 3000)
    _, wide, _ = run(capsys, monkeypatch, "replay", str(log), "--refresh-buffer", "900", now=T0 + 3000)
    assert "refresh window opens 2026-01-01T00:55:20Z" in default
    assert "expiring: valid until 2026-01-01T01:00:20Z, refresh window open since 2026-01-01T00:45:20Z" in wide
    code, _, err = run(capsys, monkeypatch, "replay", str(log), "--refresh-buffer", "soon", now=T0)
    assert code == cli.EXIT_USAGE and "expected a number of seconds" in err
