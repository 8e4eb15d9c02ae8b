"""What a region counts, so that tests can assert the exact upstream work (GET /_sim/{region}/stats)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DeploymentStats:
    """Per deployment: generations admitted (and their estimated tokens) and refused, by reason."""

    admitted_requests: int = 0
    admitted_tokens: int = 0
    throttled_quota: int = 0
    throttled_capacity: int = 0
    errors_500: int = 0


@dataclass
class Counters:
    """Per region: data-plane calls by "METHOD /route/{template}", and the probe endpoints' calls."""

    calls: Counter[str] = field(default_factory=Counter)
    probe_calls: int = 0
