"""A sliding-window counter in fixed buckets: O(1) to add, O(buckets) at most to expire.

Buckets are counted until their *end* plus the window length, so the counter frees capacity a
bucket width later than an exact window would: never earlier than the upstream limiter.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class SlidingWindow:
    def __init__(self, length: float, resolution: float = 0.25) -> None:
        self.length = length
        self.resolution = resolution
        self._buckets: dict[int, float] = {}
        self._order: deque[int] = deque()
        self._total = 0.0
        self.expired_total = 0.0  # everything that has left the window, ever
        self._expired_through = -math.inf  # the newest bucket index that has expired

    def add(self, at: float, amount: float) -> None:
        """Add (or with a negative amount, take back) at clock time `at`."""
        index = math.floor(at / self.resolution)
        if index not in self._buckets:
            if index <= self._expired_through:
                return  # that bucket has left the window: nothing there to adjust
            self._buckets[index] = 0.0
            if not self._order or index > self._order[-1]:
                self._order.append(index)
            else:
                bisect.insort(self._order, index)  # a late settle into a quiet, still-counted moment
        self._buckets[index] += amount
        self._total += amount

    def total(self, now: float) -> float:
        self._expire(now)
        return max(0.0, self._total)

    def seconds_until(self, now: float, room: float, limit: float) -> float:
        """Clock seconds until `room` more fits under `limit`; 0 if it fits now, inf if it never will."""
        self._expire(now)
        excess = self._total + room - limit
        if excess <= 0:
            return 0.0
        for index in self._order:
            excess -= self._buckets[index]
            if excess <= 0:
                return max(0.0, self._expiry(index) - now)
        return math.inf

    def _expiry(self, index: int) -> float:
        return (index + 1) * self.resolution + self.length

    def _expire(self, now: float) -> None:
        while self._order and self._expiry(self._order[0]) <= now:
            index = self._order.popleft()
            self._expired_through = index
            amount = self._buckets.pop(index)
            self._total -= amount
            self.expired_total += amount
