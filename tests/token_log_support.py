"""Hypothesis strategies and child-process workers for the token-log tests.

Workers live here (not in a test module) so that processes started with the
``spawn`` or ``forkserver`` method can import them by name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
from hypothesis import strategies as st

from mcp_tether.adapters.token_store import TokenStore
from mcp_tether.statemachine.tokenlog import (
    AuthorizationFailedEvent,
    AuthorizationStarted,
    ClientInvalidated,
    ClientRegistered,
    DiscoveryRecorded,
    LegacyImported,
    LogEvent,
    LoggedOut,
    RefreshFailedEvent,
    Snapshot,
    TokensIssued,
)
from mcp_tether.statemachine.tokens import ClientRegistration, Discovery, Freshness, TokenSet, TokenState

#: Virtual seconds between expiry rounds: longer than any access token lives in those tests.
ROUND_SECONDS = 100_000.0

# --- strategies ---------------------------------------------------------------

texts = st.text(max_size=30)
optional_texts = st.none() | texts
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
lifetimes = st.none() | st.floats(allow_nan=False, allow_infinity=False)
#: Secrets carry a marker so tests can assert they never leak into text output.
SECRET_MARK = "SeCrEt"
secrets = st.text(max_size=20).map(lambda s: f"{SECRET_MARK}{s}{SECRET_MARK}")

clients = st.builds(
    ClientRegistration,
    client_id=texts,
    client_secret=st.none() | secrets,
    issuer=optional_texts,
    redirect_uris=st.lists(texts, max_size=3).map(tuple),
    token_endpoint_auth_method=texts,
    source=texts,
)
discoveries = st.builds(
    Discovery,
    resource=optional_texts,
    resource_metadata_url=optional_texts,
    issuer=texts,
    authorization_endpoint=optional_texts,
    token_endpoint=texts,
    registration_endpoint=optional_texts,
    revocation_endpoint=optional_texts,
    scopes_supported=st.none() | st.lists(texts, max_size=3).map(tuple),
    iss_parameter_supported=st.booleans(),
)
token_sets = st.builds(
    TokenSet,
    access_token=secrets,
    token_type=texts,
    refresh_token=st.none() | secrets,
    scope=optional_texts,
    issued_at=times,
    expires_in=lifetimes,
)
token_states = st.builds(
    TokenState,
    client=st.none() | clients,
    discovery=st.none() | discoveries,
    tokens=st.none() | token_sets,
    refresh_rejected=st.booleans(),
    logged_out=st.booleans(),
    last_seq=st.integers(min_value=0, max_value=2**40),
)
events: st.SearchStrategy[LogEvent] = st.one_of(
    st.builds(ClientRegistered, client=clients),
    st.builds(ClientInvalidated, reason=texts),
    st.builds(DiscoveryRecorded, discovery=discoveries),
    st.builds(TokensIssued, tokens=token_sets, grant=texts),
    st.builds(RefreshFailedEvent, reason=texts, final=st.booleans()),
    st.builds(AuthorizationStarted, reason=texts),
    st.builds(AuthorizationFailedEvent, reason=texts),
    st.builds(LoggedOut, revoked=st.booleans()),
    st.builds(Snapshot, state=token_states),
    st.builds(LegacyImported, source=texts, had_issued_at=st.booleans()),
)
#: Server names meant to break a file-name mapping.
hostile_names = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "..\\..\\windows",
            "/abs/path",
            "a\0b",
            "CON",
            "nul",
            "COM1.txt",
            "x" * 300,
            "caf\u00e9",
            "cafe\u0301",
            "Notion",
            "notion",
            ".hidden",
            "-rf",
            "\u202etxt.exe",
        ]
    ),
)


# --- child-process workers ----------------------------------------------------


def sample_tokens(index: int, *, size: int = 40) -> TokenSet:
    """A token set whose access token is ``size`` characters and names ``index``."""
    access = f"at-{index}-".ljust(size, "x")
    return TokenSet(
        access_token=access, refresh_token=f"rt-{index}", issued_at=1000.0 + index, expires_in=3600
    )


def append_worker(token_dir: str, server: str, writer: int, count: int, barrier: Barrier) -> None:
    """Append ``count`` events tagged ``w<writer>-<n>``; every seventh one is larger than 8 KiB."""
    log = TokenStore(Path(token_dir), compact_threshold=1 << 40).log(server)
    barrier.wait(timeout=60)
    for n in range(count):
        size = 9000 + 100 * writer if n % 7 == 3 else 40
        event: LogEvent
        if n % 2:
            event = AuthorizationStarted(reason=f"w{writer}-{n}")
        else:
            event = TokensIssued(tokens=sample_tokens(n, size=size), grant=f"w{writer}-{n}")
        log.append([event], at=time.time())


def kill_target_worker(
    token_dir: str, server: str, start: int, compact_threshold: int, acks: Connection
) -> None:
    """Append events until killed, sending each one's number over ``acks`` once ``append`` returned."""
    log = TokenStore(Path(token_dir), compact_threshold=compact_threshold).log(server)
    rng = random.Random(os.getpid())
    for n in range(start, start + 1_000_000):
        size = rng.choice([40, 200, 3000, 9000])
        log.append([TokensIssued(tokens=sample_tokens(n, size=size), grant=f"n{n}")], at=time.time())
        acks.send(n)


# --- refresh against a local authorization server -----------------------------

CLIENT_ID = "tether-test-client"
REDIRECT_URI = "http://127.0.0.1:9/callback"


def fingerprint(secret: str | None) -> str:
    """A short digest of a secret, safe to send between processes and print."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:16]


def authorize(client: httpx2.Client, base_url: str, *, received_at: float) -> TokenSet:
    """The browser step, done headless: auto-approved code + PKCE, then the code exchange."""
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    answer = client.get(
        f"{base_url}/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "state": "s" * 22,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert answer.status_code == 302, answer.status_code
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    response = client.post(
        f"{base_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
        },
    )
    response.raise_for_status()
    tokens = TokenSet.from_token_response(response.json(), received_at=received_at)
    assert tokens is not None
    return tokens


def refresh(
    client: httpx2.Client, base_url: str, current: TokenSet, *, received_at: float
) -> TokenSet | None:
    """One refresh-token grant; None when the server answers ``invalid_grant``."""
    response = client.post(
        f"{base_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": current.refresh_token, "client_id": CLIENT_ID},
    )
    if response.status_code == 400 and response.json().get("error") == "invalid_grant":
        return None
    response.raise_for_status()
    tokens = TokenSet.from_token_response(response.json(), received_at=received_at, previous=current)
    assert tokens is not None
    return tokens


def expiry_round_worker(
    token_dir: str, server: str, base_url: str, rounds: int, barrier: Barrier, report: Connection
) -> None:
    """At each round's barrier the stored token is expired (virtual clock); refresh it at most once.

    The protocol under test: lock, re-read, refresh only if still stale, append, release.
    Reports ``(round, refreshed_here)`` per round, then the final refresh token's fingerprint.
    """
    log = TokenStore(Path(token_dir)).log(server)
    with httpx2.Client(timeout=10.0) as client:
        for round_ in range(1, rounds + 1):
            now = round_ * ROUND_SECONDS  # everyone agrees the token from the previous round has expired
            barrier.wait(timeout=60)
            refreshed = False
            with log.locked(timeout=60) as locked:
                state = locked.read().state
                assert state.tokens is not None
                if state.freshness(now) is not Freshness.VALID:
                    tokens = refresh(client, base_url, state.tokens, received_at=now)
                    assert tokens is not None, "invalid_grant: a refresh token was reused"
                    locked.append([TokensIssued(tokens=tokens, grant="refresh_token")], at=now)
                    refreshed = True
            report.send((round_, refreshed))
    final = log.read().state
    report.send(("final", fingerprint(final.refresh_token)))


def refresh_kill_target_worker(token_dir: str, server: str, base_url: str, acks: Connection) -> None:
    """Refresh and append until killed; fall back to the (headless) browser step on invalid_grant.

    Sends ``(kind, access-token fingerprint)`` after each append returned.
    """
    log = TokenStore(Path(token_dir)).log(server)
    with httpx2.Client(timeout=10.0) as client:
        for _ in range(1_000_000):
            with log.locked(timeout=30) as locked:
                state = locked.read().state
                now = time.time()
                tokens = (
                    None if state.tokens is None else refresh(client, base_url, state.tokens, received_at=now)
                )
                if tokens is not None:
                    locked.append([TokensIssued(tokens=tokens, grant="refresh_token")], at=now)
                    acks.send(("refresh", fingerprint(tokens.access_token)))
                    continue
                locked.append([RefreshFailedEvent(reason="invalid_grant", final=True)], at=now)
                tokens = authorize(client, base_url, received_at=now)
                locked.append([TokensIssued(tokens=tokens, grant="authorization_code")], at=now)
                acks.send(("browser", fingerprint(tokens.access_token)))
