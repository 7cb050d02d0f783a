"""Run the MCP conformance suite's client scenarios against a conformance client, one at a time.

Usage (after `eval "$(bash .ci/install-node.sh)"`):

    python tests/conformance/run.py [--client tests/conformance/client.py] [--scenario NAME ...]
        [--conformance .conformance/bin/conformance] [--expected-failures FILE] [--timeout 30]
        [--out DIR] [--table FILE]

Each scenario runs as its own `conformance client --command "exec <python> <client>" --scenario NAME`,
so the suite judges the client's exit code and timeout as well as its checks (suite mode ignores
both), and timing-based scenarios (`sse-retry`) do not compete with others for the CPU. `exec`
makes the suite's timeout reach the client rather than only the shell wrapper.

A scenario passes when the suite says so: no FAILURE or WARNING check, no timeout, and a zero exit
code where the scenario requires one. The expected-failures file (the suite's own format, plus a
`reasons` map that this runner requires for every entry) lists the scenarios that must fail; the
run fails on any unexpected failure and on any expected failure that passed (a stale entry).

Per scenario, DIR/<scenario>/ keeps the suite's checks.json, the client's stdout.txt and
stderr.txt, and harness.log (the suite's own output). These contain the suite's test credentials
from MCP_CONFORMANCE_CONTEXT, so they are kept there and never printed.

Exit status: 0 when every outcome was expected, 1 otherwise, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import yaml

__all__ = [
    "ExpectedFailures",
    "Outcome",
    "RunnerError",
    "ScenarioResult",
    "judge",
    "list_client_scenarios",
    "load_expected_failures",
    "main",
    "markdown_table",
    "run_scenario",
]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLIENT = REPO / "tests" / "conformance" / "client.py"
DEFAULT_EXPECTED_FAILURES = REPO / "tests" / "conformance" / "expected-failures.yml"
DEFAULT_CONFORMANCE = REPO / ".conformance" / "bin" / "conformance"
DEFAULT_OUT = REPO / ".conformance" / "results"

# Extra time the suite gets beyond the client's timeout to start its servers and write results.
HARNESS_GRACE_SECONDS = 30.0
# A path is passed through the suite's `command.split(" ")` and then a shell: keep it to plain characters.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./+=:@%,-]+$")
_SCENARIO_LINE = re.compile(r"^\s+-\s+(\S+)(?:\s+\[.*\])?\s*$")
_JUDGED_STATUSES = ("SUCCESS", "FAILURE", "WARNING")


class RunnerError(Exception):
    """The run could not start or a scenario's results could not be read; the message says what to fix."""


class Outcome(enum.Enum):
    """How a scenario's result compares with the expected-failures file."""

    PASS = "pass"
    EXPECTED_FAILURE = "fail (expected)"
    UNEXPECTED_FAILURE = "FAIL"
    UNEXPECTED_PASS = "pass (unexpected: remove from expected failures)"

    @property
    def ok(self) -> bool:
        """Whether this outcome leaves the run green."""
        return self in (Outcome.PASS, Outcome.EXPECTED_FAILURE)


@attrs.frozen(kw_only=True)
class ExpectedFailures:
    """Client scenarios expected to fail, each with the reason it fails."""

    reasons: dict[str, str]

    def __contains__(self, scenario: object) -> bool:
        return scenario in self.reasons


@attrs.frozen(kw_only=True)
class ScenarioResult:
    """One scenario's run as the suite judged it."""

    scenario: str
    passed: bool
    checks_passed: int
    checks_total: int
    seconds: float
    problems: tuple[str, ...]
    result_dir: Path


def load_expected_failures(path: Path, known_scenarios: Iterable[str] | None = None) -> ExpectedFailures:
    """Read an expected-failures file: the suite's `client:` list plus a `reasons:` map.

    Args:
        path: The YAML file.
        known_scenarios: When given, every listed scenario must be one of these.

    Returns:
        The expected failures with their reasons.

    Raises:
        RunnerError: The file is missing or malformed, an entry has no reason, or names an unknown
            scenario.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunnerError(f"cannot read the expected-failures file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise RunnerError(f"the expected-failures file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return ExpectedFailures(reasons={})
    if not isinstance(data, dict):
        raise RunnerError(f"the expected-failures file {path} must be a mapping with 'client' and 'reasons'")
    client = data.get("client") or []
    reasons = data.get("reasons") or {}
    if not isinstance(client, list) or not all(isinstance(name, str) for name in client):
        raise RunnerError(f"in {path}, 'client' must be a list of scenario names")
    if not isinstance(reasons, dict):
        raise RunnerError(f"in {path}, 'reasons' must map each scenario in 'client' to why it fails")
    known = set(known_scenarios) if known_scenarios is not None else None
    result: dict[str, str] = {}
    for name in client:
        reason = reasons.get(name)
        if not isinstance(reason, str) or not reason.strip():
            raise RunnerError(f"in {path}, the expected failure {name!r} has no reason under 'reasons'")
        if known is not None and name not in known:
            raise RunnerError(
                f"in {path}, {name!r} is not a client scenario of this suite; remove it or fix the name"
            )
        result[name] = " ".join(reason.split())
    extra = sorted(set(reasons) - set(client))
    if extra:
        raise RunnerError(f"in {path}, 'reasons' lists scenarios missing from 'client': {', '.join(extra)}")
    return ExpectedFailures(reasons=result)


def list_client_scenarios(conformance: Path) -> list[str]:
    """Ask the suite for its client scenarios (`conformance list --client`).

    Args:
        conformance: The suite's command.

    Returns:
        The scenario names in the suite's order.

    Raises:
        RunnerError: The suite could not be run or listed no scenario.
    """
    try:
        listing = subprocess.run(
            [str(conformance), "list", "--client"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunnerError(f"cannot run the conformance suite {conformance}: {exc}") from exc
    if listing.returncode != 0:
        raise RunnerError(
            f"`{conformance} list --client` exited with {listing.returncode}: {listing.stderr.strip()[-500:]}"
        )
    names = [m.group(1) for line in listing.stdout.splitlines() if (m := _SCENARIO_LINE.match(line))]
    if not names:
        raise RunnerError(f"`{conformance} list --client` listed no scenario; is the suite installed?")
    return names


def _plain(path: Path, what: str) -> str:
    text = str(path)
    if not _PLAIN_PATH.match(text):
        raise RunnerError(
            f"the {what} path {text!r} has spaces or shell characters, which the suite's command "
            "splitting cannot carry; move it to a plain path"
        )
    return text


def _scenario_dir(out: Path, scenario: str) -> Path:
    return out / scenario.replace("/", "__")


def _problems(checks: Sequence[dict[str, object]], harness_output: str) -> tuple[str, ...]:
    problems = [
        f"{check.get('status')}: {check.get('name') or check.get('id')}"
        for check in checks
        if check.get("status") in ("FAILURE", "WARNING")
    ]
    if "Client timed out after" in harness_output:
        problems.append("client timed out")
    exited = re.search(r"Client exited with code (-?\d+)", harness_output)
    if exited:
        problems.append(f"client exited with {exited.group(1)}")
    return tuple(problems)


def run_scenario(
    scenario: str,
    *,
    conformance: Path,
    python: Path,
    client: Path,
    out: Path,
    timeout: float,
) -> ScenarioResult:
    """Run one client scenario through the suite and read its verdict and checks.

    Args:
        scenario: The scenario name, e.g. `auth/metadata-default`.
        conformance: The suite's command.
        python: The interpreter that runs the client.
        client: The conformance client script; the suite appends the server URL.
        out: The results directory; this scenario's files go to a fresh subdirectory.
        timeout: Seconds the client may run.

    Returns:
        The scenario's result.

    Raises:
        RunnerError: A path cannot be passed to the suite, or the suite wrote no checks.json.
    """
    command = f"exec {_plain(python, 'python')} {_plain(client, 'client')}"
    result_dir = _scenario_dir(out, scenario)
    result_dir.mkdir(parents=True, exist_ok=False)
    args = [
        str(conformance), "client", "--command", command, "--scenario", scenario,
        "--timeout", str(int(timeout * 1000)), "-o", str(result_dir),
    ]  # fmt: skip
    started = time.monotonic()
    try:
        harness = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout + HARNESS_GRACE_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RunnerError(
            f"the conformance suite did not finish scenario {scenario} "
            f"within {timeout + HARNESS_GRACE_SECONDS:.0f} s"
        ) from exc
    seconds = time.monotonic() - started
    harness_output = harness.stdout + harness.stderr
    (result_dir / "harness.log").write_text(harness_output, encoding="utf-8")
    written = sorted(result_dir.rglob("checks.json"))
    if not written:
        raise RunnerError(
            f"the conformance suite wrote no checks.json for scenario {scenario} "
            f"(exit {harness.returncode}); see {result_dir / 'harness.log'}"
        )
    suite_dir = written[-1].parent
    if suite_dir != result_dir:  # the suite nests its files under <scenario>-<timestamp>/
        for name in ("checks.json", "stdout.txt", "stderr.txt"):
            if (suite_dir / name).exists():
                (suite_dir / name).replace(result_dir / name)
        shutil.rmtree(result_dir / suite_dir.relative_to(result_dir).parts[0])
    checks = json.loads((result_dir / "checks.json").read_text(encoding="utf-8"))
    judged = [check for check in checks if check.get("status") in _JUDGED_STATUSES]
    return ScenarioResult(
        scenario=scenario,
        passed=harness.returncode == 0,
        checks_passed=sum(1 for check in judged if check["status"] == "SUCCESS"),
        checks_total=len(judged),
        seconds=seconds,
        problems=_problems(checks, harness_output),
        result_dir=result_dir,
    )


def judge(result: ScenarioResult, expected: ExpectedFailures) -> Outcome:
    """Compare a scenario's verdict with the expected failures.

    Args:
        result: The scenario's result.
        expected: The expected failures.

    Returns:
        The outcome.
    """
    if result.passed:
        return Outcome.UNEXPECTED_PASS if result.scenario in expected else Outcome.PASS
    return Outcome.EXPECTED_FAILURE if result.scenario in expected else Outcome.UNEXPECTED_FAILURE


def markdown_table(results: Sequence[ScenarioResult], expected: ExpectedFailures) -> str:
    """Render the results as a markdown table with a notes column.

    Args:
        results: The scenario results, in run order.
        expected: The expected failures, whose reasons appear as notes.

    Returns:
        The table, ending with a newline.
    """
    lines = ["| scenario | result | checks | seconds | notes |", "| --- | --- | --- | ---: | --- |"]
    for result in results:
        outcome = judge(result, expected)
        notes = expected.reasons.get(result.scenario, "") if outcome is Outcome.EXPECTED_FAILURE else ""
        if not outcome.ok or (outcome is Outcome.EXPECTED_FAILURE and not notes):
            notes = "; ".join(result.problems)
        notes = notes.replace("|", "\\|")
        lines.append(
            f"| `{result.scenario}` | {outcome.value} | {result.checks_passed}/{result.checks_total} "
            f"| {result.seconds:.1f} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--client", type=Path, default=DEFAULT_CLIENT, help="conformance client script")
    parser.add_argument(
        "--python", type=Path, default=Path(sys.executable), help="interpreter for the client"
    )
    parser.add_argument(
        "--conformance",
        type=Path,
        default=Path(os.environ.get("CONFORMANCE_BIN", DEFAULT_CONFORMANCE)),
        help="the suite's command (default: $CONFORMANCE_BIN or .conformance/bin/conformance)",
    )
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--expected-failures", type=Path, default=DEFAULT_EXPECTED_FAILURES)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per scenario (default 30)")
    parser.add_argument("--out", type=Path, help="results directory (default .conformance/results/<time>)")
    parser.add_argument("--table", type=Path, help="also write the markdown table here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios, print and write the table, and return the exit status.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).

    Returns:
        0 when every outcome was expected, 1 when one was not, 2 when the run could not start.
    """
    args = _parse_args(argv)
    try:
        for path, what in ((args.conformance, "conformance suite"), (args.client, "client")):
            if not path.is_file():
                raise RunnerError(f"the {what} {path} does not exist; see tests/conformance/README.md")
        available = list_client_scenarios(args.conformance)
        expected = load_expected_failures(args.expected_failures, available)
        unknown = sorted(set(args.scenario or ()) - set(available))
        if unknown:
            raise RunnerError(
                f"unknown scenario(s) {', '.join(unknown)}; the suite has: {', '.join(available)}"
            )
        scenarios = args.scenario or available
        out = (args.out or DEFAULT_OUT / time.strftime("%Y%m%dT%H%M%S")).resolve()
        out.mkdir(parents=True, exist_ok=True)
        results = []
        for scenario in scenarios:
            result = run_scenario(
                scenario,
                conformance=args.conformance,
                python=args.python.absolute(),
                client=args.client.resolve(),
                out=out,
                timeout=args.timeout,
            )
            print(f"{judge(result, expected).value:>16}  {scenario} ({result.seconds:.1f} s)", flush=True)
            results.append(result)
    except RunnerError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(results, expected)
    print()
    print(table)
    (out / "results.md").write_text(table, encoding="utf-8")
    if args.table:
        args.table.write_text(table, encoding="utf-8")
    outcomes = [judge(result, expected) for result in results]
    bad = sum(1 for outcome in outcomes if not outcome.ok)
    print(
        f"conformance: {outcomes.count(Outcome.PASS)} passing, "
        f"{outcomes.count(Outcome.EXPECTED_FAILURE)} failing as expected, {bad} unexpected; "
        f"{sum(r.seconds for r in results):.0f} s; results in {out}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
