"""What the other instances used, as this instance knows it: the summary less this writer's own pulse.

The summary counts every writer, this one too; this instance's own usage is exact in its local
windows, so its share must come out. The summary names the moment its pulse reads began: every pulse
of ours committed before that moment (less the clock skew allowed) had been written, so the leader
saw that one or a later one. Taking out the newest such pulse takes out at most what the leader saw:
the others' share is never underestimated (it may count a second of our own usage twice).

Others' usage since the summary is not in it: they are assumed to go on at their recent pace for
the time since its reads began plus one flush interval (their pulses lag that much), and never to
use less than the summary showed while no newer one comes: while storage is away, each instance
keeps to its last share instead of taking the whole quota for itself.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from shared.clock import Clock
from shared.ledger import utc_day
from shared.recent_usage import RecentUsage
from shared.summary import Summary

HISTORY = 64  # own pulses kept to match against summaries (a few seconds' worth in steady state)


@dataclass(frozen=True)
class _Written:
    committed: float  # clock wall time the write returned
    usage: RecentUsage


class PeerView:
    def __init__(
        self,
        clock: Clock,
        *,
        window_seconds: float,
        request_window_seconds: float,
        flush_interval: float,
        skew: float,
    ) -> None:
        self._clock = clock
        self._window = window_seconds
        self._request_window = request_window_seconds
        self._flush_interval = flush_interval
        self._skew = skew
        self._written: deque[_Written] = deque(maxlen=HISTORY)
        self._others = RecentUsage()
        self._rates: dict[str, tuple[float, float]] = {}  # key -> others' (tokens, requests) per second
        self._held: dict[str, tuple[float, float]] = {}  # key -> others' windows as the summary showed them
        self._client_days: dict[str, int] = {}
        self.read_start = -math.inf  # of the summary in use
        self.seq = -1
        self.writers = 0  # that count in its window
        self.seen = RecentUsage()  # our own pulse as the summary counts it

    def wrote(self, usage: RecentUsage) -> None:
        """Our pulse `usage` is in the table now."""
        self._written.append(_Written(self._clock.wall(), usage))

    def learn(self, summary: Summary | None, seen: RecentUsage | None = None) -> None:
        """Use `summary` from now on; `seen` is our own pulse in it, when known exactly (we summed it)."""
        if summary is None:
            self._others, self._rates, self._held, self._client_days = RecentUsage(), {}, {}, {}
            return
        latest: _Written | None = None
        cutoff = summary.read_start - self._skew
        while self._written and self._written[0].committed <= cutoff:
            latest = self._written.popleft()  # older ones can never be needed again: reads only move on
        if latest is not None:
            self._written.appendleft(latest)
        if seen is None:
            seen = latest.usage if latest is not None else RecentUsage()
        self.seen = seen
        self._others = summary.usage.minus(seen)
        self._rates = self._others.rates(summary.read_start)
        self._held = {
            key: self._others.in_window(key, summary.read_start, self._window, self._request_window)
            for key in self._others.windows
        }
        days: dict[str, int] = {}
        for (client, _), tokens in self._others.days.items():
            days[client] = days.get(client, 0) + tokens
        self._client_days = days
        self.read_start, self.seq, self.writers = summary.read_start, summary.seq, summary.writers

    def age(self) -> float:
        """Clock seconds since the reads of the summary in use began."""
        return self._clock.wall() - self.read_start

    # -- SharedView ---------------------------------------------------------------------------
    def window(self, key: str) -> tuple[float, float]:
        """Others' usage in the sliding windows, plus their pace for the time the summary does not cover;
        never less than the summary showed: with no newer summary (storage away, a leader changing) the
        others are taken to keep their windows as full as they were."""
        wall = self._clock.wall()
        tokens, requests = self._others.in_window(key, wall, self._window, self._request_window)
        token_rate, request_rate = self._rates.get(key, (0.0, 0.0))
        held_tokens, held_requests = self._held.get(key, (0.0, 0.0))
        lag = max(0.0, wall - self.read_start + self._flush_interval)
        return (
            max(tokens + token_rate * min(lag, self._window), held_tokens),
            max(requests + request_rate * min(lag, self._request_window), held_requests),
        )

    def day(self, client: str, deployment: str | None) -> int:
        if self._others.day != utc_day(self._clock.wall()):
            return 0
        if deployment is None:
            return self._client_days.get(client, 0)
        return self._others.days.get((client, deployment), 0)
