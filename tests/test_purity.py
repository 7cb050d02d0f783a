"""The h11 rule: the protocol core performs no IO, reads no clock, never awaits."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "statemachine"

#: Everything the core may import: pure standard-library modules, attrs, transitions, itself.
ALLOWED = {
    "__future__",
    "abc",
    "attrs",
    "base64",
    "collections",
    "collections.abc",
    "datetime",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "string",
    "transitions",
    "transitions.extensions.diagrams",
    "typing",
    "unicodedata",
    "weakref",
    "zlib",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." * node.level + (node.module or ""))
            else:
                assert node.module is not None
                names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in {
            "__import__",
            "exec",
            "eval",
            "open",
        }:
            names.add(f"<call {node.func.id}>")  # type: ignore[attr-defined]
    return names


MODULES = sorted(CORE.glob("*.py"))


def test_core_has_modules() -> None:
    assert len(MODULES) >= 6


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_imports_nothing_impure(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if not name.startswith("mcp_tether.statemachine") and name not in ALLOWED
    }
    assert not bad, f"{path.name} imports {sorted(bad)}: statemachine/ must stay pure (no IO, clock, asyncio)"


CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads = [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CLOCK_READS
    ]
    assert not reads, f"{path.name} reads a clock ({reads}): time must enter as ClockTick events"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_never_awaits(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not any(isinstance(node, ast.AsyncFunctionDef | ast.Await) for node in ast.walk(tree))


def test_the_checker_catches_an_impure_module(tmp_path: Path) -> None:
    sample = tmp_path / "impure.py"
    sample.write_text("import time\nfrom os import path\nimport httpx2\nopen('x')\n")
    assert imported_modules(sample) >= {"time", "os", "httpx2", "<call open>"}
