"""Stateful property test of the connection machine (profile: MCP_TETHER_HYPOTHESIS_PROFILE)."""

from __future__ import annotations

from mcp_tether.testing.simulation import ConnectionSimulation

TestConnectionSimulation = ConnectionSimulation.TestCase
