"""A server's token log as a timeline a person can read, without touching the log.

:func:`read_log_file` parses a log file read-only. It is deliberately more
tolerant than :class:`~mcp_tether.adapters.token_store.ServerLog` (which repairs
a torn tail under the lock and refuses a sequence gap): a debugging tool must
show what is there and say what is wrong, so a torn tail, a gap in the
sequence numbers and a clock that went backwards become warnings. A damaged
line in the middle is still an error (:class:`LogFileError`): what follows it
cannot be trusted, and nothing is modified either way.

:func:`build_timeline` folds the records into :class:`TimelineEntry` values:
each event with the token state after it (judged at the event's own time),
when the access token was due to expire and when its refresh window opened,
the outcome of every refresh, and the reason for every browser authorization.
Between two events it inserts :class:`TimelineMark` values for the moments a
refresh window opened or a token expired with nothing logged.

:func:`timeline_json` and :func:`timeline_text` render it; every secret is
replaced by a short fingerprint (:func:`~mcp_tether.statemachine.logcodec.redact_record`),
so the output can be pasted into a bug report.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import attrs

from mcp_tether.statemachine.commands import AuthorizationReason
from mcp_tether.statemachine.logcodec import (
    JsonObject,
    LineError,
    redact_record,
    scan_lines,
)
from mcp_tether.statemachine.tokenlog import (
    AuthorizationFailedEvent,
    AuthorizationStarted,
    ClientInvalidated,
    ClientRegistered,
    DiscoveryRecorded,
    LegacyImported,
    LoggedOut,
    LogRecord,
    RefreshFailedEvent,
    Snapshot,
    TokensIssued,
    apply,
)
from mcp_tether.statemachine.tokens import DEFAULT_REFRESH_BUFFER, Freshness, TokenState

__all__ = [
    "MAX_LOG_BYTES",
    "LogFile",
    "LogFileError",
    "Timeline",
    "TimelineEntry",
    "TimelineMark",
    "TokenStatus",
    "build_timeline",
    "condition_style",
    "describe_tokens",
    "format_duration",
    "format_time",
    "read_log_file",
    "timeline_json",
    "timeline_text",
]

#: Largest file :func:`read_log_file` reads (a log compacts itself at 256 KiB).
MAX_LOG_BYTES: Final = 64 * 1024 * 1024


class LogFileError(Exception):
    """A log file cannot be replayed; the message names the file, the problem and what to do."""

    def __init__(self, message: str, *, path: Path, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


@attrs.frozen(kw_only=True)
class LogFile:
    """What a read-only parse of one log file found."""

    path: Path
    #: The server the records belong to (from the records themselves), None for an empty file.
    server: str | None
    records: tuple[LogRecord, ...]
    #: 1-based line number of each record.
    lines: tuple[int, ...]
    #: Bytes after the last whole record (a torn append), 0 when the file ends cleanly.
    torn_bytes: int = 0


@attrs.frozen(kw_only=True)
class TokenStatus:
    """A token state judged at one instant, for people (``text``) and tools (``condition``)."""

    #: ``none``, ``logged_out``, ``valid``, ``expiring``, ``expired_refreshable`` or ``needs_browser``.
    condition: str
    text: str
    expires_at: float | None = None
    refresh_at: float | None = None


@attrs.frozen(kw_only=True)
class TimelineEntry:
    """One record of the log, explained."""

    seq: int
    at: float
    line: int
    kind: str
    #: The record's data with every secret replaced by a fingerprint.
    data: JsonObject
    #: What happened, in words (the refresh outcome, the authorization reason, ...).
    summary: str
    #: The token state after this record, judged at the record's time.
    status: TokenStatus


@attrs.frozen(kw_only=True)
class TimelineMark:
    """A moment between records: a refresh window opened or an access token expired."""

    at: float
    what: str


@attrs.frozen(kw_only=True)
class Timeline:
    """A whole log, explained, with what is wrong with it."""

    path: Path
    server: str | None
    items: tuple[TimelineEntry | TimelineMark, ...]
    #: The fold of all records.
    state: TokenState
    #: The final state judged at ``now``.
    now: float
    current: TokenStatus
    warnings: tuple[str, ...]
    refresh_buffer: float


# --- reading ----------------------------------------------------------------------


def _server_of(line: bytes) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    server = obj.get("server") if isinstance(obj, dict) else None
    return server if isinstance(server, str) else None


def read_log_file(path: Path, *, server: str | None = None) -> LogFile:
    """Parse a token log file without modifying it, taking no lock.

    Args:
        path: the ``.jsonl`` file.
        server: the server the log must belong to; None takes it from the first intact record.

    Returns:
        The whole records in file order and the size of a torn tail, if any.

    Raises:
        LogFileError: the file is missing, not a regular file, too large, unreadable,
            written by a newer mcp-tether, or damaged before its last record.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LogFileError(f"{path}: no such file; check the path (token logs end in .jsonl)", path=path) from None
    except OSError as error:
        raise LogFileError(f"{path}: cannot read it ({error.strerror}); check its permissions", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        raise LogFileError(f"{path}: not a regular file; give the path of a token log (.jsonl)", path=path)
    if st.st_size > MAX_LOG_BYTES:
        raise LogFileError(
            f"{path}: {st.st_size} bytes is far larger than any token log (they compact themselves at "
            "256 KiB); is this the right file?",
            path=path,
        )
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_LOG_BYTES + 1)
    except OSError as error:
        raise LogFileError(f"{path}: cannot read it ({error.strerror}); check its permissions", path=path) from None
    if server is None:
        server = next((name for name in map(_server_of, data.split(b"\n")[:-1]) if name is not None), None)
    if server is None:  # no intact record names its server: everything is a torn tail
        return LogFile(path=path, server=None, records=(), lines=(), torn_bytes=len(data))
    try:
        scan = scan_lines(data, server=server)
    except LineError as error:
        if error.newer_version:
            raise LogFileError(
                f"{path}: line {error.line} was written by a newer mcp-tether ({error.reason}); upgrade "
                "mcp-tether to replay this log. The file was not modified.",
                path=path,
                line=error.line,
            ) from None
        raise LogFileError(
            f"{path}: line {error.line} is damaged ({error.reason}) and is not the end of the file, so it is not "
            "a torn write; the file was not modified. Restore it from a backup, or move it aside to start over "
            "(the server will then ask for a new login).",
            path=path,
            line=error.line,
        ) from None
    return LogFile(
        path=path,
        server=server,
        records=scan.records,
        lines=scan.line_numbers,
        torn_bytes=len(data) - scan.valid_end,
    )


# --- explaining ---------------------------------------------------------------------


def format_time(at: float) -> str:
    """``2026-01-01T00:00:00Z`` (UTC, whole seconds), or the raw number when out of range."""
    try:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{at!r}"


def format_duration(seconds: float) -> str:
    """A short human duration: ``45 s``, ``5 min``, ``1 h 30 min``, ``2 d 3 h``."""
    seconds = round(abs(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def describe_tokens(state: TokenState, now: float, refresh_buffer: float = DEFAULT_REFRESH_BUFFER) -> TokenStatus:
    """Judge a token state at ``now`` in the words ``status`` and ``replay`` use.

    Args:
        state: the fold of a server's log.
        now: wall-clock seconds.
        refresh_buffer: seconds before expiry that the refresh window opens.

    Returns:
        The condition (none / logged out / valid until T / expiring / expired with
        a refresh token / needs browser) and a sentence saying what the next call does.
    """
    tokens = state.tokens
    if tokens is None:
        if state.logged_out:
            return TokenStatus(condition="logged_out", text="logged out: the next call needs a browser authorization")
        return TokenStatus(condition="none", text="no tokens: the first call needs a browser authorization")
    expires_at, refresh_at = tokens.expires_at, tokens.refresh_at(refresh_buffer)
    refreshable = state.refresh_token is not None
    if refreshable:
        after_expiry = ""
    elif state.refresh_rejected:
        after_expiry = "; the refresh token was rejected, so a browser authorization follows expiry"
    else:
        after_expiry = "; no refresh token, so a browser authorization follows expiry"
    freshness = tokens.freshness(now, refresh_buffer)
    if freshness is Freshness.VALID:
        if expires_at is None or refresh_at is None:
            text = "valid (no expiry given: used until the server rejects it, then refreshed)"
        else:
            text = f"valid until {format_time(expires_at)} (refresh window opens {format_time(refresh_at)})"
        condition = "valid"
    elif freshness is Freshness.EXPIRING:
        assert expires_at is not None and refresh_at is not None
        text = (
            f"expiring: valid until {format_time(expires_at)}, refresh window open since {format_time(refresh_at)}"
            + ("; refreshed in the background while calls continue" if refreshable else "")
        )
        condition = "expiring"
    elif refreshable:
        assert expires_at is not None
        return TokenStatus(
            condition="expired_refreshable",
            text=f"expired at {format_time(expires_at)}, refresh token available: the next call refreshes "
            "without a browser",
            expires_at=expires_at,
            refresh_at=refresh_at,
        )
    else:
        assert expires_at is not None
        why = "the refresh token was rejected" if state.refresh_rejected else "there is no refresh token"
        return TokenStatus(
            condition="needs_browser",
            text=f"needs browser: expired at {format_time(expires_at)} and {why}",
            expires_at=expires_at,
            refresh_at=refresh_at,
        )
    return TokenStatus(condition=condition, text=text + after_expiry, expires_at=expires_at, refresh_at=refresh_at)


def _authorization_reason(reason: str) -> str:
    member = AuthorizationReason.__members__.get(reason.upper())
    return reason if member is None else member.value


def _summary(record: LogRecord, before: TokenState, after: TokenState, data: JsonObject) -> str:
    """What a record means, in words; secrets appear only as the fingerprints found in ``data``."""
    match record.event:
        case TokensIssued(tokens=tokens, grant=grant):
            shown = data["tokens"]
            lifetime = (
                "no expiry given" if tokens.expires_in is None else f"lifetime {format_duration(tokens.expires_in)}"
            )
            refresh = "no refresh token" if tokens.refresh_token is None else f"refresh token {shown['refresh_token']}"
            scope = f", scope {tokens.scope!r}" if tokens.scope else ""
            issued = f"access token {shown['access_token']}, {refresh}, {lifetime}{scope}"
            if grant == "refresh_token":
                old = before.tokens.refresh_token if before.tokens is not None else None
                rotated = (
                    "the refresh token was rotated"
                    if tokens.refresh_token != old
                    else "the same refresh token stays valid"
                )
                return f"refresh succeeded: {issued}; {rotated}"
            if grant == "authorization_code":
                return f"browser authorization succeeded: {issued}"
            if grant == "legacy_import":
                return f"tokens imported from the original tool: {issued}"
            return f"tokens issued ({grant}): {issued}"
        case RefreshFailedEvent(reason=reason, final=True):
            return f"refresh failed for good ({reason}): the refresh token is dead, the next call needs a browser"
        case RefreshFailedEvent(reason=reason, final=False):
            return f"refresh failed, temporarily ({reason}): the tokens were kept and the refresh is retried"
        case AuthorizationStarted(reason=reason):
            return f"browser authorization started because {_authorization_reason(reason)}"
        case AuthorizationFailedEvent(reason=reason):
            return f"browser authorization ended without tokens ({reason})"
        case ClientRegistered(client=client):
            issuer = f" at {client.issuer}" if client.issuer else ""
            return f"client {client.client_id!r} obtained ({client.source}){issuer}"
        case ClientInvalidated(reason=reason):
            return f"the authorization server no longer knows the client ({reason}): it is registered again"
        case DiscoveryRecorded(discovery=discovery):
            return f"authorization server {discovery.issuer} discovered (token endpoint {discovery.token_endpoint})"
        case LoggedOut(revoked=revoked):
            return "logged out; the server confirmed the revocation" if revoked else "logged out (not revoked)"
        case Snapshot():
            return f"snapshot of the state after record #{after.last_seq} (older records compacted away)"
        case LegacyImported(source=source, had_issued_at=had_issued_at):
            when = "with" if had_issued_at else "without"
            return f"imported from the original tool's {source} ({when} the issue time)"
    raise TypeError(f"not a token-log event: {type(record.event).__name__}")


def _marks(status: TokenStatus, start: float, end: float) -> list[TimelineMark]:
    """The refresh-window and expiry moments in ``(start, end]``."""
    marks: list[TimelineMark] = []
    if status.refresh_at is not None and start < status.refresh_at <= end:
        marks.append(TimelineMark(at=status.refresh_at, what="the refresh window opened"))
    if status.expires_at is not None and start < status.expires_at <= end:
        marks.append(TimelineMark(at=status.expires_at, what="the access token expired"))
    return marks


def build_timeline(log: LogFile, *, now: float, refresh_buffer: float = DEFAULT_REFRESH_BUFFER) -> Timeline:
    """Explain every record of a log and find what is wrong with it.

    Args:
        log: the parsed file (:func:`read_log_file`).
        now: wall-clock seconds, for the final state and the marks after the last record.
        refresh_buffer: seconds before expiry that the refresh window opens.

    Returns:
        The timeline, its final token state and its warnings (torn tail,
        sequence gaps, a clock that went backwards).
    """
    server = log.server or ""
    warnings: list[str] = []
    items: list[TimelineEntry | TimelineMark] = []
    state = TokenState()
    previous: LogRecord | None = None
    status = describe_tokens(state, now, refresh_buffer)
    for record, line in zip(log.records, log.lines, strict=True):
        if previous is not None:
            items.extend(_marks(status, previous.at, record.at))
            if record.seq != previous.seq + 1:
                warnings.append(
                    f"{log.path}: line {line}: the sequence jumps from {previous.seq} to {record.seq}, so records "
                    "are missing (the file was edited or records were lost); mcp-tether refuses to use this log "
                    "until it is restored or moved aside"
                )
            if record.at < previous.at:
                warnings.append(
                    f"{log.path}: line {line}: the clock went backwards by {format_duration(previous.at - record.at)} "
                    f"({format_time(previous.at)} then {format_time(record.at)}); expiry times computed by that "
                    "process may be off"
                )
        before = state
        state = apply(state, record, check_sequence=False)
        status = describe_tokens(state, record.at, refresh_buffer)
        redacted = redact_record(record, server=server)
        data = redacted["data"]
        items.append(
            TimelineEntry(
                seq=record.seq,
                at=record.at,
                line=line,
                kind=redacted["kind"],
                data=data,
                summary=_summary(record, before, state, data),
                status=status,
            )
        )
        previous = record
    if previous is not None:
        items.extend(_marks(status, previous.at, now))
    if log.torn_bytes:
        warnings.append(
            f"{log.path}: the log ends in an incomplete record ({log.torn_bytes} bytes after record "
            f"#{previous.seq if previous else 0}), left by a crash during an append; the whole records before it "
            "are shown, and mcp-tether moves the torn bytes aside the next time it writes this log"
        )
    return Timeline(
        path=log.path,
        server=log.server,
        items=tuple(items),
        state=state,
        now=now,
        current=describe_tokens(state, now, refresh_buffer),
        warnings=tuple(warnings),
        refresh_buffer=refresh_buffer,
    )


# --- rendering -------------------------------------------------------------------------


def _status_json(status: TokenStatus) -> JsonObject:
    return {
        "condition": status.condition,
        "text": status.text,
        "expires_at": status.expires_at,
        "refresh_at": status.refresh_at,
    }


def timeline_json(timeline: Timeline) -> Iterator[JsonObject]:
    """One JSON-able object per line of output: the log, each event, each mark, each warning, the state now.

    Every object has a ``type``: ``log``, ``event``, ``mark``, ``warning`` or ``now``.

    Args:
        timeline: from :func:`build_timeline`.

    Returns:
        An iterator of dicts with secrets redacted.
    """
    yield {
        "type": "log",
        "path": str(timeline.path),
        "server": timeline.server,
        "records": sum(isinstance(item, TimelineEntry) for item in timeline.items),
        "refresh_buffer": timeline.refresh_buffer,
    }
    for item in timeline.items:
        if isinstance(item, TimelineEntry):
            yield {
                "type": "event",
                "seq": item.seq,
                "line": item.line,
                "at": item.at,
                "time": format_time(item.at),
                "kind": item.kind,
                "summary": item.summary,
                "state": _status_json(item.status),
                "data": item.data,
            }
        else:
            yield {"type": "mark", "at": item.at, "time": format_time(item.at), "what": item.what}
    for warning in timeline.warnings:
        yield {"type": "warning", "message": warning}
    yield {
        "type": "now",
        "at": timeline.now,
        "time": format_time(timeline.now),
        "state": _status_json(timeline.current),
    }


def _plain(text: str) -> str:
    return text


def condition_style(
    condition: str,
    *,
    good: Callable[[str], str] = _plain,
    warn: Callable[[str], str] = _plain,
    bad: Callable[[str], str] = _plain,
) -> Callable[[str], str]:
    """The style a token condition is shown in: valid is good; expiring, or expired with a
    refresh token, is a warning; anything else (no tokens, a browser needed) is bad."""
    return {"valid": good, "expiring": warn, "expired_refreshable": warn}.get(condition, bad)


def timeline_text(
    timeline: Timeline,
    *,
    heading: Callable[[str], str] = _plain,
    dim: Callable[[str], str] = _plain,
    good: Callable[[str], str] = _plain,
    bad: Callable[[str], str] = _plain,
    warn: Callable[[str], str] = _plain,
) -> Iterator[str]:
    """The timeline as lines of text for a person (without newlines).

    Args:
        timeline: from :func:`build_timeline`.
        heading, dim, good, bad, warn: wrap a piece of text in a style (identity by default:
            plain text).

    Returns:
        An iterator of lines with secrets redacted.
    """
    def styled(status: TokenStatus) -> str:
        return condition_style(status.condition, good=good, warn=warn, bad=bad)(status.text)

    entries = sum(isinstance(item, TimelineEntry) for item in timeline.items)
    server = f"server {timeline.server!r}" if timeline.server is not None else "an empty log"
    yield heading(f"Token log of {server}: {timeline.path} ({entries} records)")
    previous_status: TokenStatus | None = None
    for item in timeline.items:
        if isinstance(item, TimelineMark):
            yield dim(f"   {format_time(item.at)}  -- {item.what}")
            continue
        yield f"#{item.seq:<3} {format_time(item.at)}  {heading(item.kind)}: {item.summary}"
        if item.status != previous_status:
            yield f"       state: {styled(item.status)}"
        previous_status = item.status
    for warning in timeline.warnings:
        yield warn(f"warning: {warning}")
    yield f"Now ({format_time(timeline.now)}): {styled(timeline.current)}"
