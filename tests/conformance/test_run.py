"""The conformance runner, against a stand-in for the suite that runs the client as the suite does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from run import DEFAULT_EXPECTED_FAILURES, RunnerError, load_expected_failures, main

# Behaves like `conformance` 0.1.16 for what the runner uses: `list --client`, and `client` running
# `<command> <server-url>` through a shell with MCP_CONFORMANCE_SCENARIO set, writing checks.json,
# stdout.txt and stderr.txt under -o DIR/<scenario>-<timestamp>/, exiting 1 on a failed scenario.
FAKE_SUITE = """#!{python}
import json, os, pathlib, subprocess, sys
SCENARIOS = ["good", "auth/bad", "auth/known-bad"]
args = sys.argv[1:]
if args == ["list", "--client"]:
    print("Client scenarios (test against a client):")
    print("\\n".join(f"  - {{name}} [2025-11-25]" for name in SCENARIOS))
    sys.exit(0)
options = dict(zip(args[1::2], args[2::2]))
scenario = options["--scenario"]
client = subprocess.run(
    options["--command"] + " http://127.0.0.1:9/mcp", shell=True, capture_output=True, text=True,
    env={{**os.environ, "MCP_CONFORMANCE_SCENARIO": scenario}},
)
checks = [
    {{"id": "incoming-request", "name": "IncomingRequest", "status": "INFO"}},
    {{"id": "thing", "name": "Thing", "status": "SUCCESS" if client.returncode == 0 else "FAILURE"}},
]
out = pathlib.Path(options["-o"]) / f"{{scenario}}-2026-01-01T00-00-00-000Z"
out.mkdir(parents=True)
(out / "checks.json").write_text(json.dumps(checks))
(out / "stdout.txt").write_text(client.stdout)
(out / "stderr.txt").write_text(client.stderr)
if client.returncode:
    print(f"Client exited with code {{client.returncode}}", file=sys.stderr)
sys.exit(1 if client.returncode else 0)
"""

FAKE_CLIENT = """import os, sys
print(os.environ["MCP_CONFORMANCE_SCENARIO"], sys.argv[1])
sys.exit(1 if "bad" in os.environ["MCP_CONFORMANCE_SCENARIO"] else 0)
"""


@pytest.fixture
def fake_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "conformance"
    suite.write_text(FAKE_SUITE.format(python=sys.executable))
    suite.chmod(0o755)
    return suite


@pytest.fixture
def fake_client(tmp_path: Path) -> Path:
    client = tmp_path / "client.py"
    client.write_text(FAKE_CLIENT)
    return client


def expected_failures_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "expected-failures.yml"
    path.write_text(body)
    return path


def run_main(suite: Path, client: Path, expected: Path, out: Path, *extra: str) -> int:
    return main([
        "--conformance", str(suite), "--client", str(client), "--expected-failures", str(expected),
        "--out", str(out), "--timeout", "20", *extra,
    ])  # fmt: skip


def test_the_committed_expected_failures_list_only_the_harness_defect() -> None:
    expected = load_expected_failures(DEFAULT_EXPECTED_FAILURES)

    assert list(expected.reasons) == ["auth/2025-03-26-oauth-metadata-backcompat"]
    assert "RFC 8414 section 3.3" in expected.reasons["auth/2025-03-26-oauth-metadata-backcompat"]


def test_an_expected_failure_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = expected_failures_file(tmp_path, "client:\n  - auth/bad\n")

    with pytest.raises(RunnerError, match=r"expected-failures\.yml.*'auth/bad' has no reason"):
        load_expected_failures(path)


def test_an_expected_failure_naming_no_scenario_of_the_suite_is_refused(tmp_path: Path) -> None:
    path = expected_failures_file(tmp_path, "client: [auth/typo]\nreasons:\n  auth/typo: because\n")

    with pytest.raises(RunnerError, match="'auth/typo' is not a client scenario"):
        load_expected_failures(path, ["good", "auth/bad"])


def test_each_scenario_runs_alone_and_an_unexpected_failure_fails_the_run(
    tmp_path: Path, fake_suite: Path, fake_client: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expected_failures_file(
        tmp_path, "client: [auth/known-bad]\nreasons:\n  auth/known-bad: the harness is wrong\n"
    )
    out = tmp_path / "results"

    status = run_main(fake_suite, fake_client, expected, out, "--table", str(tmp_path / "table.md"))

    assert status == 1
    table = (tmp_path / "table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert list(rows) == ["`good`", "`auth/bad`", "`auth/known-bad`"]
    assert "| pass | 1/1 |" in rows["`good`"]
    assert "| FAIL | 0/1 |" in rows["`auth/bad`"]
    assert rows["`auth/bad`"].endswith("| FAILURE: Thing; client exited with 1 |")
    assert "| fail (expected) | 0/1 |" in rows["`auth/known-bad`"]
    assert rows["`auth/known-bad`"].endswith("| the harness is wrong |")
    assert (out / "results.md").read_text() == table
    assert table in capsys.readouterr().out
    # The client got the scenario and the server URL; the suite's files sit in one flat directory.
    assert (out / "auth__bad" / "stdout.txt").read_text() == "auth/bad http://127.0.0.1:9/mcp\n"
    assert sorted(p.name for p in (out / "auth__bad").iterdir()) == [
        "checks.json", "harness.log", "stderr.txt", "stdout.txt",
    ]  # fmt: skip


def test_the_run_is_green_when_every_failure_is_expected(
    tmp_path: Path, fake_suite: Path, fake_client: Path
) -> None:
    expected = expected_failures_file(
        tmp_path, "client: [auth/known-bad]\nreasons:\n  auth/known-bad: the harness is wrong\n"
    )

    status = run_main(
        fake_suite,
        fake_client,
        expected,
        tmp_path / "out",
        "--scenario",
        "good",
        "--scenario",
        "auth/known-bad",
    )

    assert status == 0


def test_an_expected_failure_that_passes_fails_the_run(
    tmp_path: Path, fake_suite: Path, fake_client: Path
) -> None:
    expected = expected_failures_file(tmp_path, "client: [good]\nreasons:\n  good: thought broken\n")

    status = run_main(fake_suite, fake_client, expected, tmp_path / "out", "--scenario", "good")

    assert status == 1
    assert "pass (unexpected: remove from expected failures)" in (tmp_path / "out" / "results.md").read_text()


def test_a_missing_suite_is_a_setup_error_naming_the_path(
    tmp_path: Path, fake_client: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_main(tmp_path / "absent", fake_client, DEFAULT_EXPECTED_FAILURES, tmp_path / "out")

    assert status == 2
    assert f"the conformance suite {tmp_path / 'absent'} does not exist" in capsys.readouterr().err
