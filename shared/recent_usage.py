"""What was used lately, in the shape every shared row carries: per window key, the charge of each
recent 10-second slot; per (client, deployment), the real tokens of one UTC day.

One writer's own usage (its pulse) and everyone's summed (the summary) have this same shape, so they
add and subtract slot by slot. On the wire it is a flat list of items split into string chunks of
bounded size: a row never grows toward the entity limits, however many keys or clients there are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SLOT = 10.0
SLOTS_KEPT = 8  # a 60 s window spans 6 whole slots and part of a 7th; one more for reads that lag
CHUNK_CHARS = 16_000  # ASCII JSON: 32 KB as Table Storage counts strings (UTF-16), half the property limit
MAX_CHUNKS = 100  # one entity group transaction: 100 entities, 3.2 MB < 4 MiB

Counts = tuple[int, int]  # (tokens charged, requests)


def slot_of(wall: float) -> int:
    return math.floor(wall / SLOT)


@dataclass
class RecentUsage:
    day: str = ""  # the UTC day `days` counts
    windows: dict[str, dict[int, Counts]] = field(default_factory=dict)  # key -> slot -> counts
    days: dict[tuple[str, str], int] = field(default_factory=dict)  # (client, deployment) -> tokens
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tpm, requests per window)

    def add(self, other: RecentUsage, *, since_slot: int) -> None:
        """Add `other`'s slots from `since_slot` on, and its days if they are of the same day."""
        for key, slots in other.windows.items():
            mine = self.windows.setdefault(key, {})
            for slot, (tokens, requests) in slots.items():
                if slot >= since_slot:
                    old = mine.get(slot, (0, 0))
                    mine[slot] = (old[0] + tokens, old[1] + requests)
        for key, limit in other.limits.items():
            self.limits[key] = max(self.limits.get(key, limit), limit)
        if other.day == self.day:
            for name, tokens in other.days.items():
                self.days[name] = self.days.get(name, 0) + tokens

    def minus(self, other: RecentUsage) -> RecentUsage:
        """What is left of this after taking `other` out, never below zero."""
        windows: dict[str, dict[int, Counts]] = {}
        for key, slots in self.windows.items():
            theirs = other.windows.get(key, {})
            kept = {}
            for slot, (tokens, requests) in slots.items():
                take = theirs.get(slot, (0, 0))
                left = (max(0, tokens - take[0]), max(0, requests - take[1]))
                if left != (0, 0):
                    kept[slot] = left
            if kept:
                windows[key] = kept
        same_day = other.day == self.day
        days = {
            name: rest
            for name, tokens in self.days.items()
            if (rest := tokens - (other.days.get(name, 0) if same_day else 0)) > 0
        }
        return RecentUsage(self.day, windows, days, dict(self.limits))

    def in_window(self, key: str, wall: float, window: float, request_window: float) -> tuple[float, float]:
        """(tokens, requests) of `key` in the sliding windows that end at `wall`: whole slots inside, the
        oldest one in part; requests over the last slot and part of the one before, scaled to their window."""
        slots = self.windows.get(key)
        if not slots:
            return 0.0, 0.0
        window_slots = max(1, round(window / SLOT))
        current = slot_of(wall)
        overlap = 1.0 - (wall / SLOT - current)  # of the slot a whole window back
        tokens = requests = 0.0
        for slot, (charged, count) in slots.items():
            age = current - slot
            if 0 <= age < window_slots:
                tokens += charged
            elif age == window_slots:
                tokens += charged * overlap
            if age == 0:
                requests += count
            elif age == 1:
                requests += count * overlap
        return tokens, requests * request_window / SLOT

    def rates(self, wall: float) -> dict[str, tuple[float, float]]:
        """Per key, the (tokens, requests) per second of the slot of `wall` and the one before: the pace
        to assume for the time since, until newer usage is known."""
        current = slot_of(wall)
        span = SLOT * (1.0 + (wall / SLOT - current))
        rates = {}
        for key, slots in self.windows.items():
            tokens = sum(slots.get(slot, (0, 0))[0] for slot in (current - 1, current))
            requests = sum(slots.get(slot, (0, 0))[1] for slot in (current - 1, current))
            if tokens > 0 or requests > 0:
                rates[key] = (max(0, tokens) / span, max(0, requests) / span)
        return rates

    @property
    def newest_slot(self) -> int | None:
        return max((slot for slots in self.windows.values() for slot in slots), default=None)

    # -- on the wire ------------------------------------------------------------------------------
    def chunks(self) -> tuple[list[str], int]:
        """The items as JSON strings of at most CHUNK_CHARS each (MAX_CHUNKS at most), and how many were left out."""
        chunks: list[list[str]] = [[]]
        size = 2
        dropped = 0
        for item in self._items():
            text = json.dumps(item, separators=(",", ":"))  # ASCII: non-ASCII names are escaped
            if len(text) + 2 > CHUNK_CHARS:
                dropped += 1  # a key no row could hold
                continue
            if size + len(text) + 1 > CHUNK_CHARS:
                chunks.append([])
                size = 2
            chunks[-1].append(text)
            size += len(text) + 1
        dropped += sum(len(chunk) for chunk in chunks[MAX_CHUNKS:])  # past what one transaction carries
        return ["[" + ",".join(chunk) + "]" for chunk in chunks[:MAX_CHUNKS] if chunk], dropped

    def _items(self) -> Iterable[list[Any]]:
        # Newest slots first: if anything must be left out, it is the usage about to leave the window.
        for slot in sorted({s for slots in self.windows.values() for s in slots}, reverse=True):
            for key, slots in self.windows.items():
                if slot in slots:
                    yield ["w", key, slot, *slots[slot]]
        for (client, deployment), tokens in self.days.items():
            yield ["d", client, deployment, tokens]
        for key, (tpm, requests) in self.limits.items():
            yield ["l", key, tpm, requests]

    @classmethod
    def from_chunks(cls, day: str, chunks: Iterable[str]) -> RecentUsage:
        usage = cls(day)
        for chunk in chunks:
            for item in json.loads(chunk):
                if item[0] == "w":
                    _, key, slot, tokens, requests = item
                    usage.windows.setdefault(str(key), {})[int(slot)] = (int(tokens), int(requests))
                elif item[0] == "d":
                    _, client, deployment, tokens = item
                    usage.days[(str(client), str(deployment))] = int(tokens)
                elif item[0] == "l":
                    _, key, tokens, requests = item
                    usage.limits[str(key)] = (float(tokens), float(requests))
        return usage
