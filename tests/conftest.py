"""Shared test configuration.

``httpx2.alias_httpx()`` must run before respx is imported anywhere, so that
respx's patches reach httpx2 (the library itself never calls it). respx's own
pytest plugin would import httpx first, so pyproject.toml disables it
(``-p no:respx``); tests use ``respx.mock`` directly.
"""

from __future__ import annotations

import os

import httpx2

httpx2.alias_httpx()

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "fast",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("fast"), max_examples=2000, stateful_step_count=150)
settings.load_profile(os.environ.get("MCP_TETHER_HYPOTHESIS_PROFILE", "fast"))
