"""specs/connection.md is generated from the table the machine runs; fail when it is stale."""

from __future__ import annotations

from pathlib import Path

from mcp_tether.statemachine.machine import TABLE, State
from mcp_tether.statemachine.spec import mermaid_diagram, render

SPEC = Path(__file__).resolve().parent.parent / "specs" / "connection.md"


def test_committed_specification_matches_the_table() -> None:
    assert SPEC.read_text(encoding="utf-8") == render(), (
        "specs/connection.md is stale: run `python -m mcp_tether.statemachine.spec > specs/connection.md`"
    )


def test_diagram_shows_every_state_and_every_state_change() -> None:
    diagram = mermaid_diagram()
    assert diagram.count("stateDiagram") == 1
    for state in State:
        assert f'state "{state.name}"' in diagram
    for row in TABLE:
        if row.dest is not None:
            for source in row.sources:
                if source is not row.dest:
                    assert f"{source.name} --> {row.dest.name}" in diagram
