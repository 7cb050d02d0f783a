"""The token log's line format: encoding, decoding, upcasting, legacy import, redaction.

Pure: no IO, no clock. ``specs/token-log.md`` is the format's reference; in short,
each line is one JSON object (ASCII only, compact separators) with the keys in
this order::

    {"v":1,"seq":7,"at":1767225600.25,"server":"notion","kind":"tokens_issued",
     "data":{...},"crc":"1c291ca3"}

* ``v`` is the schema version (:data:`SCHEMA_VERSION`); a record of an older
  version is lifted to the current one by the upcasters in :data:`UPCASTERS`,
  one version step at a time, when it is read. Old lines are never rewritten.
  A version newer than this code knows is refused (:class:`UnsupportedVersionError`).
* ``seq`` is the record's sequence number (contiguous from 1), ``at`` the
  wall-clock time of the append, ``server`` the server the log belongs to (a
  file moved to another server's name is detected), ``kind`` and ``data`` the
  event.
* ``crc`` is the CRC-32 of the line's bytes with the ``,"crc":"…"`` member
  removed, so a torn or bit-flipped line is told apart from a committed one
  without re-serialising it. A line whose checksum fails raises
  :class:`FramingError`; a line whose checksum holds but whose content is not a
  valid record raises :class:`DecodeError` (it was written like that: corruption
  or a bug, never a torn write).

Error messages name the field at fault and never quote a value (values hold secrets).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from mcp_tether.statemachine.tokenlog import (
    AuthorizationFailedEvent,
    AuthorizationStarted,
    ClientInvalidated,
    ClientRegistered,
    DiscoveryRecorded,
    LegacyImported,
    LogEvent,
    LoggedOut,
    LogRecord,
    RefreshFailedEvent,
    Snapshot,
    TokensIssued,
)
from mcp_tether.statemachine.tokens import (
    ClientRegistration,
    Discovery,
    TokenSet,
    TokenState,
)

__all__ = [
    "SCHEMA_VERSION",
    "SECRET_FIELDS",
    "UPCASTERS",
    "DecodeError",
    "FramingError",
    "JsonObject",
    "LineError",
    "LineScan",
    "UnsupportedVersionError",
    "Upcaster",
    "decode_legacy",
    "decode_line",
    "decode_record",
    "encode_line",
    "encode_record",
    "redact_record",
    "render_redacted",
    "scan_lines",
    "upcast",
]

#: The version written by this code.
SCHEMA_VERSION: Final = 1

JsonObject = dict[str, Any]
#: Lifts a record object of version ``n`` to version ``n + 1`` (returns a new object).
Upcaster = Callable[[JsonObject], JsonObject]
#: ``{n: lift from n to n + 1}``. Version 1 is the first format: nothing to lift yet.
UPCASTERS: Final[Mapping[int, Upcaster]] = {}

#: Keys whose values are secrets, wherever they appear in a record's data.
SECRET_FIELDS: Final = frozenset({"access_token", "refresh_token", "client_secret"})

_CRC_SUFFIX_LEN: Final = len(',"crc":"00000000"}')
_CRC_PREFIX: Final = b',"crc":"'


class DecodeError(ValueError):
    """A line or object is not a valid token-log record (the message names the field, never a value)."""


class FramingError(DecodeError):
    """The line's checksum or framing fails: a torn write if it is the last thing in the file."""


class UnsupportedVersionError(DecodeError):
    """The record was written by a newer version of mcp-tether than this one."""


# --- encoding -----------------------------------------------------------------


def _client_to_json(client: ClientRegistration) -> JsonObject:
    return {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "issuer": client.issuer,
        "redirect_uris": list(client.redirect_uris),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "source": client.source,
    }


def _discovery_to_json(discovery: Discovery) -> JsonObject:
    return {
        "resource": discovery.resource,
        "resource_metadata_url": discovery.resource_metadata_url,
        "issuer": discovery.issuer,
        "authorization_endpoint": discovery.authorization_endpoint,
        "token_endpoint": discovery.token_endpoint,
        "registration_endpoint": discovery.registration_endpoint,
        "revocation_endpoint": discovery.revocation_endpoint,
        "scopes_supported": _opt_list(discovery.scopes_supported),
        "iss_parameter_supported": discovery.iss_parameter_supported,
        "client_id_metadata_document_supported": discovery.client_id_metadata_document_supported,
        "token_endpoint_auth_methods_supported": _opt_list(discovery.token_endpoint_auth_methods_supported),
        "authorization_server_scopes_supported": _opt_list(discovery.authorization_server_scopes_supported),
    }


def _opt_list(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _tokens_to_json(tokens: TokenSet) -> JsonObject:
    return {
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "refresh_token": tokens.refresh_token,
        "scope": tokens.scope,
        "issued_at": tokens.issued_at,
        "expires_in": tokens.expires_in,
    }


def _state_to_json(state: TokenState) -> JsonObject:
    return {
        "client": None if state.client is None else _client_to_json(state.client),
        "discovery": None if state.discovery is None else _discovery_to_json(state.discovery),
        "tokens": None if state.tokens is None else _tokens_to_json(state.tokens),
        "refresh_rejected": state.refresh_rejected,
        "logged_out": state.logged_out,
        "last_seq": state.last_seq,
    }


def _event_to_json(event: LogEvent) -> tuple[str, JsonObject]:
    match event:
        case ClientRegistered(client=client):
            return "client_registered", {"client": _client_to_json(client)}
        case ClientInvalidated(reason=reason):
            return "client_invalidated", {"reason": reason}
        case DiscoveryRecorded(discovery=discovery):
            return "discovery_recorded", {"discovery": _discovery_to_json(discovery)}
        case TokensIssued(tokens=tokens, grant=grant):
            return "tokens_issued", {"tokens": _tokens_to_json(tokens), "grant": grant}
        case RefreshFailedEvent(reason=reason, final=final):
            return "refresh_failed", {"reason": reason, "final": final}
        case AuthorizationStarted(reason=reason):
            return "authorization_started", {"reason": reason}
        case AuthorizationFailedEvent(reason=reason):
            return "authorization_failed", {"reason": reason}
        case LoggedOut(revoked=revoked):
            return "logged_out", {"revoked": revoked}
        case Snapshot(state=state):
            return "snapshot", {"state": _state_to_json(state)}
        case LegacyImported(source=source, had_issued_at=had_issued_at):
            return "legacy_imported", {"source": source, "had_issued_at": had_issued_at}
    raise TypeError(f"not a token-log event: {type(event).__name__}")


def encode_record(record: LogRecord, *, server: str) -> JsonObject:
    """Turn a record into the JSON-able object stored on its line (without ``crc``).

    Args:
        record: the record to encode.
        server: the server whose log it belongs to.

    Returns:
        A fresh dict of JSON types, keys in storage order.
    """
    kind, data = _event_to_json(record.event)
    return {
        "v": SCHEMA_VERSION,
        "seq": record.seq,
        "at": record.at,
        "server": server,
        "kind": kind,
        "data": data,
    }


def encode_line(record: LogRecord, *, server: str) -> bytes:
    """Encode a record as one complete log line, checksum and trailing newline included.

    Args:
        record: the record to encode.
        server: the server whose log it belongs to.

    Returns:
        ASCII bytes ending in ``b"\\n"``.

    Raises:
        ValueError: a float in the record is NaN or infinite (JSON cannot hold it).
    """
    body = json.dumps(
        encode_record(record, server=server), ensure_ascii=True, allow_nan=False, separators=(",", ":")
    ).encode("ascii")
    crc = zlib.crc32(body)
    return body[:-1] + b'%s%08x"}\n' % (_CRC_PREFIX, crc)


# --- decoding -----------------------------------------------------------------


def _field(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise DecodeError(f"{path}{key}: missing")
    return obj[key]


def _str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = _field(obj, key, path)
    if not isinstance(value, str):
        raise DecodeError(f"{path}{key}: expected a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DecodeError(f"{path}{key}: expected a string or null")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = _field(obj, key, path)
    if not isinstance(value, bool):
        raise DecodeError(f"{path}{key}: expected true or false")
    return value


def _number(value: Any, key: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError(f"{path}{key}: expected a finite number")
    return float(value)


def _float(obj: Mapping[str, Any], key: str, path: str) -> float:
    return _number(_field(obj, key, path), key, path)


def _opt_float(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    value = obj.get(key)
    return None if value is None else _number(value, key, path)


def _int(obj: Mapping[str, Any], key: str, path: str) -> int:
    value = _field(obj, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(f"{path}{key}: expected a non-negative integer")
    return value


def _obj(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = _field(obj, key, path)
    if not isinstance(value, dict):
        raise DecodeError(f"{path}{key}: expected an object")
    return value


def _opt_obj(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise DecodeError(f"{path}{key}: expected an object or null")
    return value


def _str_tuple(value: Any, key: str, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DecodeError(f"{path}{key}: expected a list of strings")
    return tuple(value)


def _client_from_json(obj: Mapping[str, Any], path: str) -> ClientRegistration:
    return ClientRegistration(
        client_id=_str(obj, "client_id", path),
        client_secret=_opt_str(obj, "client_secret", path),
        issuer=_opt_str(obj, "issuer", path),
        redirect_uris=_str_tuple(_field(obj, "redirect_uris", path), "redirect_uris", path),
        token_endpoint_auth_method=_str(obj, "token_endpoint_auth_method", path),
        source=_str(obj, "source", path),
    )


def _discovery_from_json(obj: Mapping[str, Any], path: str) -> Discovery:
    return Discovery(
        resource=_opt_str(obj, "resource", path),
        resource_metadata_url=_opt_str(obj, "resource_metadata_url", path),
        issuer=_str(obj, "issuer", path),
        authorization_endpoint=_opt_str(obj, "authorization_endpoint", path),
        token_endpoint=_str(obj, "token_endpoint", path),
        registration_endpoint=_opt_str(obj, "registration_endpoint", path),
        revocation_endpoint=_opt_str(obj, "revocation_endpoint", path),
        scopes_supported=_opt_str_tuple(obj, "scopes_supported", path),
        iss_parameter_supported=_bool(obj, "iss_parameter_supported", path),
        # Added later: absent from older lines, where they take their defaults.
        client_id_metadata_document_supported=(
            "client_id_metadata_document_supported" in obj
            and _bool(obj, "client_id_metadata_document_supported", path)
        ),
        token_endpoint_auth_methods_supported=_opt_str_tuple(
            obj, "token_endpoint_auth_methods_supported", path
        ),
        authorization_server_scopes_supported=_opt_str_tuple(
            obj, "authorization_server_scopes_supported", path
        ),
    )


def _opt_str_tuple(obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    return None if value is None else _str_tuple(value, key, path)


def _tokens_from_json(obj: Mapping[str, Any], path: str) -> TokenSet:
    return TokenSet(
        access_token=_str(obj, "access_token", path),
        token_type=_str(obj, "token_type", path),
        refresh_token=_opt_str(obj, "refresh_token", path),
        scope=_opt_str(obj, "scope", path),
        issued_at=_float(obj, "issued_at", path),
        expires_in=_opt_float(obj, "expires_in", path),
    )


def _state_from_json(obj: Mapping[str, Any], path: str) -> TokenState:
    client = _opt_obj(obj, "client", path)
    discovery = _opt_obj(obj, "discovery", path)
    tokens = _opt_obj(obj, "tokens", path)
    return TokenState(
        client=None if client is None else _client_from_json(client, f"{path}client."),
        discovery=None if discovery is None else _discovery_from_json(discovery, f"{path}discovery."),
        tokens=None if tokens is None else _tokens_from_json(tokens, f"{path}tokens."),
        refresh_rejected=_bool(obj, "refresh_rejected", path),
        logged_out=_bool(obj, "logged_out", path),
        last_seq=_int(obj, "last_seq", path),
    )


def _event_from_json(kind: str, data: Mapping[str, Any]) -> LogEvent:
    path = "data."
    match kind:
        case "client_registered":
            return ClientRegistered(client=_client_from_json(_obj(data, "client", path), "data.client."))
        case "client_invalidated":
            return ClientInvalidated(reason=_str(data, "reason", path))
        case "discovery_recorded":
            discovery = _obj(data, "discovery", path)
            return DiscoveryRecorded(discovery=_discovery_from_json(discovery, "data.discovery."))
        case "tokens_issued":
            tokens = _tokens_from_json(_obj(data, "tokens", path), "data.tokens.")
            return TokensIssued(tokens=tokens, grant=_str(data, "grant", path))
        case "refresh_failed":
            return RefreshFailedEvent(reason=_str(data, "reason", path), final=_bool(data, "final", path))
        case "authorization_started":
            return AuthorizationStarted(reason=_str(data, "reason", path))
        case "authorization_failed":
            return AuthorizationFailedEvent(reason=_str(data, "reason", path))
        case "logged_out":
            return LoggedOut(revoked=_bool(data, "revoked", path))
        case "snapshot":
            return Snapshot(state=_state_from_json(_obj(data, "state", path), "data.state."))
        case "legacy_imported":
            return LegacyImported(
                source=_str(data, "source", path), had_issued_at=_bool(data, "had_issued_at", path)
            )
        case _:
            raise DecodeError("kind: not a known event kind")


def upcast(obj: JsonObject, upcasters: Mapping[int, Upcaster] = UPCASTERS) -> JsonObject:
    """Lift a record object to :data:`SCHEMA_VERSION`, one version at a time.

    Args:
        obj: a decoded line.
        upcasters: ``{n: lift from n to n + 1}`` (the shipped chain by default).

    Returns:
        The object at the current version (``obj`` itself when already current).

    Raises:
        UnsupportedVersionError: the version is newer than this code, or no
            upcaster covers a step.
        DecodeError: ``v`` is missing or not a positive integer.
    """
    version = obj.get("v")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DecodeError("v: expected a positive integer schema version")
    if version > SCHEMA_VERSION:
        raise UnsupportedVersionError(
            f"v: schema version {version} is newer than this mcp-tether understands ({SCHEMA_VERSION})"
        )
    while version < SCHEMA_VERSION:
        lift = upcasters.get(version)
        if lift is None:
            raise UnsupportedVersionError(f"v: no upcaster from schema version {version}")
        obj = lift(obj)
        version += 1
        obj["v"] = version
    return obj


def decode_record(
    obj: Mapping[str, Any], *, server: str, upcasters: Mapping[int, Upcaster] = UPCASTERS
) -> LogRecord:
    """Turn a stored record object (any supported version) back into a :class:`LogRecord`.

    Args:
        obj: the decoded JSON object of one line (``crc`` may be present; it is ignored here).
        server: the server whose log is being read; a record for another server is refused.
        upcasters: the upcaster chain (the shipped one by default).

    Returns:
        The record.

    Raises:
        DecodeError: a field is missing or has the wrong type, or the record names another server.
        UnsupportedVersionError: see :func:`upcast`.
    """
    current = upcast(dict(obj), upcasters)
    seq = _int(current, "seq", "")
    if seq < 1:
        raise DecodeError("seq: expected a positive integer")
    if _str(current, "server", "") != server:
        raise DecodeError("server: the record belongs to another server's log")
    event = _event_from_json(_str(current, "kind", ""), _obj(current, "data", ""))
    return LogRecord(seq=seq, at=_float(current, "at", ""), event=event)


def decode_line(line: bytes, *, server: str) -> LogRecord:
    """Decode one log line (without its trailing newline).

    Args:
        line: the bytes between two newlines.
        server: the server whose log is being read.

    Returns:
        The record.

    Raises:
        FramingError: the checksum does not match or the line is not JSON
            (torn, cut short, or damaged).
        DecodeError: the line is intact but is not a valid record of ``server``.
        UnsupportedVersionError: the line was written by a newer version.
    """
    if len(line) < _CRC_SUFFIX_LEN + 2 or not line.endswith(b'"}'):
        raise FramingError("line: incomplete or not a record")
    cut = len(line) - _CRC_SUFFIX_LEN
    if line[cut : cut + len(_CRC_PREFIX)] != _CRC_PREFIX:
        raise FramingError("crc: missing")
    digits = line[cut + len(_CRC_PREFIX) : -2]
    if digits.strip(b"0123456789abcdef"):
        raise FramingError("crc: not lowercase hexadecimal")
    stored = int(digits, 16)
    if zlib.crc32(b"}", zlib.crc32(line[:cut])) != stored:
        raise FramingError("crc: checksum mismatch")
    try:
        obj = json.loads(line)
    except ValueError:
        raise FramingError("line: not valid JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError("line: not a JSON object")
    return decode_record(obj, server=server)


class LineError(DecodeError):
    """A line that makes a log unusable as it stands.

    Attributes:
        line: its 1-based line number.
        reason: what is wrong with it (never a value from it).
        newer_version: the line was written by a newer version (not damage).
    """

    def __init__(self, line: int, reason: str, *, newer_version: bool = False) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason
        self.newer_version = newer_version


@attrs.frozen(kw_only=True)
class LineScan:
    """The whole records at the start of a chunk of log bytes."""

    records: tuple[LogRecord, ...]
    #: The line number of each record.
    line_numbers: tuple[int, ...]
    #: Bytes from the chunk's start to the end of its last whole record; the rest is a torn tail.
    valid_end: int
    #: The last whole record's line, with its newline (empty when there is none).
    last_line: bytes


def scan_lines(data: bytes, *, server: str, first_line: int = 1) -> LineScan:
    """Decode the records at the start of ``data``; what follows the last one is a torn tail.

    Damaged lines (checksum or framing) are a torn write only when nothing
    intact follows them; a damaged line before an intact one, or an intact line
    that is not a valid record, is corruption. The unterminated bytes after the
    last newline are never decoded (an append in progress, or torn).

    Args:
        data: log bytes, starting at a line boundary.
        server: the server whose log this is.
        first_line: the line number of the first line in ``data``.

    Returns:
        The records, their line numbers, and where they end.

    Raises:
        LineError: corruption, or a line written by a newer version (``newer_version``).
    """
    records: list[LogRecord] = []
    numbers: list[int] = []
    pos = valid_end = 0
    last_line = b""
    first_bad: tuple[int, str] | None = None
    number = first_line - 1
    for _ in range(len(data) + 1):  # bounded: each round consumes at least one byte
        newline = data.find(b"\n", pos)
        if newline == -1:
            break
        number += 1
        start, pos = pos, newline + 1
        try:
            record = decode_line(data[start:newline], server=server)
        except FramingError as error:
            first_bad = first_bad or (number, str(error))
            continue
        except UnsupportedVersionError as error:
            raise LineError(number, str(error), newer_version=True) from None
        except DecodeError as error:
            raise LineError(*(first_bad or (number, str(error)))) from None
        if first_bad is not None:
            raise LineError(*first_bad)
        records.append(record)
        numbers.append(number)
        valid_end = pos
        last_line = data[start:pos]
    return LineScan(records=tuple(records), line_numbers=tuple(numbers), valid_end=valid_end, last_line=last_line)


# --- legacy import ------------------------------------------------------------


def _epoch_ms_to_seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) / 1000.0 if math.isfinite(value) and value > 0 else None


def decode_legacy(document: object, *, source: str, imported_at: float) -> tuple[LogEvent, ...]:
    """Turn the original tool's ``<server>.json`` into the first events of a log.

    The document is ``{"tokens": {access_token, token_type, expires_in,
    refresh_token, scope}, "clientInfo": {...}, "tokensIssuedAt": <epoch ms>}``.
    Events: :class:`LegacyImported`, then :class:`ClientRegistered` when
    ``clientInfo`` names a client (bound to no issuer: the old tool did not
    record one), then :class:`TokensIssued` (grant ``legacy_import``) when
    ``tokens`` holds an access token. With a valid ``tokensIssuedAt`` the tokens
    keep ``issued_at`` and ``expires_in``; without it the expiry is unknown
    (``expires_in`` None, ``issued_at`` the import time): the access token is
    used until the resource server rejects it, and that 401 is answered by a
    refresh, not a browser.

    Args:
        document: the parsed JSON of the legacy file.
        source: the legacy file's name, recorded in the marker event.
        imported_at: wall-clock time of the import.

    Returns:
        The events to append, marker first.

    Raises:
        DecodeError: the document is not an object, or holds neither tokens nor a client.
    """
    if not isinstance(document, dict):
        raise DecodeError("legacy file: expected a JSON object")
    events: list[LogEvent] = []
    client_info = document.get("clientInfo")
    if isinstance(client_info, dict) and isinstance(client_info.get("client_id"), str):
        secret = client_info.get("client_secret")
        secret = secret if isinstance(secret, str) and secret else None
        method = client_info.get("token_endpoint_auth_method")
        uris = client_info.get("redirect_uris")
        events.append(
            ClientRegistered(
                client=ClientRegistration(
                    client_id=client_info["client_id"],
                    client_secret=secret,
                    redirect_uris=(
                        tuple(u for u in uris if isinstance(u, str)) if isinstance(uris, list) else ()
                    ),
                    token_endpoint_auth_method=(
                        method
                        if isinstance(method, str) and method
                        else ("client_secret_basic" if secret else "none")
                    ),
                )
            )
        )
    issued_at = _epoch_ms_to_seconds(document.get("tokensIssuedAt"))
    tokens_doc = document.get("tokens")
    if isinstance(tokens_doc, dict):
        tokens = TokenSet.from_token_response(
            tokens_doc, received_at=imported_at if issued_at is None else issued_at
        )
        if tokens is not None:
            if issued_at is None:
                tokens = attrs.evolve(tokens, expires_in=None)
            events.append(TokensIssued(tokens=tokens, grant="legacy_import"))
    if not events:
        raise DecodeError("legacy file: holds neither tokens with an access token nor a client id")
    return (LegacyImported(source=source, had_issued_at=issued_at is not None), *events)


# --- redaction ----------------------------------------------------------------


def _fingerprint(secret: str) -> str:
    return "<redacted #" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8] + ">"


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (_fingerprint(item) if key in SECRET_FIELDS and isinstance(item, str) else _redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def redact_record(record: LogRecord, *, server: str) -> JsonObject:
    """The record's stored object with every secret replaced by a short fingerprint.

    The fingerprint (``<redacted #1a2b3c4d>``, 32 bits of SHA-256) shows whether
    a token changed between events without revealing it.

    Args:
        record: the record to render.
        server: the server whose log it belongs to.

    Returns:
        A JSON-able dict, safe to print or log.
    """
    redacted: JsonObject = _redact(encode_record(record, server=server))
    return redacted


def render_redacted(record: LogRecord, *, server: str) -> str:
    """One human-readable line for a record: sequence, UTC time, kind, redacted data.

    Args:
        record: the record to render.
        server: the server whose log it belongs to.

    Returns:
        For example ``#3 2026-01-01T00:00:00Z tokens_issued {"grant": ...}``.
    """
    obj = redact_record(record, server=server)
    try:
        when = datetime.fromtimestamp(record.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        when = f"at={record.at!r}"
    return f"#{record.seq} {when} {obj['kind']} {json.dumps(obj['data'], sort_keys=True)}"
