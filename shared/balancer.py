"""Choosing a host: highest priority tier with an eligible host, then power of two choices by headroom.

Pure: the caller passes a snapshot of every host and a random source. Two random picks (weighted)
compared on free fraction spread load in proportion to quota, and many instances with slightly
stale views do not all herd onto the single emptiest host.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from shared.cluster import Host


@dataclass(frozen=True)
class Candidate:
    host: Host
    free_tokens: float
    free_requests: float
    ready_in: float  # clock seconds until health lets it serve (0 = now, inf = not in sight)
    fits_in: float  # clock seconds until its windows have room for this request (0 = now)

    def eligible(self, cost: int) -> bool:
        # A request bigger than the whole quota can only ever run on an idle host; let Azure decide then.
        need = min(cost, self.host.tpm)
        return self.ready_in == 0.0 and self.free_tokens >= need and self.free_requests >= 1

    @property
    def free_fraction(self) -> float:
        return self.free_tokens / self.host.tpm

    @property
    def recovers_in(self) -> float:
        return max(self.ready_in, self.fits_in)


def pick(candidates: Sequence[Candidate], cost: int, rng: random.Random) -> Candidate | None:
    eligible = [c for c in candidates if c.eligible(cost)]
    if not eligible:
        return None
    tier = min(c.host.priority for c in eligible)
    pool = [c for c in eligible if c.host.priority == tier]
    if len(pool) == 1:
        return pool[0]
    first = _weighted(pool, rng)
    second = _weighted([c for c in pool if c is not first], rng)
    return first if first.free_fraction >= second.free_fraction else second


def soonest(candidates: Sequence[Candidate]) -> float:
    """Clock seconds until any host could take the request; inf when none is in sight."""
    return min((c.recovers_in for c in candidates), default=math.inf)


def _weighted(pool: Sequence[Candidate], rng: random.Random) -> Candidate:
    return rng.choices(pool, weights=[c.host.weight for c in pool], k=1)[0]
