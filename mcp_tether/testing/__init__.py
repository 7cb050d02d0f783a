"""Helpers for testing code built on mcp-tether (needs the ``test`` extra).

- :class:`FakeClock`, :class:`OffsetClock`: wall clocks you move by hand (pass as ``clock=``).
- :class:`SimulatedAuthorizationServer`, :class:`LoopbackOAuthEnvironment`: a real OAuth 2.1
  authorization server and an OAuth-protected MCP server on loopback, with knobs (token lifetime,
  rotation, reuse detection, scripted failures, latency) and counters.
- :class:`HeadlessBrowser`: an ``open_url`` that approves authorizations without a person.
- :class:`ConnectionSimulation`, :func:`run_simulation`: Hypothesis-driven simulation of expiry and
  refresh sequences against the real state machine, checking the design's invariants.
- :mod:`mcp_tether.testing.strategies`: Hypothesis strategies for events and token responses.

Example::

    from mcp_tether import ServerPool
    from mcp_tether.testing import HeadlessBrowser, LoopbackOAuthEnvironment

    async def test_my_executor(tmp_path):
        with LoopbackOAuthEnvironment() as env:
            config = tmp_path / "claude.json"
            config.write_text(json.dumps({"mcpServers": {"notion": {"type": "http", "url": env.mcp_url}}}))
            async with ServerPool.from_config(config, tmp_path / "tokens", open_url=HeadlessBrowser()) as pool:
                assert (await pool.call_tool("notion", "echo", {"text": "hi"})).content[0].text == "hi"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_tether._lazy import lazy_getattr

__all__ = [
    "ConnectionSimulation",
    "FakeClock",
    "HeadlessBrowser",
    "LoopbackOAuthEnvironment",
    "OffsetClock",
    "SimulatedAuthorizationServer",
    "SimulatedResourceServer",
    "run_simulation",
]

_WHERE = {
    "ConnectionSimulation": "mcp_tether.testing.simulation",
    "run_simulation": "mcp_tether.testing.simulation",
    "FakeClock": "mcp_tether.testing.clock",
    "OffsetClock": "mcp_tether.testing.clock",
    "HeadlessBrowser": "mcp_tether.testing.browser",
    "LoopbackOAuthEnvironment": "mcp_tether.testing.serve",
    "SimulatedAuthorizationServer": "mcp_tether.testing.authserver",
    "SimulatedResourceServer": "mcp_tether.testing.resource_server",
}

if TYPE_CHECKING:
    from mcp_tether.testing.authserver import SimulatedAuthorizationServer
    from mcp_tether.testing.browser import HeadlessBrowser
    from mcp_tether.testing.clock import FakeClock, OffsetClock
    from mcp_tether.testing.resource_server import SimulatedResourceServer
    from mcp_tether.testing.serve import LoopbackOAuthEnvironment
    from mcp_tether.testing.simulation import ConnectionSimulation, run_simulation


__getattr__ = lazy_getattr(__name__, _WHERE, globals())
