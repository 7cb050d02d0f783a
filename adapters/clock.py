"""The clock adapter: the only place wall-clock time is read.

The state machine never reads a clock; the driver reads this one and feeds
:class:`~mcp_tether.statemachine.events.ClockTick` events. Timers sleep in
short slices and re-read the wall clock, so a suspended laptop or a clock jump
is noticed within a slice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]

#: Longest a timer sleeps before re-reading the wall clock.
SLICE = 15.0


class Clock(Protocol):
    """Wall-clock time and sleeping until a wall-clock instant."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        while (remaining := deadline - time.time()) > 0:  # noqa: ASYNC110  # re-read the wall clock each slice
            await asyncio.sleep(min(remaining, SLICE))

    def __repr__(self) -> str:
        return "SystemClock()"
