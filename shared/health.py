"""Host health: passive outlier detection (cooldowns after 429s, ejections after failures) and the
verdicts of active health checking, ranked: live traffic outranks probes.

A 429 is about one request, not the whole deployment (Azure's x-ratelimit headers say which limit): a token-limit 429
makes the host ineligible only for requests at least that large until its Retry-After; a
request-limit or capacity 429 closes it for every metered request. Ejections (5xx, timeouts,
refused connections, a refused credential) close it for everything. A failing probe excludes a host
only until live traffic succeeds there; when probes alone would exclude every host of a deployment,
the balancer routes to them anyway (panic mode, see balancer.py) and this board remembers it for
/status and the log.

Pure state with an injected clock; the prober that feeds `set_probe` lives in probe.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.clock import Clock

_CAPACITY_MARKERS = ("high demand", "capacity", "overloaded")
MAX_TOKEN_BLOCKS = 8  # per host: the few sizes a burst of large requests can leave behind


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    reason: str
    latency_ms: float
    checked_at: float  # wall time (epoch seconds): shared across instances
    consecutive_failures: int = 0


@dataclass
class _State:
    cooldown_until: float = 0.0  # every metered request waits (request-limit or capacity 429)
    cooldown_reason: str = ""
    token_blocks: list[tuple[int, float]] = field(default_factory=list)  # (cost, until): requests >= cost wait
    ejected_until: float = 0.0  # every request waits
    ejection_reason: str = ""
    consecutive_failures: int = 0
    ejections: int = 0
    probe: ProbeResult | None = None
    probe_failing_since: float | None = None  # clock time the applied probe verdict turned unhealthy
    live_ok_at: float | None = None  # clock time of the last live success
    last_error: str = ""


@dataclass(frozen=True)
class OutlierPolicy:
    consecutive_failures: int = 2
    ejection_base_seconds: float = 10.0
    ejection_max_seconds: float = 120.0
    default_cooldown_seconds: float = 5.0
    max_cooldown_seconds: float = 300.0


@dataclass
class HealthBoard:
    clock: Clock
    policy: OutlierPolicy = field(default_factory=OutlierPolicy)
    _states: dict[str, _State] = field(default_factory=dict)
    _panic: dict[str, float] = field(default_factory=dict)  # deployment -> clock time panic mode began

    def _state(self, key: str) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        return state

    def _duration(self, seconds: float | None) -> float:
        duration = self.policy.default_cooldown_seconds if seconds is None else seconds
        return min(max(duration, 0.0), self.policy.max_cooldown_seconds)

    def cool_down(self, key: str, seconds: float | None, reason: str) -> float:
        """A request-limit or capacity 429: the host takes no metered request for that long (bounded)."""
        duration = self._duration(seconds)
        state = self._state(key)
        state.cooldown_until = max(state.cooldown_until, self.clock.now() + duration)
        state.cooldown_reason = reason
        return duration

    def block_tokens(self, key: str, cost: int, seconds: float | None) -> float:
        """A token-limit 429 for a request of `cost`: requests at least that large wait that long."""
        duration = self._duration(seconds)
        until = self.clock.now() + duration
        state = self._state(key)
        blocks = [(c, u) for c, u in self._live_blocks(state) if not (c >= cost and u <= until)]
        if not any(c <= cost and u >= until for c, u in blocks):  # not already covered by a smaller, longer one
            blocks.append((cost, until))
        blocks.sort()
        state.token_blocks = blocks[:MAX_TOKEN_BLOCKS]
        return duration

    def _live_blocks(self, state: _State) -> list[tuple[int, float]]:
        now = self.clock.now()
        if any(until <= now for _, until in state.token_blocks):
            state.token_blocks = [(c, u) for c, u in state.token_blocks if u > now]
        return state.token_blocks

    def record_failure(self, key: str, reason: str) -> bool:
        """A 5xx, timeout or connection error; ejects after N in a row. True if now ejected."""
        state = self._state(key)
        state.consecutive_failures += 1
        state.last_error = reason
        if state.consecutive_failures < self.policy.consecutive_failures:
            return False
        self.eject(key, reason)
        return True

    def eject(self, key: str, reason: str, seconds: float | None = None) -> None:
        """Take the host out; each ejection in a row lasts longer (Envoy's base ejection time x count)."""
        state = self._state(key)
        state.ejections += 1
        duration = seconds
        if duration is None:
            duration = min(
                self.policy.ejection_base_seconds * 2 ** (state.ejections - 1), self.policy.ejection_max_seconds
            )
        state.ejected_until = self.clock.now() + duration
        state.ejection_reason = reason
        state.consecutive_failures = 0

    def record_success(self, key: str) -> bool:
        """A live answer from the host. True when it contradicts a failing probe for the first time."""
        state = self._state(key)
        now = self.clock.now()
        state.consecutive_failures = 0
        if state.ejected_until <= now:
            state.ejections = 0
        first = state.probe_failing_since is not None and (
            state.live_ok_at is None or state.live_ok_at < state.probe_failing_since
        )
        state.live_ok_at = now
        return first

    def set_probe(self, key: str, result: ProbeResult) -> None:
        state = self._state(key)
        was_failing = state.probe is not None and not state.probe.healthy
        state.probe = result
        if result.healthy:
            state.probe_failing_since = None
            if was_failing:
                # The active check saw it come back: end a passive ejection early.
                state.ejected_until = 0.0
                state.ejections = 0
        elif not was_failing:
            state.probe_failing_since = self.clock.now()

    def probe_result(self, key: str) -> ProbeResult | None:
        return self._state(key).probe

    def probe_failing(self, key: str) -> bool:
        """The active check's verdict alone, whatever live traffic says."""
        return self._state(key).probe_failing_since is not None

    def probe_down(self, key: str) -> bool:
        """The probe says down and no live request has succeeded there since it started saying so."""
        state = self._state(key)
        since = state.probe_failing_since
        return since is not None and (state.live_ok_at is None or state.live_ok_at < since)

    def probe_disagrees(self, key: str) -> bool:
        """The probe says down, but live traffic succeeds there: live traffic wins."""
        state = self._state(key)
        return state.probe_failing_since is not None and not self.probe_down(key)

    def ready_in(self, key: str, cost: int | None) -> float:
        """Clock seconds until passive health lets the host take this request (0 = now).

        `cost` None: an operation that uses no deployment's limits (files, reads): only ejections count.
        """
        state = self._state(key)
        now = self.clock.now()
        wait = state.ejected_until - now
        if cost is not None:
            wait = max(wait, state.cooldown_until - now)
            for blocked_cost, until in self._live_blocks(state):
                if cost >= blocked_cost:
                    wait = max(wait, until - now)
        return max(0.0, wait)

    def available(self, key: str) -> bool:
        """Could take an ordinary request now (what /readyz and /status report)."""
        return not self.probe_down(key) and self.ready_in(key, 1) == 0.0

    def note_panic(self, deployment: str, active: bool) -> bool:
        """Record whether routing for `deployment` ignores probe verdicts now; True when that changed."""
        if active == (deployment in self._panic):
            return False
        if active:
            self._panic[deployment] = self.clock.now()
        else:
            del self._panic[deployment]
        return True

    def panic(self) -> Mapping[str, float]:
        """Deployments in panic mode -> clock seconds since it began."""
        now = self.clock.now()
        return {deployment: now - since for deployment, since in self._panic.items()}

    def describe(self, key: str) -> dict[str, Any]:
        state = self._state(key)
        now = self.clock.now()
        probe = state.probe
        return {
            "available": self.available(key),
            "cooldown_seconds": round(max(0.0, state.cooldown_until - now), 3),
            "cooldown_reason": state.cooldown_reason if state.cooldown_until > now else "",
            "token_blocks": [
                {"min_cost": cost, "seconds": round(until - now, 3)} for cost, until in self._live_blocks(state)
            ],
            "ejected_seconds": round(max(0.0, state.ejected_until - now), 3),
            "ejection_reason": state.ejection_reason if state.ejected_until > now else "",
            "consecutive_failures": state.consecutive_failures,
            "probe_disagrees": self.probe_disagrees(key),
            "probe": None
            if probe is None
            else {
                "healthy": probe.healthy,
                "reason": probe.reason,
                "latency_ms": round(probe.latency_ms, 1),
                "checked_at": probe.checked_at,
                "consecutive_failures": probe.consecutive_failures,
            },
        }


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Azure's `retry-after-ms` (precise) else `retry-after` (whole seconds); None when absent or garbled."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if seconds >= 0 and math.isfinite(seconds):
            return seconds
    return None


def is_capacity_429(body: bytes) -> bool:
    """A 429 because the region is busy ("high demand"), not because this deployment's quota is spent."""
    text = body[:2048].decode("utf-8", "replace").lower()
    return any(marker in text for marker in _CAPACITY_MARKERS)
