"""Clocks for tests and demonstrations: move time forward by hand."""

from __future__ import annotations

import asyncio
import contextlib
import time

__all__ = ["FakeClock", "OffsetClock"]


class _Advanceable:
    def __init__(self) -> None:
        self._changed: asyncio.Event | None = None

    def now(self) -> float:
        raise NotImplementedError

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def sleep_until(self, deadline: float) -> None:
        while (remaining := deadline - self.now()) > 0:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0) if self._real else None)

    _real = True


class OffsetClock(_Advanceable):
    """The real wall clock plus an offset that :meth:`advance` increases.

    Timers waiting on this clock wake as soon as an advance passes their deadline.
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative value)."""
        self.offset += seconds
        self._notify()

    def __repr__(self) -> str:
        return f"OffsetClock(offset={self.offset:+.1f})"


class FakeClock(_Advanceable):
    """A clock that moves only when told (trio's MockClock, for wall-clock time)."""

    _real = False

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        super().__init__()
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (negative moves it back, as wall clocks do)."""
        self._now += seconds
        self._notify()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.1f})"
