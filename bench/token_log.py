"""Token-log benchmark: replay throughput against a plain json.loads loop, replay after
compaction, and append latency with fsync.

Run: ``python bench/token_log.py [--events 100000] [--appends 500] [--dir PATH]``.
The log lives in a temporary directory (or ``--dir``, to measure a particular disk).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mcp_tether.adapters.token_store import TokenStore
from mcp_tether.statemachine.tokenlog import AuthorizationStarted, LogEvent, RefreshFailedEvent, TokensIssued
from mcp_tether.statemachine.tokens import TokenSet

SERVER = "bench"
BATCH = 1000


def event(index: int) -> LogEvent:
    """A realistic mix: mostly refreshes with JWT-sized access tokens."""
    if index % 10 == 8:
        return RefreshFailedEvent(reason="timeout", final=False)
    if index % 10 == 9:
        return AuthorizationStarted(reason="scope step-up")
    tokens = TokenSet(
        access_token=f"eyJ{index:08d}".ljust(900, "a"),
        refresh_token=f"rt_{index:08d}".ljust(48, "r"),
        scope="mcp read write",
        issued_at=1_767_225_600.0 + index * 3600,
        expires_in=3600,
    )
    return TokensIssued(tokens=tokens, grant="refresh_token")


def timed(fn: object) -> tuple[float, object]:
    assert callable(fn)
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def plain_json_loop(path: Path) -> int:
    count = 0
    with path.open("rb") as file:
        for line in file:
            json.loads(line)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        token_dir = Path(tmp)
        log = TokenStore(token_dir, compact_threshold=1 << 40).log(SERVER)
        build_s, _ = timed(
            lambda: [
                log.append([event(i) for i in range(start, min(start + BATCH, args.events))], at=1.0)
                for start in range(0, args.events, BATCH)
            ]
        )
        size = log.path.stat().st_size

        plain_s, plain_count = timed(lambda: plain_json_loop(log.path))
        replay_s, replay = timed(lambda: TokenStore(token_dir).log(SERVER).read())
        assert plain_count == args.events == len(replay.records)  # type: ignore[attr-defined]

        log.compact()
        compacted_size = log.path.stat().st_size
        compact_replay_s, _ = timed(lambda: TokenStore(token_dir).log(SERVER).read())

        small = TokenStore(token_dir).log("append-latency")
        latencies = []
        for index in range(args.appends):
            started = time.perf_counter()
            small.append([event(index)], at=float(index))
            latencies.append(time.perf_counter() - started)
        latencies.sort()

    mib = size / (1 << 20)
    print(f"log: {args.events} events, {mib:.1f} MiB (built in {build_s:.1f} s, batches of {BATCH})")
    print(f"{'':34} {'seconds':>9} {'events/s':>12} {'MiB/s':>8}")
    for name, seconds in (("plain json.loads loop (baseline)", plain_s), ("TokenStore replay", replay_s)):
        print(f"{name:34} {seconds:9.3f} {args.events / seconds:12,.0f} {mib / seconds:8.1f}")
    print(f"replay / baseline: {replay_s / plain_s:.2f}x")
    print(
        f"after compaction: {compacted_size} bytes, replay {compact_replay_s * 1e3:.2f} ms "
        f"(x{replay_s / compact_replay_s:,.0f} faster)"
    )
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"append with fsync ({args.appends} single-event appends, lock + tail re-read + write + fsync): "
        f"median {statistics.median(latencies) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
        f"max {latencies[-1] * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
