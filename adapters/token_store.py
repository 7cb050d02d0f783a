"""The per-server token log on disk: append, replay, repair, compaction, locking.

Theory of operation (``specs/token-log.md`` is the reference):

* One JSON Lines file per server, ``<token dir>/<slug>-<hash>.jsonl``
  (:mod:`mcp_tether.adapters.filenames`), one record per line in the format of
  :mod:`mcp_tether.statemachine.logcodec`. The token state is the fold of the
  records (:func:`mcp_tether.statemachine.tokenlog.fold`).
* Every change happens under the server's cross-process lock
  (``<slug>-<hash>.lock``, :mod:`filelock`): re-read the file (only the bytes
  added since this process last looked), repair a torn tail, number the new
  records after the last one, write each line with one ``os.write`` to a file
  opened ``O_APPEND``, ``fsync``, release. A caller that must decide on fresh
  state (the refresh and browser protocols) holds the lock across
  read-decide-act-append with :meth:`ServerLog.locked`.
* Reading takes no lock when the file is intact. A final line without its
  newline or failing its checksum may be an append in progress, so such a read
  retries under the lock, where it is a torn write for certain: the torn bytes
  are appended to ``<stem>.jsonl.broken``, the log is truncated to its last
  whole record, and the replay says so in ``warnings``. A bad line followed by
  a good one is corruption, never a torn write: :class:`CorruptLogError`
  names the line and the file is not touched.
* Compaction writes one :class:`~mcp_tether.statemachine.tokenlog.Snapshot`
  record (carrying the last sequence number, so the fold is unchanged) to
  ``<stem>.jsonl.compact-tmp``, fsyncs it, renames it over the log and fsyncs
  the directory. It runs by itself after an append leaves the file larger than
  ``compact_threshold`` bytes (:data:`COMPACT_THRESHOLD_BYTES` by default).
* Files are opened relative to a descriptor of the token directory, never
  following symbolic links, and checked to be regular files owned by this
  user. The directory is created 0700, files 0600, whatever the umask; a
  directory or file owned by another user is refused (:class:`UnsafeTokenPath`).
* A server with no log but the original tool's ``<server>.json`` next to it is
  imported on first use (:func:`~mcp_tether.statemachine.logcodec.decode_legacy`);
  the legacy file is only read.

POSIX only (``O_NOFOLLOW``, ``dir_fd``). Calls block (disk, lock): async code
runs them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from mcp_tether.adapters.filenames import (
    DEFAULT_TOKEN_DIR,
    LOG_SUFFIX,
    TOKEN_DIR_ENV,
    legacy_file_name,
    log_file_stem,
    token_directory,
)
from mcp_tether.statemachine.logcodec import (
    DecodeError,
    LineError,
    decode_legacy,
    encode_line,
    scan_lines,
)
from mcp_tether.statemachine.tokenlog import (
    LegacyImported,
    LogEvent,
    LogRecord,
    SequenceError,
    Snapshot,
    TokensIssued,
    apply,
)
from mcp_tether.statemachine.tokens import TokenState

if TYPE_CHECKING:
    import filelock

__all__ = [
    "COMPACT_THRESHOLD_BYTES",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_TOKEN_DIR",
    "TOKEN_DIR_ENV",
    "CorruptLogError",
    "LockTimeout",
    "LockedLog",
    "Replay",
    "ServerLog",
    "TokenLogError",
    "TokenStore",
    "UnsafeTokenPath",
    "UnsupportedLogVersion",
]

_log = logging.getLogger(__name__)

#: A log larger than this after an append is compacted to one snapshot record.
COMPACT_THRESHOLD_BYTES: Final = 256 * 1024
#: Seconds a caller waits for another process's refresh or authorization.
DEFAULT_LOCK_TIMEOUT: Final = 30.0

_BROKEN_SUFFIX: Final = ".broken"
_COMPACT_SUFFIX: Final = ".compact-tmp"
_LOCK_SUFFIX: Final = ".lock"
_LEGACY_MAX_BYTES: Final = 1 << 20
#: Seconds between attempts on a held lock (a refresh hands over within a few milliseconds).
_LOCK_POLL: Final = 0.005
_READ_CHUNK: Final = 1 << 22
_NOFOLLOW: Final = os.O_NOFOLLOW | os.O_CLOEXEC
#: Opening must not block on a FIFO planted where a file is expected.
_OPEN_EXISTING: Final = _NOFOLLOW | os.O_NONBLOCK


class TokenLogError(Exception):
    """A token log could not be read or written. ``path`` is the file or directory at fault."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class CorruptLogError(TokenLogError):
    """A line that is not the last one is not a valid record; the file was left unchanged."""

    def __init__(self, message: str, *, path: Path, line: int) -> None:
        super().__init__(message, path=path)
        self.line = line


class UnsupportedLogVersion(TokenLogError):
    """The log was written by a newer mcp-tether; this one refuses to guess."""


class UnsafeTokenPath(TokenLogError):
    """A symbolic link, a non-regular file or another user's file is where a token file belongs."""


class LockTimeout(TokenLogError):
    """Another process held the server's token-log lock longer than the caller waits."""


@attrs.frozen(kw_only=True)
class Replay:
    """What reading a server's log found."""

    #: The log file (it may not exist yet).
    path: Path
    #: Every record in the file, in order (a compacted log starts with a snapshot).
    records: tuple[LogRecord, ...]
    #: The fold of ``records``.
    state: TokenState
    #: Things the user should know: a torn tail moved aside, a legacy import done or refused.
    warnings: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class _Scan:
    """The valid prefix of one log file as last read by this process."""

    dev: int
    ino: int
    #: Bytes of whole, valid records from the start of the file.
    end: int
    records: tuple[LogRecord, ...]
    state: TokenState
    #: The last valid line with its newline (to recognise the same file again).
    last_line: bytes
    #: Bytes after ``end`` when it was read (a torn tail, or an append in progress).
    tail: int = 0


def _check_owner(st: os.stat_result, path: Path, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafeTokenPath(
            f"{path}: {what} belongs to user id {st.st_uid}, not to this user ({os.geteuid()}); "
            "mcp-tether refuses token files another user controls. Fix the owner or choose another "
            f"token directory (${TOKEN_DIR_ENV}).",
            path=path,
        )


def _read_from(fd: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    for _ in range(1 << 20):  # bounded: 4 TiB at 4 MiB a chunk
        chunk = os.pread(fd, _READ_CHUNK, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ServerLog:
    """One server's token log. Obtain it from :meth:`TokenStore.log`; creating it does no IO.

    Safe to share between threads: the file lock excludes other threads and
    processes, an internal mutex guards this object's view of the file.
    """

    def __init__(self, *, token_dir: Path, server: str, compact_threshold: int) -> None:
        self.server: Final = server
        self.token_dir: Final = token_dir
        stem = log_file_stem(server)
        self._name = stem + LOG_SUFFIX
        #: The log file.
        self.path: Final = token_dir / self._name
        self._legacy_name = legacy_file_name(server)
        self._compact_threshold = compact_threshold
        self._lock_path = token_dir / (stem + _LOCK_SUFFIX)
        # Made (and filelock imported) on first use: a lazy server never locks.
        self._lock: filelock.FileLock | None = None
        self._lock_made = threading.Lock()
        self._mutex = threading.Lock()
        self._cache: _Scan | None = None

    def __repr__(self) -> str:
        return f"<ServerLog {self.server!r} at {str(self.path)!r}>"

    # --- public API ---------------------------------------------------------

    def read(self) -> Replay:
        """Replay the log.

        Takes no lock and creates nothing when the log is missing or intact. A
        torn tail, or a legacy file waiting to be imported, is handled under
        the lock (see :meth:`LockedLog.read`).

        Returns:
            The records, their fold and any warnings. A server without a log
            (and without a legacy file) gives an empty replay.

        Raises:
            CorruptLogError: a line in the middle is damaged (the file is left unchanged).
            UnsupportedLogVersion: a newer mcp-tether wrote the log.
            UnsafeTokenPath: a symbolic link, non-regular file or foreign owner is in the way.
            LockTimeout: the log needed repair or import and another process held the lock.
            TokenLogError: any other IO failure (the message names the file).
        """
        with self._mutex, self._io("read"):
            dir_fd = self._open_dir(create=False)
            if dir_fd is None:
                return self._empty()
            try:
                fd = self._open_log(dir_fd, writable=False)
                if fd is None:
                    if not self._legacy_present(dir_fd):
                        return self._empty()
                else:
                    try:
                        scan = self._scan(fd)
                    finally:
                        os.close(fd)
                    if scan.tail == 0 and not (scan.end == 0 and self._legacy_present(dir_fd)):
                        return Replay(path=self.path, records=scan.records, state=scan.state)
            finally:
                os.close(dir_fd)
        with self.locked() as locked:
            return locked.read()

    def append(
        self, events: Sequence[LogEvent], *, at: float, timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> tuple[LogRecord, ...]:
        """Append events durably, taking the lock unless this thread already holds it.

        Args:
            events: the events, written in order (nothing happens when empty).
            at: wall-clock time of the append, stored in each record.
            timeout: seconds to wait for the lock.

        Returns:
            The records written, numbered after the last record in the file.
            They are on disk (fsynced) when this returns.

        Raises:
            LockTimeout: another process held the lock for ``timeout`` seconds.
            TokenLogError: the log could not be read, written or synced (see :meth:`read`).
        """
        if not events:
            return ()
        with self.locked(timeout) as locked:
            return locked.append(events, at=at)

    def compact(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        """Replace the log by one snapshot record of its state, atomically, under the lock.

        Args:
            timeout: seconds to wait for the lock.

        Raises:
            LockTimeout: another process held the lock for ``timeout`` seconds.
            TokenLogError: see :meth:`read`.
        """
        with self.locked(timeout) as locked:
            locked.compact()

    @contextlib.contextmanager
    def locked(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[LockedLog]:
        """Hold the server's cross-process lock: read, decide, act, append, release.

        Creates the token directory (0700) and the lock file (0600) if needed.
        Re-entrant within a thread.

        Args:
            timeout: seconds to wait for another holder (thread or process).

        Yields:
            A handle whose ``read``/``append``/``compact`` run without re-locking.

        Raises:
            LockTimeout: the lock was not free within ``timeout`` seconds.
            UnsafeTokenPath: the directory or lock file is a symbolic link or not ours.
        """
        with self._io("lock"):
            dir_fd = self._open_dir(create=True)
            assert dir_fd is not None
            os.close(dir_fd)
        import filelock

        with self._lock_made:
            if self._lock is None:
                self._lock = filelock.FileLock(self._lock_path, mode=0o600, poll_interval=_LOCK_POLL)
            lock = self._lock
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise LockTimeout(
                f"server {self.server!r}: waited {timeout:g} s for the token-log lock {self._lock_path} "
                "without getting it; another mcp-tether process is refreshing or authorizing this "
                "server. Retry later, or stop the process that holds it.",
                path=self._lock_path,
            ) from None
        except OSError as error:
            raise self._os_error(error, self._lock_path, "lock") from None
        handle = LockedLog(self)
        try:
            yield handle
        finally:
            handle._open = False
            lock.release()

    # --- under the lock -----------------------------------------------------

    def _read_locked(self) -> Replay:
        with self._mutex, self._io("read"), self._dir() as dir_fd:
            fd, scan, warnings = self._prepare(dir_fd, create=False)
            if fd is not None:
                os.close(fd)
            return Replay(path=self.path, records=scan.records, state=scan.state, warnings=tuple(warnings))

    def _append_locked(self, events: Sequence[LogEvent], at: float) -> tuple[LogRecord, ...]:
        if not events:
            return ()
        with self._mutex, self._io("append"), self._dir() as dir_fd:
            fd, scan, warnings = self._prepare(dir_fd, create=True)
            assert fd is not None
            try:
                for warning in warnings:
                    _log.warning("%s", warning)
                scan, written = self._write(fd, scan, events, at)
                if scan.end > self._compact_threshold:
                    self._replace_with_snapshot(dir_fd, scan)
                return written
            finally:
                os.close(fd)

    def _compact_locked(self) -> None:
        with self._mutex, self._io("compact"), self._dir() as dir_fd:
            fd, scan, _ = self._prepare(dir_fd, create=False)
            if fd is None:
                return
            os.close(fd)
            already = len(scan.records) == 1 and isinstance(scan.records[0].event, Snapshot)
            if scan.records and not already:
                self._replace_with_snapshot(dir_fd, scan)

    def _prepare(self, dir_fd: int, *, create: bool) -> tuple[int | None, _Scan, list[str]]:
        """Open the log for appending, repair a torn tail, import a legacy file into an empty log."""
        warnings: list[str] = []
        fd = self._open_log(dir_fd, writable=True)
        legacy: tuple[LogEvent, ...] = ()
        if fd is None or os.fstat(fd).st_size == 0:
            legacy, legacy_warnings = self._load_legacy(dir_fd)
            warnings += legacy_warnings
        if fd is None and (create or legacy):
            fd = self._create_log(dir_fd)
        if fd is None:
            return None, self._empty_scan(), warnings
        try:
            scan = self._scan(fd)
            if scan.tail:
                scan = self._move_tail_aside(dir_fd, fd, scan)
                warnings.append(
                    f"server {self.server!r}: the token log {self.path} ended in an incomplete record "
                    f"({scan.tail} bytes, left by a crash during an append); kept the "
                    f"{len(scan.records)} whole records and moved the torn bytes to "
                    f"{self.path}{_BROKEN_SUFFIX}"
                )
                scan = attrs.evolve(scan, tail=0)
            if legacy and scan.end == 0:
                scan, _ = self._write(fd, scan, legacy, time.time())
                warnings.append(self._describe_import(legacy))
        except BaseException:
            os.close(fd)
            raise
        return fd, scan, warnings

    def _write(
        self, fd: int, scan: _Scan, events: Sequence[LogEvent], at: float
    ) -> tuple[_Scan, tuple[LogRecord, ...]]:
        state = scan.state
        records: list[LogRecord] = []
        lines: list[bytes] = []
        for event in events:
            record = LogRecord(seq=state.last_seq + 1, at=at, event=event)
            try:
                lines.append(encode_line(record, server=self.server))
            except ValueError:
                raise TokenLogError(
                    f"server {self.server!r}: an event for {self.path} holds a time that is not a "
                    "finite number and cannot be stored; nothing was written (this is a bug in the caller).",
                    path=self.path,
                ) from None
            state = apply(state, record)
            records.append(record)
        self._cache = None  # until the lines are durable
        for line in lines:
            _write_all(fd, line)
        os.fsync(fd)
        updated = attrs.evolve(
            scan,
            end=scan.end + sum(map(len, lines)),
            records=scan.records + tuple(records),
            state=state,
            last_line=lines[-1],
        )
        self._cache = updated
        return updated, tuple(records)

    def _replace_with_snapshot(self, dir_fd: int, scan: _Scan) -> None:
        snapshot = LogRecord(
            seq=scan.state.last_seq, at=scan.records[-1].at, event=Snapshot(state=scan.state)
        )
        line = encode_line(snapshot, server=self.server)
        tmp = self._name + _COMPACT_SUFFIX
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)  # left by a crash during an earlier compaction
        fd = self._create(dir_fd, tmp, os.O_WRONLY)
        try:
            _write_all(fd, line)
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._cache = None
        os.replace(tmp, self._name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
        self._cache = _Scan(
            dev=st.st_dev,
            ino=st.st_ino,
            end=len(line),
            records=(snapshot,),
            state=apply(TokenState(), snapshot),
            last_line=line,
        )

    def _move_tail_aside(self, dir_fd: int, fd: int, scan: _Scan) -> _Scan:
        torn = _read_from(fd, scan.end)
        broken = self._open_in(dir_fd, self._name + _BROKEN_SUFFIX, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            self._check_file(broken, self.path.with_name(self._name + _BROKEN_SUFFIX), tighten=True)
            _write_all(broken, torn)
            os.fsync(broken)
        finally:
            os.close(broken)
        os.ftruncate(fd, scan.end)
        os.fsync(fd)
        return attrs.evolve(scan, tail=len(torn))

    # --- reading and parsing ------------------------------------------------

    def _scan(self, fd: int) -> _Scan:
        """The valid prefix of the open log, reusing what this process already parsed."""
        st = os.fstat(fd)
        cache = self._cache
        if (
            cache is not None
            and (cache.dev, cache.ino) == (st.st_dev, st.st_ino)
            and st.st_size >= cache.end
            and os.pread(fd, len(cache.last_line), cache.end - len(cache.last_line)) == cache.last_line
        ):
            base = cache
        else:
            base = self._empty_scan(st)
        data = _read_from(fd, base.end)
        scan = self._parse(data, base)
        self._cache = attrs.evolve(scan, tail=0)
        return scan

    def _parse(self, data: bytes, base: _Scan) -> _Scan:
        try:
            scan = scan_lines(data, server=self.server, first_line=len(base.records) + 1)
        except LineError as error:
            if error.newer_version:
                raise UnsupportedLogVersion(
                    f"server {self.server!r}: line {error.line} of the token log {self.path} was written by a "
                    f"newer mcp-tether ({error.reason}); upgrade mcp-tether to use this log. The file was left "
                    "unchanged.",
                    path=self.path,
                ) from None
            raise self._corrupt(error.line, error.reason) from None
        state = base.state
        for record, line in zip(scan.records, scan.line_numbers, strict=True):
            try:
                state = apply(state, record)
            except SequenceError as error:
                raise self._corrupt(line, str(error)) from None
        return attrs.evolve(
            base,
            end=base.end + scan.valid_end,
            records=base.records + scan.records,
            state=state,
            last_line=scan.last_line or base.last_line,
            tail=len(data) - scan.valid_end,
        )

    def _corrupt(self, line: int, reason: str) -> CorruptLogError:
        return CorruptLogError(
            f"server {self.server!r}: line {line} of the token log {self.path} is damaged ({reason}) and "
            "later lines are intact, so it is not a torn write; the file was left unchanged. Restore it "
            "from a backup, or move it aside to start over (the server will ask for a new login).",
            path=self.path,
            line=line,
        )

    # --- legacy import ------------------------------------------------------

    def _legacy_present(self, dir_fd: int) -> bool:
        if self._legacy_name is None:
            return False
        try:
            os.stat(self._legacy_name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _load_legacy(self, dir_fd: int) -> tuple[tuple[LogEvent, ...], list[str]]:
        """The events of the legacy file, or none and a warning saying why not."""
        if self._legacy_name is None:
            return (), []
        path = self.token_dir / self._legacy_name
        refused = f"server {self.server!r}: did not import the original tool's token file {path}: "
        advice = "; the server will ask for a new login (the file was left unchanged)"
        try:
            fd = os.open(self._legacy_name, os.O_RDONLY | _OPEN_EXISTING, dir_fd=dir_fd)
        except FileNotFoundError:
            return (), []
        except OSError as error:
            if error.errno == errno.ELOOP:
                return (), [refused + "it is a symbolic link" + advice]
            return (), [refused + (error.strerror or "cannot open it") + advice]
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return (), [refused + "it is not a regular file" + advice]
            if st.st_uid != os.geteuid():
                return (), [refused + f"it belongs to user id {st.st_uid}" + advice]
            if st.st_size > _LEGACY_MAX_BYTES:
                return (), [refused + "it is larger than 1 MiB" + advice]
            data = _read_from(fd, 0)
        finally:
            os.close(fd)
        try:
            document = json.loads(data)
        except ValueError:
            return (), [refused + "it is not valid JSON" + advice]
        try:
            events = decode_legacy(document, source=self._legacy_name, imported_at=time.time())
        except DecodeError as error:
            return (), [refused + str(error) + advice]
        return events, []

    def _describe_import(self, events: Sequence[LogEvent]) -> str:
        path = self.token_dir / str(self._legacy_name)
        tokens = [event.tokens for event in events if isinstance(event, TokensIssued)]
        marker = events[0]
        assert isinstance(marker, LegacyImported)
        if not tokens:
            what = "a client registration (no tokens)"
        elif marker.had_issued_at:
            what = "tokens with their issue time"
        else:
            what = (
                "tokens without an issue time (tokensIssuedAt missing): their expiry is unknown, so the "
                "access token is used until the server rejects it and then refreshed"
            )
        return (
            f"server {self.server!r}: imported {what} from the original tool's token file {path} into "
            f"{self.path}; the old file was left in place and is no longer read"
        )

    # --- files and directories ----------------------------------------------

    def _empty(self) -> Replay:
        return Replay(path=self.path, records=(), state=TokenState())

    @staticmethod
    def _empty_scan(st: os.stat_result | None = None) -> _Scan:
        return _Scan(
            dev=st.st_dev if st else 0,
            ino=st.st_ino if st else 0,
            end=0,
            records=(),
            state=TokenState(),
            last_line=b"",
        )

    @contextlib.contextmanager
    def _dir(self) -> Iterator[int]:
        dir_fd = self._open_dir(create=True)
        assert dir_fd is not None
        try:
            yield dir_fd
        finally:
            os.close(dir_fd)

    def _open_dir(self, *, create: bool) -> int | None:
        """Open the token directory without following a link; create it 0700 if asked."""
        path = self.token_dir
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        except FileNotFoundError:
            if create:
                raise
            return None
        except OSError as error:
            if error.errno in {errno.ELOOP, errno.ENOTDIR}:
                raise UnsafeTokenPath(
                    f"{path}: the token directory is a symbolic link or not a directory; mcp-tether never "
                    f"follows links to token files. Point ${TOKEN_DIR_ENV} at the real directory.",
                    path=path,
                ) from None
            raise
        try:
            st = os.fstat(dir_fd)
            _check_owner(st, path, "the token directory")
            if create and stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(dir_fd, 0o700)
        except BaseException:
            os.close(dir_fd)
            raise
        return dir_fd

    def _open_in(self, dir_fd: int, name: str, flags: int) -> int:
        try:
            return os.open(name, flags | _OPEN_EXISTING, 0o600, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafeTokenPath(
                    f"server {self.server!r}: {self.token_dir / name} is a symbolic link; mcp-tether never "
                    "follows links to token files. Remove the link (its target was not touched).",
                    path=self.token_dir / name,
                ) from None
            raise

    def _check_file(self, fd: int, path: Path, *, tighten: bool) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeTokenPath(
                f"server {self.server!r}: {path} is not a regular file; move it out of the token directory.",
                path=path,
            )
        _check_owner(st, path, "the file")
        if tighten and stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)

    def _open_log(self, dir_fd: int, *, writable: bool) -> int | None:
        flags = os.O_RDWR | os.O_APPEND if writable else os.O_RDONLY
        try:
            fd = self._open_in(dir_fd, self._name, flags)
        except FileNotFoundError:
            return None
        try:
            self._check_file(fd, self.path, tighten=writable)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(self, dir_fd: int, name: str, flags: int) -> int:
        fd = self._open_in(dir_fd, name, flags | os.O_CREAT | os.O_EXCL)
        try:
            os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_log(self, dir_fd: int) -> int:
        try:
            fd = self._create(dir_fd, self._name, os.O_RDWR | os.O_APPEND)
        except FileExistsError:  # created by a process that does not take the lock
            existing = self._open_log(dir_fd, writable=True)
            assert existing is not None
            return existing
        os.fsync(dir_fd)
        return fd

    def _os_error(self, error: OSError, path: Path, action: str) -> TokenLogError:
        if error.errno == errno.ELOOP:
            return UnsafeTokenPath(
                f"server {self.server!r}: {path} is a symbolic link; mcp-tether never follows links to "
                "token files. Remove the link (its target was not touched).",
                path=path,
            )
        return TokenLogError(
            f"server {self.server!r}: could not {action} the token log {self.path}: "
            f"{error.strerror or type(error).__name__}. Check the disk and the permissions of "
            f"{self.token_dir}.",
            path=Path(error.filename) if isinstance(error.filename, str) else self.path,
        )

    @contextlib.contextmanager
    def _io(self, action: str) -> Iterator[None]:
        """Turn a raw OSError into a TokenLogError naming the server and file; forget the cache."""
        try:
            yield
        except TokenLogError:
            raise
        except OSError as error:
            self._cache = None
            raise self._os_error(error, self.path, action) from None


class LockedLog:
    """A server's log while this thread holds its lock (from :meth:`ServerLog.locked`).

    Its methods work only inside the ``with`` block.
    """

    def __init__(self, log: ServerLog) -> None:
        self._log = log
        self._open = True

    def __repr__(self) -> str:
        return f"<LockedLog {self._log.server!r}{'' if self._open else ' (released)'}>"

    def _check(self) -> ServerLog:
        if not self._open:
            raise RuntimeError(
                f"server {self._log.server!r}: the token-log lock was released; use the handle only "
                "inside its 'with log.locked()' block"
            )
        return self._log

    def read(self) -> Replay:
        """Replay the log, repairing a torn tail and importing a legacy file if needed.

        Returns:
            The records, their fold and warnings (torn tail moved aside, legacy import).

        Raises:
            CorruptLogError: a line in the middle is damaged (the file is left unchanged).
            UnsupportedLogVersion: a newer mcp-tether wrote the log.
            UnsafeTokenPath: a symbolic link, non-regular file or foreign owner is in the way.
            TokenLogError: any other IO failure.
        """
        return self._check()._read_locked()

    def append(self, events: Sequence[LogEvent], *, at: float) -> tuple[LogRecord, ...]:
        """Append events durably (see :meth:`ServerLog.append`), without re-locking.

        Args:
            events: the events, in order.
            at: wall-clock time of the append.

        Returns:
            The records written, fsynced.

        Raises:
            TokenLogError: see :meth:`read`.
        """
        return self._check()._append_locked(events, at)

    def compact(self) -> None:
        """Replace the log by one snapshot record (see :meth:`ServerLog.compact`).

        Raises:
            TokenLogError: see :meth:`read`.
        """
        self._check()._compact_locked()


class TokenStore:
    """The token directory: one :class:`ServerLog` per server name.

    Args:
        token_dir: the directory; None means ``$MCP_TETHER_TOKEN_DIR`` if set,
            else ``~/.claude/mcp-tokens``. It is created (0700) on the first
            write, never by the constructor or a read.
        compact_threshold: size in bytes past which an append compacts the log.
    """

    def __init__(
        self, token_dir: Path | None = None, *, compact_threshold: int = COMPACT_THRESHOLD_BYTES
    ) -> None:
        self.token_dir: Final = token_directory(token_dir)
        self._compact_threshold = compact_threshold
        self._logs: dict[str, ServerLog] = {}
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenStore {str(self.token_dir)!r}>"

    def log(self, server_name: str) -> ServerLog:
        """The log of one server (the same object for the same name; no IO).

        Args:
            server_name: the configured server name, exactly as written.

        Returns:
            The server's log.
        """
        with self._mutex:
            log = self._logs.get(server_name)
            if log is None:
                log = ServerLog(
                    token_dir=self.token_dir, server=server_name, compact_threshold=self._compact_threshold
                )
                self._logs[server_name] = log
            return log
