"""The token directory under attack: umask, symlinks, foreign owners, hostile names, legacy files."""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from token_log_support import SECRET_MARK, hostile_names, sample_tokens

from mcp_tether.adapters.filenames import SLUG_MAX, legacy_file_name, log_file_stem
from mcp_tether.adapters.token_store import TokenStore, UnsafeTokenPath
from mcp_tether.statemachine.tokenlog import (
    ClientRegistered,
    LegacyImported,
    RefreshFailedEvent,
    TokensIssued,
)

SERVER = "notion"


def issued(index: int) -> TokensIssued:
    return TokensIssued(tokens=sample_tokens(index), grant="authorization_code")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_zero")
def test_modes_are_0700_and_0600_under_umask_000(tmp_path: Path) -> None:
    token_dir = tmp_path / "deep" / "tokens"
    log = TokenStore(token_dir, compact_threshold=300).log(SERVER)
    log.append([issued(1)], at=1.0)
    with log.path.open("ab") as file:
        file.write(b'{"torn')
    log.read()
    log.append([issued(2), issued(3)], at=2.0)  # past the threshold: compacted into a new file
    assert mode(token_dir) == 0o700
    names = sorted(p.name for p in token_dir.iterdir())
    assert [name.rsplit(".", 1)[-1] for name in names] == ["jsonl", "broken", "lock"]
    for name in names:
        assert mode(token_dir / name) == 0o600, name


def test_loose_existing_directory_and_file_are_tightened_on_write(tmp_path: Path) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    log.append([issued(1)], at=1.0)
    os.chmod(tmp_path, 0o755)
    os.chmod(log.path, 0o644)
    log.read()
    assert mode(tmp_path) == 0o755  # reading changes nothing
    log.append([issued(2)], at=2.0)
    assert mode(tmp_path) == 0o700
    assert mode(log.path) == 0o600


@pytest.mark.parametrize("planted", ["log", "lock"])
def test_preplanted_symlink_fails_the_write_and_leaves_its_target(tmp_path: Path, planted: str) -> None:
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(mode=0o700)
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    os.chmod(target, 0o644)
    stem = log_file_stem(SERVER)
    link = token_dir / (stem + (".jsonl" if planted == "log" else ".lock"))
    link.symlink_to(target)
    with pytest.raises(UnsafeTokenPath, match="symbolic link") as caught:
        TokenStore(token_dir).log(SERVER).append([issued(1)], at=1.0)
    assert str(link) in str(caught.value)
    assert target.read_bytes() == b"precious"
    assert mode(target) == 0o644
    assert link.is_symlink()


def test_symlink_to_a_missing_target_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "would-be-created"
    link = tmp_path / (log_file_stem(SERVER) + ".jsonl")
    link.symlink_to(target)
    for attempt in (
        lambda: TokenStore(tmp_path).log(SERVER).read(),
        lambda: TokenStore(tmp_path).log(SERVER).append([issued(1)], at=1.0),
    ):
        with pytest.raises(UnsafeTokenPath):
            attempt()
    assert not target.exists()


def test_symlinked_broken_file_stops_the_repair(tmp_path: Path) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    log.append([issued(1)], at=1.0)
    with log.path.open("ab") as file:
        file.write(b'{"torn')
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    (tmp_path / (log.path.name + ".broken")).symlink_to(target)
    with pytest.raises(UnsafeTokenPath):
        TokenStore(tmp_path).log(SERVER).read()
    assert target.read_bytes() == b"precious"


def test_symlinked_token_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeTokenPath, match="MCP_TETHER_TOKEN_DIR"):
        TokenStore(tmp_path / "link").log(SERVER).append([issued(1)], at=1.0)
    assert list(real.iterdir()) == []


def test_a_fifo_in_place_of_the_log_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / (log_file_stem(SERVER) + ".jsonl"), 0o600)
    with pytest.raises(UnsafeTokenPath, match="not a regular file"):
        TokenStore(tmp_path).log(SERVER).read()


def test_files_of_another_user_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = TokenStore(tmp_path / "tokens").log(SERVER)
    log.append([issued(1)], at=1.0)
    real_uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real_uid + 1)
    with pytest.raises(UnsafeTokenPath, match=f"belongs to user id {real_uid}") as caught:
        TokenStore(tmp_path / "tokens").log(SERVER).read()
    assert "token directory" in str(caught.value)


def test_log_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    log.append([issued(1)], at=1.0)
    real_stat = os.fstat
    fake_uid = os.geteuid() + 1

    def fstat(fd: int) -> os.stat_result:
        result = real_stat(fd)
        if stat.S_ISREG(result.st_mode):
            values = list(result)
            values[stat.ST_UID] = fake_uid
            return os.stat_result(values)
        return result

    monkeypatch.setattr(os, "fstat", fstat)
    with pytest.raises(UnsafeTokenPath, match=f"belongs to user id {fake_uid}"):
        TokenStore(tmp_path).log(SERVER).read()


SAFE_STEM = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?-[0-9a-f]{32}$")


@settings(max_examples=500, deadline=None)
@given(names=st.lists(hostile_names, min_size=2, max_size=8, unique=True))
def test_hostile_names_map_to_safe_distinct_file_names(names: list[str]) -> None:
    stems = [log_file_stem(name) for name in names]
    for name, stem in zip(names, stems, strict=True):
        assert SAFE_STEM.match(stem), (name, stem)
        assert len(stem) <= SLUG_MAX + 33
    assert len(set(stems)) == len(names)
    assert len({stem.lower() for stem in stems}) == len(names)  # also on case-insensitive file systems
    for name in names:
        legacy = legacy_file_name(name)
        if legacy is not None:
            assert Path(legacy).name == legacy
            assert legacy not in {".json", "..json"} or name in {".", ".."}


@settings(max_examples=40, deadline=None)
@given(names=st.lists(hostile_names, min_size=1, max_size=5, unique=True))
def test_hostile_names_stay_inside_the_token_directory(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        token_dir = root / "a" / "tokens"
        store = TokenStore(token_dir)
        for index, name in enumerate(names):
            store.log(name).append([RefreshFailedEvent(reason=str(index), final=False)], at=1.0)
        assert sorted(p.name for p in root.iterdir()) == ["a"]
        assert sorted(p.name for p in (root / "a").iterdir()) == ["tokens"]
        assert all(p.is_file() and not p.is_symlink() for p in token_dir.iterdir())
        assert len(list(token_dir.iterdir())) == 2 * len(names)
        for index, name in enumerate(names):
            (record,) = TokenStore(token_dir).log(name).read().records
            assert record.event == RefreshFailedEvent(reason=str(index), final=False)


# --- legacy import ------------------------------------------------------------

LEGACY = {
    "tokens": {
        "access_token": "AT-SeCrEt",
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": "RT-SeCrEt",
        "scope": "read",
    },
    "clientInfo": {
        "client_id": "cid",
        "client_secret": "CS-SeCrEt",
        "redirect_uris": ["http://localhost/cb"],
    },
    "tokensIssuedAt": 1_767_225_600_000,
}


def plant_legacy(token_dir: Path, server: str, document: object) -> tuple[Path, bytes, int]:
    token_dir.mkdir(exist_ok=True)
    path = token_dir / f"{server}.json"
    path.write_text(json.dumps(document))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    return path, path.read_bytes(), path.stat().st_mtime_ns


def test_legacy_file_with_issue_time_is_imported_once_and_left_alone(tmp_path: Path) -> None:
    legacy, data, mtime = plant_legacy(tmp_path, SERVER, LEGACY)
    replay = TokenStore(tmp_path).log(SERVER).read()
    kinds = [type(record.event) for record in replay.records]
    assert kinds == [LegacyImported, ClientRegistered, TokensIssued]
    assert replay.records[0].event == LegacyImported(source="notion.json", had_issued_at=True)
    tokens = replay.state.tokens
    assert tokens is not None
    assert tokens.issued_at == 1_767_225_600.0
    assert tokens.expires_in == 3600
    assert tokens.refresh_token == "RT-SeCrEt"
    assert replay.state.client is not None
    assert replay.state.client.client_id == "cid"
    (warning,) = replay.warnings
    assert "imported tokens with their issue time" in warning
    assert str(legacy) in warning
    assert SECRET_MARK not in warning
    assert legacy.read_bytes() == data
    assert legacy.stat().st_mtime_ns == mtime
    again = TokenStore(tmp_path).log(SERVER).read()
    assert again.records == replay.records
    assert again.warnings == ()


def test_legacy_file_without_issue_time_has_unknown_expiry(tmp_path: Path) -> None:
    document = {"tokens": LEGACY["tokens"]}
    plant_legacy(tmp_path, SERVER, document)
    before = time.time()
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert replay.records[0].event == LegacyImported(source="notion.json", had_issued_at=False)
    tokens = replay.state.tokens
    assert tokens is not None
    assert tokens.expires_in is None
    assert before <= tokens.issued_at <= time.time()
    assert "expiry is unknown" in replay.warnings[0]


def test_legacy_import_happens_before_a_first_append(tmp_path: Path) -> None:
    plant_legacy(tmp_path, SERVER, LEGACY)
    (record,) = TokenStore(tmp_path).log(SERVER).append([issued(5)], at=2.0)
    assert record.seq == 4
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert [r.seq for r in replay.records] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"{not json", "not valid JSON"), (b"[]", "expected a JSON object"), (b"{}", "neither tokens")],
)
def test_unusable_legacy_file_is_reported_not_imported(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "notion.json").write_bytes(content)
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert replay.records == ()
    (warning,) = replay.warnings
    assert reason in warning
    assert "new login" in warning
    assert not (tmp_path / (log_file_stem(SERVER) + ".jsonl")).exists()
    assert (tmp_path / "notion.json").read_bytes() == content


def test_symlinked_legacy_file_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(LEGACY))
    token_dir = tmp_path / "tokens"
    token_dir.mkdir()
    (token_dir / "notion.json").symlink_to(elsewhere)
    replay = TokenStore(token_dir).log(SERVER).read()
    assert replay.records == ()
    assert "symbolic link" in replay.warnings[0]


@pytest.mark.parametrize("server", ["../notion", "a/b", ".."])
def test_names_that_are_not_plain_file_names_have_no_legacy_file(tmp_path: Path, server: str) -> None:
    token_dir = tmp_path / "tokens"
    plant_legacy(tmp_path, "notion", LEGACY)
    token_dir.mkdir()
    replay = TokenStore(token_dir).log(server).read()
    assert replay.records == ()
    assert list(token_dir.iterdir()) == []
