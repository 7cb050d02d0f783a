"""The token log on disk: replay equals fold, crash repair, corruption, compaction, locking."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from token_log_support import SECRET_MARK, events, hostile_names, sample_tokens, times

from mcp_tether.adapters.token_store import (
    COMPACT_THRESHOLD_BYTES,
    TOKEN_DIR_ENV,
    CorruptLogError,
    LockTimeout,
    TokenLogError,
    TokenStore,
    UnsupportedLogVersion,
)
from mcp_tether.statemachine.logcodec import encode_line, encode_record
from mcp_tether.statemachine.tokenlog import (
    AuthorizationStarted,
    LogEvent,
    LoggedOut,
    LogRecord,
    RefreshFailedEvent,
    Snapshot,
    TokensIssued,
    fold,
)
from mcp_tether.statemachine.tokens import TokenSet

SERVER = "notion"


def issued(index: int, *, size: int = 40) -> TokensIssued:
    return TokensIssued(tokens=sample_tokens(index, size=size), grant="refresh_token")


def records_of(batch: list[LogEvent], first_seq: int, at: float) -> list[LogRecord]:
    return [LogRecord(seq=first_seq + i, at=at, event=event) for i, event in enumerate(batch)]


def only_file(token_dir: Path, suffix: str) -> Path:
    (path,) = [p for p in token_dir.iterdir() if p.name.endswith(suffix)]
    return path


def test_reading_a_missing_log_creates_nothing(tmp_path: Path) -> None:
    token_dir = tmp_path / "tokens"
    replay = TokenStore(token_dir).log(SERVER).read()
    assert replay.records == ()
    assert replay.warnings == ()
    assert replay.state.tokens is None
    assert replay.state.last_seq == 0
    assert not token_dir.exists()
    token_dir.mkdir()
    TokenStore(token_dir).log(SERVER).read()
    assert list(token_dir.iterdir()) == []


def test_token_dir_comes_from_the_environment_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_DIR_ENV, str(tmp_path / "from-env"))
    assert TokenStore().token_dir == tmp_path / "from-env"
    monkeypatch.delenv(TOKEN_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert TokenStore().token_dir == tmp_path / ".claude" / "mcp-tokens"
    assert not (tmp_path / ".claude").exists()


def test_append_numbers_after_what_another_process_wrote(tmp_path: Path) -> None:
    first, second = TokenStore(tmp_path), TokenStore(tmp_path)
    assert [r.seq for r in first.log(SERVER).append([issued(1), issued(2)], at=5.0)] == [1, 2]
    assert [r.seq for r in second.log(SERVER).append([issued(3)], at=6.0)] == [3]
    assert [r.seq for r in first.log(SERVER).append([issued(4)], at=7.0)] == [4]
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert [r.seq for r in replay.records] == [1, 2, 3, 4]
    assert replay.state.tokens == sample_tokens(4)
    assert first.log(SERVER).append([], at=8.0) == ()


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(events, min_size=1, max_size=4), min_size=1, max_size=5), at=times)
def test_replay_of_the_appended_file_equals_the_fold(batches: list[list[LogEvent]], at: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = TokenStore(Path(tmp)).log(SERVER)
        expected: list[LogRecord] = []
        for batch in batches:
            written = log.append(batch, at=at)
            assert list(written) == records_of(batch, len(expected) + 1, at)
            expected += written
        replay = TokenStore(Path(tmp)).log(SERVER).read()
        assert list(replay.records) == expected
        assert replay.state == fold(expected)
        assert replay.warnings == ()


class StoreAgainstModel(RuleBasedStateMachine):
    """The store against a plain list of records, across restarts, compactions and torn writes.

    The model predicts the file exactly: the records appended since the last
    compaction, or one snapshot of the fold after a compaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.token_dir = Path(self._tmp.name)
        self.model: list[LogRecord] = []
        self.in_file: list[LogRecord] = []

    @initialize(server=hostile_names, threshold=st.sampled_from([600, 4000, COMPACT_THRESHOLD_BYTES]))
    def open_store(self, server: str, threshold: int) -> None:
        self.server = server
        self.threshold = threshold
        self.store = TokenStore(self.token_dir, compact_threshold=threshold)

    def _file_size(self) -> int:
        return sum(len(encode_line(record, server=self.server)) for record in self.in_file)

    def _compacted(self) -> None:
        last = self.model[-1]
        self.in_file = [LogRecord(seq=last.seq, at=last.at, event=Snapshot(state=fold(self.model)))]

    def _appended(self, written: tuple[LogRecord, ...], batch: list[LogEvent], at: float) -> None:
        assert list(written) == records_of(batch, len(self.model) + 1, at)
        self.model += written
        self.in_file += written

    @rule(batch=st.lists(events, min_size=1, max_size=3), at=times)
    def append(self, batch: list[LogEvent], at: float) -> None:
        self._appended(self.store.log(self.server).append(batch, at=at), batch, at)
        if self._file_size() > self.threshold:
            self._compacted()

    @rule(batch=st.lists(events, min_size=1, max_size=2), at=times)
    def read_then_append_under_the_lock(self, batch: list[LogEvent], at: float) -> None:
        with self.store.log(self.server).locked(timeout=5) as locked:
            assert list(locked.read().records) == self.in_file
            self._appended(locked.append(batch, at=at), batch, at)
        if self._file_size() > self.threshold:
            self._compacted()

    @rule()
    def restart(self) -> None:
        self.store = TokenStore(self.token_dir, compact_threshold=self.threshold)
        replay = self.store.log(self.server).read()
        assert list(replay.records) == self.in_file
        assert replay.warnings == ()

    @precondition(lambda self: bool(self.model))
    @rule()
    def compact(self) -> None:
        self.store.log(self.server).compact(timeout=5)
        if len(self.in_file) > 1 or not isinstance(self.in_file[0].event, Snapshot):
            self._compacted()

    @precondition(lambda self: bool(self.model))
    @rule(garbage=st.binary(min_size=1, max_size=64).map(lambda b: b.replace(b"\n", b"")).filter(bool))
    def crash_mid_append(self, garbage: bytes) -> None:
        with self.store.log(self.server).path.open("ab") as file:
            file.write(garbage)
        replay = TokenStore(self.token_dir).log(self.server).read()
        assert len(replay.warnings) == 1
        assert "incomplete record" in replay.warnings[0]

    @invariant()
    def replay_matches_model(self) -> None:
        if hasattr(self, "store"):
            replay = self.store.log(self.server).read()
            assert list(replay.records) == self.in_file
            assert replay.state == fold(self.model)
            assert replay.state.last_seq == len(self.model)

    def teardown(self) -> None:
        self._tmp.cleanup()


TestStoreAgainstModel = StoreAgainstModel.TestCase
TestStoreAgainstModel.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)


def build_real_log(token_dir: Path) -> tuple[Path, list[LogRecord], list[int]]:
    """A log of varied events; returns its path, records and the byte offset where each ends."""
    log = TokenStore(token_dir).log(SERVER)
    batch: list[LogEvent] = [
        issued(1, size=300),
        AuthorizationStarted(reason="caf\u00e9 \u2603 needs a login"),
        RefreshFailedEvent(reason="timeout", final=False),
        issued(2),
        LoggedOut(revoked=True),
    ]
    records = list(log.append(batch, at=1.5))
    ends: list[int] = []
    offset = 0
    for record in records:
        offset += len(encode_line(record, server=SERVER))
        ends.append(offset)
    assert log.path.stat().st_size == offset
    return log.path, records, ends


def test_truncation_at_every_byte_offset_keeps_exactly_the_whole_records(tmp_path: Path) -> None:
    path, records, ends = build_real_log(tmp_path / "source")
    data = path.read_bytes()
    token_dir = tmp_path / "truncated"
    token_dir.mkdir(mode=0o700)
    target = token_dir / path.name
    for cut in range(len(data) + 1):
        target.write_bytes(data[:cut])
        os.chmod(target, 0o600)
        replay = TokenStore(token_dir).log(SERVER).read()
        whole = [record for record, end in zip(records, ends, strict=True) if end <= cut]
        assert list(replay.records) == whole, cut
        assert replay.state == fold(whole)
        torn = cut - (max((end for end in ends if end <= cut), default=0))
        assert bool(replay.warnings) == bool(torn), cut
        assert target.stat().st_size == cut - torn
    broken = token_dir / (path.name + ".broken")
    assert broken.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "tail",
    [
        b"\0" * 4096,
        b'{"v":1,"seq":6,"kind":"tokens_iss',
        b'{"v":1,"seq":6,"data":"caf\xc3',  # UTF-8 cut in the middle of a character
        b"\x9f\x00garbage\nmore garbage\n\xff",  # several bad lines, none followed by a good one
    ],
)
def test_torn_tail_is_moved_aside_and_appends_continue(tmp_path: Path, tail: bytes) -> None:
    path, records, _ = build_real_log(tmp_path)
    intact = path.read_bytes()
    with path.open("ab") as file:
        file.write(tail)
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert list(replay.records) == records
    (warning,) = replay.warnings
    assert str(path) in warning
    assert f"{len(tail)} bytes" in warning
    assert path.read_bytes() == intact
    assert (tmp_path / (path.name + ".broken")).read_bytes() == tail
    written = TokenStore(tmp_path).log(SERVER).append([issued(9)], at=2.0)
    assert [r.seq for r in written] == [len(records) + 1]


def test_append_repairs_a_torn_tail_before_writing(tmp_path: Path) -> None:
    path, _, _ = build_real_log(tmp_path)
    with path.open("ab") as file:
        file.write(b'{"v":1,"se')
    TokenStore(tmp_path).log(SERVER).append([issued(7)], at=3.0)
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert [r.seq for r in replay.records] == [1, 2, 3, 4, 5, 6]
    assert replay.warnings == ()


@pytest.mark.parametrize("how", ["flip", "splice", "sequence", "newer"])
def test_bad_middle_line_is_an_error_and_the_file_is_untouched(tmp_path: Path, how: str) -> None:
    path, records, ends = build_real_log(tmp_path)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[ends[0] + 5] ^= 0x01
    elif how == "splice":
        data[ends[1] : ends[1]] = b'{"v":1,"seq":3,"at":1\n'
    elif how == "sequence":
        data[ends[1] : ends[2]] = encode_line(LogRecord(seq=9, at=1.5, event=records[2].event), server=SERVER)
    else:
        body = json.dumps({**encode_record(records[1], server=SERVER), "v": 99}, separators=(",", ":"))
        data[ends[0] : ends[1]] = body.encode()[:-1] + b',"crc":"%08x"}\n' % zlib.crc32(body.encode())
    path.write_bytes(bytes(data))
    before = sorted(os.listdir(tmp_path))
    expected_error = UnsupportedLogVersion if how == "newer" else CorruptLogError
    for attempt in (
        lambda: TokenStore(tmp_path).log(SERVER).read(),
        lambda: TokenStore(tmp_path).log(SERVER).append([issued(8)], at=4.0),
        lambda: TokenStore(tmp_path).log(SERVER).compact(),
    ):
        with pytest.raises(expected_error) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message
        assert SERVER in message
        assert "line 2" in message or "line 3" in message
        assert SECRET_MARK not in message
        assert "at-1" not in message
        if how != "newer":
            assert isinstance(caught.value, CorruptLogError)
            assert caught.value.line in {2, 3}
            assert "left unchanged" in message
    assert path.read_bytes() == bytes(data)
    assert sorted(os.listdir(tmp_path)) == before


def test_compaction_happens_past_the_threshold_and_keeps_the_state(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, compact_threshold=2000)
    log = store.log(SERVER)
    expected: list[LogRecord] = []
    for index in range(40):
        expected += log.append([issued(index, size=200)], at=float(index))
        assert log.path.stat().st_size <= 2000 + 600
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert replay.state == fold(expected)
    assert isinstance(replay.records[0].event, Snapshot)
    assert replay.records[-1].seq == 40
    assert not any(p.name.endswith(".compact-tmp") for p in tmp_path.iterdir())


def test_compaction_replaces_a_leftover_temporary_file(tmp_path: Path) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    log.append([issued(1), issued(2)], at=1.0)
    leftover = log.path.with_name(log.path.name + ".compact-tmp")
    leftover.write_bytes(b"half a snapshot")
    log.compact()
    assert not leftover.exists()
    (record,) = TokenStore(tmp_path).log(SERVER).read().records
    assert record.seq == 2
    assert isinstance(record.event, Snapshot)


def test_lock_timeout_names_the_server_and_what_to_do(tmp_path: Path) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with log.locked():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=r"server 'notion': waited 0\.2 s .* Retry later"):
            TokenStore(tmp_path).log(SERVER).append([issued(1)], at=1.0, timeout=0.2)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join(10)
    assert TokenStore(tmp_path).log(SERVER).append([issued(1)], at=1.0, timeout=5)[0].seq == 1


def test_locked_handle_works_only_inside_its_block(tmp_path: Path) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    with log.locked() as locked:
        locked.append([issued(1)], at=1.0)
        assert log.append([issued(2)], at=1.0)[0].seq == 2  # re-entrant in the same thread
        assert locked.read().state.last_seq == 2
    with pytest.raises(RuntimeError, match="released"):
        locked.read()


def test_fsync_failure_is_reported_and_nothing_is_assumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = TokenStore(tmp_path).log(SERVER)
    log.append([issued(1)], at=1.0)

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(TokenLogError, match=r"server 'notion': could not append .*Input/output error"):
        log.append([issued(2)], at=2.0)
    monkeypatch.undo()
    assert log.read().state.last_seq == 2  # the bytes reached the file; they are re-read, not assumed


def test_secrets_stay_out_of_reprs_and_errors(tmp_path: Path) -> None:
    secret_tokens = TokenSet(access_token="AT-SeCrEt", refresh_token="RT-SeCrEt", issued_at=1.0)
    store = TokenStore(tmp_path)
    log = store.log(SERVER)
    log.append([TokensIssued(tokens=secret_tokens, grant="authorization_code")], at=1.0)
    replay = log.read()
    assert replay.state.tokens is not None
    assert replay.state.tokens.access_token == "AT-SeCrEt"
    for text in (repr(replay), str(replay), repr(store), repr(log), repr(replay.state)):
        assert SECRET_MARK not in text
    data = bytearray(log.path.read_bytes())
    data[data.index(b"AT-SeCrEt") + 3] ^= 0x20
    log.path.write_bytes(bytes(data) + encode_line(LogRecord(seq=2, at=1.0, event=issued(2)), server=SERVER))
    with pytest.raises(CorruptLogError) as caught:
        TokenStore(tmp_path).log(SERVER).read()
    assert SECRET_MARK not in str(caught.value)
    assert "AT-seCrEt" not in str(caught.value)
    assert "checksum" in str(caught.value)
