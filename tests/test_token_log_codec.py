"""The token log's line format: round trips, checksums, upcasting, legacy decoding, redaction."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from token_log_support import SECRET_MARK, events, times

from mcp_tether.statemachine import logcodec
from mcp_tether.statemachine.logcodec import (
    SCHEMA_VERSION,
    DecodeError,
    FramingError,
    UnsupportedVersionError,
    decode_legacy,
    decode_line,
    decode_record,
    encode_line,
    encode_record,
    redact_record,
    render_redacted,
    upcast,
)
from mcp_tether.statemachine.tokenlog import (
    ClientRegistered,
    LegacyImported,
    LogRecord,
    TokensIssued,
)
from mcp_tether.statemachine.tokens import TokenSet

SERVER = "notion"


def line_for(obj: dict[str, Any]) -> bytes:
    """A correctly checksummed line for an arbitrary object (to test content checks)."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return body[:-1] + b',"crc":"%08x"}' % zlib.crc32(body)


def sample_record(seq: int = 1) -> LogRecord:
    tokens = TokenSet(access_token="AT-SeCrEt", refresh_token="RT-SeCrEt", issued_at=100.0, expires_in=60)
    return LogRecord(seq=seq, at=100.5, event=TokensIssued(tokens=tokens, grant="refresh_token"))


@settings(max_examples=300, deadline=None)
@given(event=events, seq=st.integers(min_value=1, max_value=2**53), at=times)
def test_every_event_round_trips_through_a_line(event: Any, seq: int, at: float) -> None:
    record = LogRecord(seq=seq, at=at, event=event)
    line = encode_line(record, server=SERVER)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.isascii()
    assert decode_line(line[:-1], server=SERVER) == record
    assert decode_record(json.loads(line), server=SERVER) == record


@settings(max_examples=200, deadline=None)
@given(event=events, at=times)
def test_redacted_output_holds_no_secret(event: Any, at: float) -> None:
    record = LogRecord(seq=1, at=at, event=event)
    assert SECRET_MARK not in json.dumps(redact_record(record, server=SERVER))
    assert SECRET_MARK not in render_redacted(record, server=SERVER)
    assert SECRET_MARK not in repr(record)


def test_redaction_shows_whether_a_token_changed() -> None:
    first = redact_record(sample_record(), server=SERVER)["data"]["tokens"]
    assert first["access_token"].startswith("<redacted #")
    again = redact_record(sample_record(2), server=SERVER)["data"]["tokens"]
    assert again["refresh_token"] == first["refresh_token"]
    assert render_redacted(sample_record(3), server=SERVER).startswith(
        "#3 1970-01-01T00:01:40Z tokens_issued "
    )


def test_line_layout_is_the_documented_one() -> None:
    line = encode_line(sample_record(), server=SERVER)
    obj = json.loads(line)
    assert list(obj) == ["v", "seq", "at", "server", "kind", "data", "crc"]
    assert obj["v"] == SCHEMA_VERSION == 1
    assert obj == {**encode_record(sample_record(), server=SERVER), "crc": obj["crc"]}


@pytest.mark.parametrize("cut", [0, 1, 10, -30, -19, -3, -2])
def test_a_cut_line_is_a_framing_error(cut: int) -> None:
    line = encode_line(sample_record(), server=SERVER)[:-1]
    with pytest.raises(FramingError):
        decode_line(line[:cut], server=SERVER)


def test_every_single_bit_flip_is_detected() -> None:
    line = encode_line(sample_record(), server=SERVER)[:-1]
    for index in range(len(line)):
        for bit in range(8):
            damaged = bytearray(line)
            damaged[index] ^= 1 << bit
            with pytest.raises(DecodeError):
                decode_line(bytes(damaged), server=SERVER)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"at": "now"}, "at"),
        ({"server": "linear"}, "another server"),
        ({"kind": "teleported"}, "kind"),
        ({"data": []}, "data"),
        ({"v": 0}, "v:"),
    ],
)
def test_an_intact_line_with_bad_content_is_a_decode_error_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    obj = {**encode_record(sample_record(), server=SERVER), **change}
    with pytest.raises(DecodeError, match=message) as caught:
        decode_line(line_for(obj), server=SERVER)
    assert not isinstance(caught.value, FramingError)
    assert SECRET_MARK not in str(caught.value)


def test_wrongly_typed_secret_field_is_reported_without_its_value() -> None:
    obj = encode_record(sample_record(), server=SERVER)
    obj["data"]["tokens"]["refresh_token"] = ["SeCrEt"]
    with pytest.raises(DecodeError, match=r"data\.tokens\.refresh_token") as caught:
        decode_line(line_for(obj), server=SERVER)
    assert SECRET_MARK not in str(caught.value)


def test_a_newer_schema_version_is_refused() -> None:
    obj = {**encode_record(sample_record(), server=SERVER), "v": SCHEMA_VERSION + 1}
    with pytest.raises(UnsupportedVersionError, match="newer"):
        decode_line(line_for(obj), server=SERVER)


def test_upcasters_lift_one_version_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logcodec, "SCHEMA_VERSION", 3)
    steps = {
        1: lambda obj: {"v": obj["v"], "renamed": obj["old"]},
        2: lambda obj: {**obj, "added": obj["renamed"] * 2},
    }
    assert upcast({"v": 1, "old": 21}, steps) == {"v": 3, "renamed": 21, "added": 42}
    assert upcast({"v": 2, "renamed": 1}, steps) == {"v": 3, "renamed": 1, "added": 2}
    with pytest.raises(UnsupportedVersionError, match="no upcaster from schema version 1"):
        upcast({"v": 1, "old": 1}, {2: steps[2]})


LEGACY_TOKENS = {
    "access_token": "AT-SeCrEt",
    "token_type": "bearer",
    "expires_in": 3600,
    "refresh_token": "RT-SeCrEt",
    "scope": "read write",
}
LEGACY_CLIENT = {
    "client_id": "cid-1",
    "client_secret": "CS-SeCrEt",
    "redirect_uris": ["http://localhost:3334/callback"],
    "client_id_issued_at": 1700000000,
}


def test_legacy_document_with_issue_time_keeps_the_expiry() -> None:
    document = {"tokens": LEGACY_TOKENS, "clientInfo": LEGACY_CLIENT, "tokensIssuedAt": 1_700_000_000_500}
    marker, registered, issued = decode_legacy(document, source="notion.json", imported_at=9e9)
    assert marker == LegacyImported(source="notion.json", had_issued_at=True)
    assert isinstance(registered, ClientRegistered)
    assert registered.client.client_id == "cid-1"
    assert registered.client.client_secret == "CS-SeCrEt"
    assert registered.client.issuer is None
    assert registered.client.token_endpoint_auth_method == "client_secret_basic"
    assert registered.client.redirect_uris == ("http://localhost:3334/callback",)
    assert isinstance(issued, TokensIssued)
    assert issued.grant == "legacy_import"
    assert issued.tokens.issued_at == 1_700_000_000.5
    assert issued.tokens.expires_in == 3600
    assert issued.tokens.refresh_token == "RT-SeCrEt"
    assert issued.tokens.scope == "read write"


@pytest.mark.parametrize("issued_at", [None, "yesterday", True, -5, float("nan")])
def test_legacy_document_without_a_usable_issue_time_has_unknown_expiry(issued_at: object) -> None:
    document: dict[str, object] = {"tokens": LEGACY_TOKENS}
    if issued_at is not None:
        document["tokensIssuedAt"] = issued_at
    marker, issued = decode_legacy(document, source="notion.json", imported_at=1234.0)
    assert marker == LegacyImported(source="notion.json", had_issued_at=False)
    assert isinstance(issued, TokensIssued)
    assert issued.tokens.expires_in is None
    assert issued.tokens.issued_at == 1234.0


@pytest.mark.parametrize(
    "document",
    [[], "tokens", {}, {"tokens": {"token_type": "bearer"}}, {"clientInfo": {"client_secret": "x"}}],
)
def test_legacy_document_without_tokens_or_client_is_refused(document: object) -> None:
    with pytest.raises(DecodeError, match="legacy file"):
        decode_legacy(document, source="x.json", imported_at=0.0)


def test_legacy_client_alone_is_imported() -> None:
    events_ = decode_legacy({"clientInfo": {"client_id": "c"}}, source="x.json", imported_at=0.0)
    assert [type(event) for event in events_] == [LegacyImported, ClientRegistered]
    registered = events_[1]
    assert isinstance(registered, ClientRegistered)
    assert registered.client.token_endpoint_auth_method == "none"
