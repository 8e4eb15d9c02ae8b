"""Time, injected everywhere so that tests and the simulator can compress it.

A `ScaledClock` runs `scale` times faster than the wall: 60 simulated seconds pass in
60/scale real seconds. Every duration the gateway reasons about (windows, cooldowns,
deadlines, Retry-After) is in clock seconds; only real I/O timeouts are converted back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic clock seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of clock time."""
        ...

    def to_real(self, seconds: float) -> float:
        """The real (wall) duration of `seconds` of clock time."""
        ...

    def wall(self) -> float:
        """Epoch seconds at this clock's speed: the same in every process, for state shared across instances."""
        ...


class ScaledClock:
    """A monotonic clock; `scale` > 1 compresses time for simulations and tests."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    def to_real(self, seconds: float) -> float:
        return seconds / self.scale

    def wall(self) -> float:
        return time.time() * self.scale


class ManualClock:
    """A clock that moves only when told to; for unit tests of pure decisions."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def to_real(self, seconds: float) -> float:
        return seconds

    def wall(self) -> float:
        return self._now
