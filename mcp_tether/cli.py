"""The ``mcp-tether`` command line (also ``python -m mcp_tether``).

Commands that connect nothing (``status``, ``replay``, ``--help``) import
neither the mcp client stack nor httpx2: they start in a fraction of the time.
Everything heavy is imported inside the command that needs it.

Exit codes: 0 the job succeeded; 1 the job failed (a server, a log, a
simulation); 2 the command line was wrong (unknown option or server,
malformed ``--args``, a file argument that does not exist); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import attrs

from mcp_tether.replay import (
    LogFileError,
    TimelineEntry,
    build_timeline,
    condition_style,
    describe_tokens,
    format_duration,
    format_time,
    read_log_file,
    timeline_json,
    timeline_text,
)
from mcp_tether.statemachine.tokens import DEFAULT_REFRESH_BUFFER, TokenState

if TYPE_CHECKING:
    from mcp.types import CallToolResult, Tool

    from mcp_tether.adapters.config import PoolConfig, ServerConfig

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandFailed",
    "Console",
    "Pool",
    "UsageError",
    "build_parser",
    "main",
    "make_pool",
    "wall_clock",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = """exit codes:
  0    the job succeeded
  1    the job failed (a server, a token log, a simulation found a violation)
  2    usage error (unknown option or server, malformed --args, missing file)
  130  interrupted (Ctrl-C)

environment:
  MCP_TETHER_TOKEN_DIR  token directory (default ~/.claude/mcp-tokens)
  CONNECTED_SERVERS     comma-separated servers connected eagerly
  NO_COLOR              plain output even on a terminal"""

#: Wall-clock source for ages and token freshness (tests replace it).
wall_clock: Callable[[], float] = time.time


class UsageError(Exception):
    """The command line is wrong (exit code 2); the message says what to type instead."""


class CommandFailed(Exception):
    """The job failed (exit code 1); the message names the server or file and what to do."""


# --- output -----------------------------------------------------------------------------


@attrs.define
class Console:
    """Where output goes, and whether it may be coloured (only on a terminal, never with NO_COLOR)."""

    out: TextIO
    err: TextIO
    color: bool = False

    @classmethod
    def for_streams(cls, out: TextIO, err: TextIO, environ: Mapping[str, str] = os.environ) -> Console:
        """Colour when ``out`` is a terminal, ``NO_COLOR`` is unset and ``TERM`` is not ``dumb``."""
        tty = out.isatty() if hasattr(out, "isatty") else False
        color = tty and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"
        return cls(out=out, err=err, color=color)

    def paint(self, code: str, text: str) -> str:
        """``text`` in the ANSI style ``code`` when colour is on, unchanged otherwise."""
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def bold(self, text: str) -> str:
        return self.paint("1", text)

    def dim(self, text: str) -> str:
        return self.paint("2", text)

    def green(self, text: str) -> str:
        return self.paint("32", text)

    def red(self, text: str) -> str:
        return self.paint("31", text)

    def yellow(self, text: str) -> str:
        return self.paint("33", text)

    def timeline_styles(self) -> dict[str, Callable[[str], str]]:
        """The styles :func:`mcp_tether.replay.timeline_text` takes, in this console's colours."""
        return {"heading": self.bold, "dim": self.dim, "good": self.green, "bad": self.red, "warn": self.yellow}

    def line(self, text: str = "") -> None:
        """Print a line to standard output."""
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Print a line to standard error (progress, prompts)."""
        print(text, file=self.err, flush=True)

    def error(self, text: str) -> None:
        """Print an error to standard error."""
        print(f"mcp-tether: {self.red('error')}: {text}", file=self.err, flush=True)


# --- the pool, seen from here -------------------------------------------------------------


class Pool(Protocol):
    """The part of :class:`mcp_tether.pool.ServerPool` the commands use."""

    async def __aenter__(self) -> Pool: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def list_tools(self, name: str) -> list[Tool]: ...

    async def call_tool(self, name: str, tool: str, args: dict[str, Any]) -> CallToolResult: ...

    async def login(self, name: str) -> None: ...

    async def logout(self, name: str) -> bool: ...

    def state(self, name: str) -> str: ...


def make_pool(*, config_path: Path | None, token_dir: Path | None, on_url: Callable[[str], None]) -> Pool:
    """Build the real pool from the configuration (imports the mcp client stack).

    Tests replace this function to run the commands against a fake pool.

    Args:
        config_path: the configuration file, None for the default.
        token_dir: the token directory, None for the default.
        on_url: told each authorization URL before the browser opens it.

    Returns:
        An unopened pool.
    """
    from mcp_tether.pool import ServerPool

    pool: Pool = ServerPool.from_config(config_path=config_path, token_dir=token_dir, on_url=on_url)
    return pool


@attrs.define
class _BrowserWait:
    """Whether a browser authorization is pending, shared with the spinner."""

    console: Console
    pending: threading.Event = attrs.Factory(threading.Event)

    def show(self, url: str) -> None:
        """Show the URL the browser is about to open (it may open nothing on a machine without one)."""
        self.pending.set()
        self.console.note(f"Opening the browser to authorize; if nothing opens, visit:\n  {url}")


_SPINNER: Final = "|/-\\"


@contextlib.asynccontextmanager
async def _spinner(wait: _BrowserWait) -> AsyncIterator[None]:
    """While the block runs, show a spinner on a terminal once a browser authorization is pending."""
    err = wait.console.err
    if not (hasattr(err, "isatty") and err.isatty()):
        yield
        return
    drawn = False

    async def spin() -> None:
        nonlocal drawn
        for tick in range(10**9):  # bounded by the block, which is bounded by the authorization timeout
            if wait.pending.is_set():
                err.write(f"\r{_SPINNER[tick % 4]} waiting for the browser authorization... ")
                err.flush()
                drawn = True
            await asyncio.sleep(0.1)

    task = asyncio.create_task(spin())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if drawn:
            err.write("\r\033[K")
            err.flush()


async def _with_pool(args: argparse.Namespace, console: Console, job: Callable[[Pool], Awaitable[int]]) -> int:
    wait = _BrowserWait(console)
    pool = make_pool(config_path=args.config, token_dir=args.token_dir, on_url=wait.show)
    async with _spinner(wait), pool:
        return await job(pool)


def _run_pool_command(args: argparse.Namespace, console: Console, job: Callable[[Pool], Awaitable[int]]) -> int:
    """Run ``job`` on an opened pool, turning the pool's errors into exit codes and messages."""
    _check_config_argument(args)
    from mcp_tether.adapters.config import ConfigError
    from mcp_tether.errors import ServerNotFound, TetherError

    try:
        return asyncio.run(_with_pool(args, console, job))
    except ServerNotFound as error:
        raise UsageError(str(error)) from None
    except (TetherError, ConfigError) as error:
        raise CommandFailed(str(error)) from None


def _check_config_argument(args: argparse.Namespace) -> None:
    config: Path | None = args.config
    if config is not None and not config.is_file():
        raise UsageError(
            f'{config}: no such configuration file; give the path of a file with "mcpServers" '
            "(for example ~/.claude.json), or leave out --config to use the default"
        )


# --- status ------------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace) -> PoolConfig:
    _check_config_argument(args)
    from mcp_tether.adapters.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as error:
        raise CommandFailed(str(error)) from None


def _describe_transport(server: ServerConfig) -> str:
    from mcp_tether.adapters.config import HttpServer, StdioServer

    transport = server.transport
    if isinstance(transport, HttpServer):
        return f"{transport.kind} {transport.url}"
    if isinstance(transport, StdioServer):
        return " ".join(["stdio", transport.command, *transport.args])
    return "unusable"


def _ago(seconds: float) -> str:
    return f"{format_duration(seconds)} ago" if seconds >= 0 else f"{format_duration(seconds)} in the future"


def _server_status(server: ServerConfig, token_dir: Path | None, now: float, refresh_buffer: float) -> dict[str, Any]:
    """One server's status as a JSON-able dict (the token log is parsed read-only, without a lock)."""
    from mcp_tether.adapters.config import HttpServer
    from mcp_tether.adapters.token_store import TokenStore

    entry: dict[str, Any] = {
        "server": server.name,
        "mode": "lazy" if server.lazy else "eager",
        "transport": _describe_transport(server),
        "problem": server.problem,
        "log": None,
        "tokens": None,
        "last_event": None,
    }
    if not isinstance(server.transport, HttpServer):
        return entry
    path = TokenStore(token_dir).log(server.name).path
    if not path.exists():
        entry["tokens"] = {"condition": "none", "text": describe_tokens(TokenState(), now).text}
        return entry
    entry["log"] = str(path)
    try:
        log = read_log_file(path, server=server.name)
    except LogFileError as error:
        entry["tokens"] = {"condition": "unreadable", "text": f"unreadable: {error}"}
        return entry
    timeline = build_timeline(log, now=now, refresh_buffer=refresh_buffer)
    current = timeline.current
    entry["tokens"] = {"condition": current.condition, "text": current.text, "expires_at": current.expires_at}
    last = next((item for item in reversed(timeline.items) if isinstance(item, TimelineEntry)), None)
    if last is not None:
        entry["last_event"] = {"seq": last.seq, "at": last.at, "kind": last.kind, "summary": last.summary}
    return entry


def command_status(args: argparse.Namespace, console: Console) -> int:
    """Every configured server: lazy or eager, transport, token state, last event. Reads only."""
    config = _load_config(args)
    now = wall_clock()
    entries = [_server_status(server, args.token_dir, now, args.refresh_buffer) for server in config.servers.values()]
    if args.json:
        for entry in entries:
            console.line(json.dumps(entry, sort_keys=True))
        return EXIT_OK
    if not config.found:
        console.line(f"No configuration file at {config.path}: no servers configured.")
        return EXIT_OK
    console.line(console.bold(f"{len(entries)} servers configured in {config.path}"))
    for name in config.unknown_eager:
        console.line(console.yellow(f"warning: CONNECTED_SERVERS names {name!r}, which is not configured"))
    for entry in entries:
        console.line()
        mode = entry["mode"] if entry["problem"] is None else console.red("misconfigured")
        console.line(f"{console.bold(entry['server'])}  {mode}  {entry['transport']}")
        if entry["problem"] is not None:
            console.line(f"  problem: {console.red(entry['problem'])}")
        tokens = entry["tokens"]
        if tokens is None and entry["problem"] is None:
            console.line("  tokens: not used (no OAuth on this transport)")
        elif tokens is not None:
            style = condition_style(tokens["condition"], good=console.green, warn=console.yellow, bad=console.red)
            console.line(f"  tokens: {style(tokens['text'])}")
        last = entry["last_event"]
        if last is not None:
            console.line(
                f"  last event: #{last['seq']} {last['kind']} at {format_time(last['at'])} "
                f"({_ago(now - last['at'])}): {last['summary']}"
            )
    return EXIT_OK


# --- replay ----------------------------------------------------------------------------------------


def _log_path(target: str, token_dir: Path | None) -> tuple[Path, str | None]:
    """A FILE argument as given, or the log file of a SERVER in the token directory."""
    path = Path(target)
    if path.suffix == ".jsonl" or os.sep in target or path.is_file():
        if not path.is_file():
            raise UsageError(f"{target}: no such token log file; give a .jsonl file or a configured server name")
        return path, None
    from mcp_tether.adapters.token_store import TokenStore

    store = TokenStore(token_dir)
    path = store.log(target).path
    if not path.is_file():
        raise CommandFailed(
            f"server {target!r}: no token log at {path}; the server has never been authorized with this token "
            "directory. Check the name (mcp-tether status lists the servers) or point --token-dir "
            "(or $MCP_TETHER_TOKEN_DIR) at the right directory."
        )
    return path, target


def command_replay(args: argparse.Namespace, console: Console) -> int:
    """A token log as a timeline; never modifies the log."""
    path, server = _log_path(args.target, args.token_dir)
    try:
        log = read_log_file(path, server=server)
    except LogFileError as error:
        raise CommandFailed(str(error)) from None
    timeline = build_timeline(log, now=wall_clock(), refresh_buffer=args.refresh_buffer)
    if args.json:
        for obj in timeline_json(timeline):
            console.line(json.dumps(obj, sort_keys=True))
    else:
        for text in timeline_text(timeline, **console.timeline_styles()):
            console.line(text)
    return EXIT_OK


# --- commands over the pool ------------------------------------------------------------------------


def command_tools(args: argparse.Namespace, console: Console) -> int:
    """List a server's tools (connects, authorizing if needed)."""

    async def job(pool: Pool) -> int:
        tools = await pool.list_tools(args.server)
        if args.json:
            for tool in tools:
                console.line(json.dumps(tool.model_dump(mode="json", by_alias=True, exclude_none=True)))
            return EXIT_OK
        console.line(console.bold(f"{len(tools)} tools on server {args.server!r}"))
        for tool in tools:
            description = (tool.description or "").strip().splitlines()
            console.line(f"  {console.bold(tool.name)}" + (f"  {description[0]}" if description else ""))
        return EXIT_OK

    return _run_pool_command(args, console, job)


def _parse_arguments(args: argparse.Namespace) -> dict[str, Any]:
    if args.arguments is not None and args.args is not None:
        raise UsageError("the arguments were given twice (ARGS and --args); give them once")
    label, text = ("ARGS", args.arguments) if args.arguments is not None else ("--args", args.args or "{}")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError(
            f"{label}: not valid JSON ({error}); give a JSON object, for example '{{\"query\": \"cats\"}}'"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{label}: expected a JSON object of argument names and values, not {type(value).__name__}; "
            'for example \'{"query": "cats"}\''
        )
    return value


def command_call(args: argparse.Namespace, console: Console) -> int:
    """Call one tool and print its result."""
    arguments = _parse_arguments(args)

    async def job(pool: Pool) -> int:
        result = await pool.call_tool(args.server, args.tool, arguments)
        if args.json:
            console.line(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)))
        else:
            for item in result.content:
                text = getattr(item, "text", None)
                console.line(text if isinstance(text, str) else f"[{item.type} content]")
            if result.structured_content is not None and not result.content:
                console.line(json.dumps(result.structured_content, indent=2))
        if result.is_error:
            console.error(
                f"server {args.server!r}: tool {args.tool!r} reported an error (shown above); "
                "check the arguments (mcp-tether tools SERVER --json shows their schema)"
            )
            return EXIT_FAILED
        return EXIT_OK

    return _run_pool_command(args, console, job)


def command_login(args: argparse.Namespace, console: Console) -> int:
    """Authorize in the browser now."""

    async def job(pool: Pool) -> int:
        await pool.login(args.server)
        console.line(
            f"server {args.server!r}: authorized; the tokens are stored in the token log ({pool.state(args.server)})"
        )
        return EXIT_OK

    return _run_pool_command(args, console, job)


def command_logout(args: argparse.Namespace, console: Console) -> int:
    """Revoke the tokens where the server offers it, and log out."""

    async def job(pool: Pool) -> int:
        revoked = await pool.logout(args.server)
        how = "revoked at the authorization server" if revoked else "forgotten (the server offers no revocation)"
        console.line(f"server {args.server!r}: logged out; the tokens were {how}")
        return EXIT_OK

    return _run_pool_command(args, console, job)


# --- simulate ----------------------------------------------------------------------------------------

#: ``--profile`` presets: (examples, steps per example).
PROFILES: Final = {"fast": (100, 40), "long": (2000, 150)}


@contextlib.contextmanager
def _progress(console: Console, counts: Any, examples: int) -> Iterator[None]:
    """On a terminal, redraw the running counts twice a second while the block runs."""
    err = console.err
    if not (hasattr(err, "isatty") and err.isatty()):
        yield
        return
    stop = threading.Event()

    def draw() -> None:
        while not stop.wait(0.5):
            err.write(
                f"\r  examples {counts.examples}/{examples}  steps {counts.steps}  refreshes {counts.refreshes}  "
                f"restarts {counts.restarts}  "
            )
            err.flush()

    thread = threading.Thread(target=draw, name="simulate progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)
        err.write("\r\033[K")
        err.flush()


def command_simulate(args: argparse.Namespace, console: Console) -> int:
    """Hypothesis-driven simulation against the real machine and token log."""
    from mcp_tether.testing.simulation import INVARIANTS, SimulationCounts, run_simulation

    default_examples, default_steps = PROFILES[args.profile]
    examples = args.examples if args.examples is not None else default_examples
    steps = args.steps if args.steps is not None else default_steps
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    log = "an in-memory token log" if args.memory_log else "the real token log (in a temporary directory)"
    console.line(
        console.bold(
            f"Simulating {args.processes} process{'es' if args.processes > 1 else ''} sharing {log}: "
            f"{examples} examples of up to {steps} steps, seed {seed}"
        )
    )
    console.line("Invariants checked after every step:")
    for invariant in INVARIANTS:
        console.line(f"  - {invariant}")
    counts = SimulationCounts()
    with _progress(console, counts, examples):
        report = run_simulation(
            steps=steps,
            examples=examples,
            seed=seed,
            processes=args.processes,
            real_log=not args.memory_log,
            counts=counts,
        )
    summary = (
        f"{counts.examples} examples, {counts.steps} steps: {counts.refreshes} refreshes, "
        f"{counts.authorizations} browser authorizations, {counts.reuse_detections} refresh-token reuse "
        f"detections, {counts.restarts} crashes and restarts, {counts.torn_appends} torn appends, "
        f"{counts.peer_actions} actions by other processes"
    )
    if report.ok:
        console.line(console.green(f"All invariants held ({summary})."))
        return EXIT_OK
    console.line(console.red(f"An invariant was violated: {report.failure}"))
    if report.minimal_example:
        console.line("Minimal failing sequence:")
        for text in report.minimal_example:
            console.line(f"  {text}")
    again = f"mcp-tether simulate --seed {seed} --steps {steps} --examples {examples} --processes {args.processes}"
    console.line(f"Reproduce with: {again}{' --memory-log' if args.memory_log else ''}")
    console.line(f"({summary})")
    return EXIT_FAILED


# --- demo -------------------------------------------------------------------------------------------------


def command_demo(args: argparse.Namespace, console: Console) -> int:
    """The whole lifecycle of one OAuth server, on loopback, in a temporary directory."""
    from mcp_tether.demo import run_demo

    return run_demo(console, keep=args.keep)


# --- the parser -------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, not {value}")
    return value


def _processes(text: str) -> int:
    from mcp_tether.testing.simulation import MAX_PROCESSES  # only `simulate` parses this

    value = _positive_int(text)
    if value > MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"at most {MAX_PROCESSES} processes are simulated, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not 0 <= value < 86_400:
        raise argparse.ArgumentTypeError(f"expected 0 to 86400 seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mcp-tether`` (every subcommand, with its help)."""
    parser = argparse.ArgumentParser(
        prog="mcp-tether",
        description="Lazy, self-refreshing connections to MCP servers, and the tools to see what they do.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", type=Path, metavar="FILE", help="MCP configuration (default $MCP_CONFIG_PATH or ~/.claude.json)"
    )
    tokens = argparse.ArgumentParser(add_help=False)
    tokens.add_argument(
        "--token-dir",
        type=Path,
        metavar="DIR",
        help="token directory (default $MCP_TETHER_TOKEN_DIR or ~/.claude/mcp-tokens)",
    )
    buffer = argparse.ArgumentParser(add_help=False)
    buffer.add_argument(
        "--refresh-buffer",
        type=_seconds,
        default=DEFAULT_REFRESH_BUFFER,
        metavar="SECONDS",
        help=f"refresh window before expiry (default {DEFAULT_REFRESH_BUFFER:g})",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="one JSON object per line, for tools")

    def add(name: str, help_text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=list(parents),
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    demo = add("demo", "walk one OAuth server through its whole lifecycle on loopback (about 10 s)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory for inspection")
    demo.set_defaults(handler=command_demo)

    status = add(
        "status", "every configured server and its token state (connects nothing)", config, tokens, buffer, as_json
    )
    status.set_defaults(handler=command_status)

    replay = add("replay", "a token log as a timeline, secrets redacted (modifies nothing)", tokens, buffer, as_json)
    replay.add_argument("target", metavar="SERVER|FILE", help="a configured server name, or a .jsonl token log")
    replay.set_defaults(handler=command_replay)

    tools = add("tools", "list a server's tools (connects, authorizing if needed)", config, tokens, as_json)
    tools.add_argument("server", metavar="SERVER")
    tools.set_defaults(handler=command_tools)

    call = add("call", "call one tool and print its result", config, tokens, as_json)
    call.add_argument("server", metavar="SERVER")
    call.add_argument("tool", metavar="TOOL")
    call.add_argument(
        "arguments",
        nargs="?",
        metavar="ARGS",
        help="""the arguments as a JSON object, e.g. '{"query": "cats"}' (default {})""",
    )
    call.add_argument("--args", metavar="JSON", help="the same, as an option")
    call.set_defaults(handler=command_call)

    login = add("login", "authorize a server in the browser now", config, tokens)
    login.add_argument("server", metavar="SERVER")
    login.set_defaults(handler=command_login)

    logout = add("logout", "revoke a server's tokens where offered and log out", config, tokens)
    logout.add_argument("server", metavar="SERVER")
    logout.set_defaults(handler=command_logout)

    simulate = add("simulate", "Hypothesis-driven simulation of expiry, refresh, crashes and concurrent processes")
    simulate.add_argument("--seed", type=int, help="random seed; the same seed repeats the same run (default random)")
    simulate.add_argument("--steps", type=_positive_int, help="longest sequence per example (default from --profile)")
    simulate.add_argument("--examples", type=_positive_int, help="sequences to try (default from --profile)")
    simulate.add_argument("--processes", type=_processes, default=2, help="processes sharing the log (default 2)")
    simulate.add_argument(
        "--profile", choices=sorted(PROFILES), default="fast", help="fast: 100 examples x 40 steps; long: 2000 x 150"
    )
    simulate.add_argument("--memory-log", action="store_true", help="an in-memory log instead of the real file store")
    simulate.set_defaults(handler=command_simulate)
    return parser


def _version() -> str:
    from mcp_tether import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mcp-tether`` with ``argv`` (default ``sys.argv[1:]``).

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit code: 0 ok, 1 the job failed, 2 usage error, 130 interrupted.
    """
    console = Console.for_streams(sys.stdout, sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    from mcp_tether.adapters.token_store import TokenLogError

    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except UsageError as error:
        console.error(str(error))
        return EXIT_USAGE
    except (CommandFailed, TokenLogError) as error:
        console.error(str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
