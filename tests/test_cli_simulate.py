"""``mcp-tether simulate``: invariants reported, reproducible by seed, a violation is shown minimised."""

from __future__ import annotations

import pytest
from hypothesis.stateful import invariant

from mcp_tether import cli
from mcp_tether.testing import simulation
from mcp_tether.testing.simulation import ConnectionSimulation, InvariantViolation, run_simulation


def test_simulate_reports_invariants_held(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["simulate", "--seed", "3", "--examples", "8", "--steps", "15", "--processes", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Simulating 3 processes sharing the real token log" in out and "seed 3" in out
    for text in simulation.INVARIANTS:
        assert text in out
    assert "All invariants held" in out


def test_same_seed_same_run() -> None:
    first = run_simulation(steps=15, examples=8, seed=11, processes=2, real_log=True)
    second = run_simulation(steps=15, examples=8, seed=11, processes=2, real_log=True)
    other = run_simulation(steps=15, examples=8, seed=12, processes=2, real_log=True)
    assert first.ok and second.ok
    assert first.counts == second.counts
    assert first.counts != other.counts


class NeverRefreshes(ConnectionSimulation):
    """A deliberately wrong invariant, to see how a violation is reported."""

    @invariant()
    def no_refresh_ever(self) -> None:
        if self.server.refreshes:
            raise InvariantViolation("a refresh was sent (planted violation)")


def test_violation_shows_minimal_sequence_and_seed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation, "simulation_class", lambda **_: NeverRefreshes)
    code = cli.main(["simulate", "--seed", "5", "--examples", "60", "--steps", "30", "--memory-log"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_FAILED
    assert "An invariant was violated: a refresh was sent (planted violation)" in out
    assert "Minimal failing sequence:" in out and "state = NeverRefreshes()" in out
    assert "Reproduce with: mcp-tether simulate --seed 5 --steps 30 --examples 60 --processes 2 --memory-log" in out
