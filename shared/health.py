"""Host health: passive outlier detection (cooldowns after 429, ejections after failures) and the
results of active probing, combined into one answer: may this host take a request now?

Pure state with an injected clock; the prober that feeds `set_probe` lives in probe.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.clock import Clock

_CAPACITY_MARKERS = ("high demand", "capacity", "overloaded")


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    reason: str
    latency_ms: float
    checked_at: float  # wall time (epoch seconds): shared across instances
    consecutive_failures: int = 0


@dataclass
class _State:
    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    ejected_until: float = 0.0
    ejection_reason: str = ""
    consecutive_failures: int = 0
    ejections: int = 0
    probe: ProbeResult | None = None
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

    def _state(self, key: str) -> _State:
        return self._states.setdefault(key, _State())

    def cool_down(self, key: str, seconds: float | None, reason: str) -> float:
        """After a 429: keep the host out for what it asked (bounded); returns the duration used."""
        duration = self.policy.default_cooldown_seconds if seconds is None else seconds
        duration = min(max(duration, 0.0), self.policy.max_cooldown_seconds)
        state = self._state(key)
        state.cooldown_until = max(state.cooldown_until, self.clock.now() + duration)
        state.cooldown_reason = reason
        return duration

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

    def record_success(self, key: str) -> None:
        state = self._state(key)
        state.consecutive_failures = 0
        if state.ejected_until <= self.clock.now():
            state.ejections = 0

    def set_probe(self, key: str, result: ProbeResult) -> None:
        state = self._state(key)
        recovered = result.healthy and state.probe is not None and not state.probe.healthy
        state.probe = result
        if recovered:
            # The active check saw it come back: end a passive ejection early.
            state.ejected_until = 0.0
            state.ejections = 0

    def probe_result(self, key: str) -> ProbeResult | None:
        return self._state(key).probe

    def available(self, key: str) -> bool:
        return self.recovers_in(key) == 0.0

    def recovers_in(self, key: str) -> float:
        """Clock seconds until the host may take traffic: 0 now, inf while a probe says it is down."""
        state = self._state(key)
        if state.probe is not None and not state.probe.healthy:
            return math.inf
        now = self.clock.now()
        return max(0.0, state.cooldown_until - now, state.ejected_until - now)

    def describe(self, key: str) -> dict[str, Any]:
        state = self._state(key)
        now = self.clock.now()
        probe = state.probe
        return {
            "available": self.available(key),
            "cooldown_seconds": round(max(0.0, state.cooldown_until - now), 3),
            "cooldown_reason": state.cooldown_reason if state.cooldown_until > now else "",
            "ejected_seconds": round(max(0.0, state.ejected_until - now), 3),
            "ejection_reason": state.ejection_reason if state.ejected_until > now else "",
            "consecutive_failures": state.consecutive_failures,
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
