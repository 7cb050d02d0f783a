"""The token log shared by processes: concurrent appends, SIGKILL at any moment, refresh at expiry."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from multiprocessing.context import ForkServerContext
from pathlib import Path

import httpx2
import pytest
import token_log_support as support

from mcp_tether.adapters.token_store import TokenStore
from mcp_tether.statemachine.tokenlog import AuthorizationStarted, TokensIssued
from mcp_tether.testing.authserver import SimulatedAuthorizationServer, SimulatedClient
from mcp_tether.testing.serve import serve_loopback

pytestmark = pytest.mark.slow

SERVER = "shared"


@pytest.fixture(scope="module")
def ctx() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    context.set_forkserver_preload(["token_log_support"])
    return context


def join_all(processes: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    stuck = [p for p in processes if p.is_alive()]
    for process in stuck:
        process.kill()
        process.join(5)
    assert not stuck, f"{len(stuck)} processes did not finish within {timeout} s"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_ten_processes_append_concurrently_without_loss(tmp_path: Path, ctx: ForkServerContext) -> None:
    writers, count = 10, 60
    barrier = ctx.Barrier(writers)
    processes = [
        ctx.Process(target=support.append_worker, args=(str(tmp_path), SERVER, writer, count, barrier))
        for writer in range(writers)
    ]
    for process in processes:
        process.start()
    join_all(processes, timeout=60)

    log = TokenStore(tmp_path).log(SERVER)
    lines = log.path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    objects = [json.loads(line) for line in lines[:-1]]  # every line parses
    assert len(objects) == writers * count
    assert max(len(line) for line in lines) > 9000  # larger than Python's 8 KiB buffer
    assert [obj["seq"] for obj in objects] == list(range(1, writers * count + 1))
    replay = log.read()
    assert replay.warnings == ()
    per_writer: dict[str, list[int]] = {}
    for record in replay.records:
        event = record.event
        assert isinstance(event, TokensIssued | AuthorizationStarted)
        writer_tag, n = (event.grant if isinstance(event, TokensIssued) else event.reason).split("-")
        per_writer.setdefault(writer_tag, []).append(int(n))
    assert sorted(per_writer) == sorted(f"w{writer}" for writer in range(writers))
    assert all(ns == list(range(count)) for ns in per_writer.values())  # each writer's order kept


def drain(connection: multiprocessing.connection.Connection) -> Iterator[object]:
    while connection.poll():
        try:
            yield connection.recv()
        except EOFError:
            return


@pytest.mark.parametrize("compact_threshold", [1 << 40, 4096], ids=["plain", "compacting"])
def test_sigkill_at_random_moments_loses_no_acknowledged_event(
    tmp_path: Path, ctx: ForkServerContext, compact_threshold: int
) -> None:
    rng = random.Random(1234)
    acked: list[int] = []
    next_number = 0
    kills = 12
    for _ in range(kills):
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=support.kill_target_worker,
            args=(str(tmp_path), SERVER, next_number, compact_threshold, sender),
        )
        child.start()
        sender.close()
        assert receiver.poll(30), "the child never appended"
        time.sleep(rng.uniform(0.0, 0.05))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        acked += [n for n in drain(receiver) if isinstance(n, int)]
        receiver.close()
        next_number = (max(acked) + 1) * 10  # later numbers never collide with unacknowledged ones

        replay = TokenStore(tmp_path, compact_threshold=compact_threshold).log(SERVER).read()
        present = {
            int(record.event.grant[1:]) for record in replay.records if isinstance(record.event, TokensIssued)
        }
        if compact_threshold == 1 << 40:
            assert set(acked) <= present
        else:
            # A snapshot folds history away: the newest acknowledged tokens (or newer ones) must be current.
            assert replay.state.tokens is not None
            current = int(replay.state.tokens.access_token.split("-")[1])
            assert current >= max(acked)
    assert len(acked) > kills


@pytest.fixture
def auth_server() -> Iterator[tuple[SimulatedAuthorizationServer, str]]:
    server = SimulatedAuthorizationServer(
        clients=[SimulatedClient(client_id=support.CLIENT_ID, redirect_uris=(support.REDIRECT_URI,))],
        rotate_refresh_tokens=True,
        detect_refresh_reuse=True,
        access_token_lifetime=3600.0,
    )
    with serve_loopback(server.app) as url:
        yield server, url


def test_eight_processes_at_expiry_refresh_once_per_rotation(
    tmp_path: Path, ctx: ForkServerContext, auth_server: tuple[SimulatedAuthorizationServer, str]
) -> None:
    server, url = auth_server
    processes_count, rounds = 8, 5
    with httpx2.Client(timeout=10.0) as client:
        tokens = support.authorize(client, url, received_at=0.0)
    TokenStore(tmp_path).log(SERVER).append([TokensIssued(tokens=tokens, grant="authorization_code")], at=0.0)
    assert server.counters().refreshes == 0

    barrier = ctx.Barrier(processes_count)
    pipes = [ctx.Pipe(duplex=False) for _ in range(processes_count)]
    processes = [
        ctx.Process(
            target=support.expiry_round_worker, args=(str(tmp_path), SERVER, url, rounds, barrier, sender)
        )
        for _, sender in pipes
    ]
    for process in processes:
        process.start()
    for _, sender in pipes:
        sender.close()
    join_all(processes, timeout=90)
    reports = [list(drain(receiver)) for receiver, _ in pipes]
    rounds_seen = [report[:-1] for report in reports]
    assert all(len(seen) == rounds for seen in rounds_seen)

    counters = server.counters()
    assert counters.reuse_detected == 0
    assert counters.refreshes == rounds  # exactly one refresh on the wire per rotation
    refreshed_per_round = Counter(
        entry[0] for seen in rounds_seen for entry in seen if isinstance(entry, tuple) and entry[1]
    )
    assert refreshed_per_round == {round_: 1 for round_ in range(1, rounds + 1)}
    finals = {report[-1] for report in reports}
    assert len(finals) == 1  # every process ends with the same current refresh token
    replay = TokenStore(tmp_path).log(SERVER).read()
    assert replay.state.tokens is not None
    assert finals == {("final", support.fingerprint(replay.state.tokens.refresh_token))}
    with httpx2.Client(timeout=10.0) as client:  # and the authorization server still honours it
        assert support.refresh(client, url, replay.state.tokens, received_at=0.0) is not None


def test_sigkill_during_refreshes_costs_at_most_one_login_per_kill(
    tmp_path: Path, ctx: ForkServerContext, auth_server: tuple[SimulatedAuthorizationServer, str]
) -> None:
    server, url = auth_server
    rng = random.Random(99)
    acked: list[tuple[str, str]] = []
    kills = 8
    for _ in range(kills):
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=support.refresh_kill_target_worker, args=(str(tmp_path), SERVER, url, sender)
        )
        child.start()
        sender.close()
        assert receiver.poll(30), "the child never refreshed"
        time.sleep(rng.uniform(0.0, 0.3))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        acked += [ack for ack in drain(receiver) if isinstance(ack, tuple)]
        receiver.close()
        replay = TokenStore(tmp_path).log(SERVER).read()
        stored = {
            support.fingerprint(record.event.tokens.access_token)
            for record in replay.records
            if isinstance(record.event, TokensIssued)
        }
        assert {fp for _, fp in acked} <= stored
    logins = sum(1 for kind, _ in acked if kind == "browser")
    # The first login is the initial one; after that only a kill between the token response and
    # the append (the rotated refresh token never reached the log) may cost one more.
    assert 1 <= logins <= 1 + kills
    assert sum(1 for kind, _ in acked if kind == "refresh") >= kills
    assert server.counters().refreshes >= len(acked) - logins
