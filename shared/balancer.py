"""Choosing a host: highest priority tier with an eligible host, then power of two choices by headroom.

Pure: the caller passes a snapshot of every candidate host and a random source. Two random picks
(weighted) compared on free fraction spread load in proportion to quota, and many instances with
slightly stale views do not all herd onto the single emptiest host.

Panic mode (Envoy's panic threshold): when the hosts active health checking trusts hold less than
half the quota of the hosts live traffic lets through, the probes are ignored and every ready host
is used. A probe can be wrong (a path the upstream does not serve, a fault on that path only); a
gateway that stops serving because of it is worse than one that tries, and probes turn one host at
a time, so waiting for the last one to fail would first pile the whole load onto it.
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
    free_fraction: float  # of its token quota free now (for the choice between two)
    fits: bool  # its windows have room for this request now (reserves included)
    fits_in: float  # clock seconds until they have (0 = now, inf = never)
    ready_in: float  # clock seconds until passive health lets it take the request (0 = now)
    probe_down: bool  # the active check says down and live traffic has not said otherwise

    @property
    def recovers_in(self) -> float:
        return max(self.ready_in, self.fits_in)


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    panic: bool

    @property
    def host(self) -> Host:
        return self.candidate.host


PANIC_THRESHOLD = 0.5  # Envoy's default healthy_panic_threshold, as a share of quota rather than of hosts


def below_panic_threshold(trusted_quota: float, quota: float) -> bool:
    return trusted_quota < PANIC_THRESHOLD * quota


def usable(candidates: Sequence[Candidate]) -> tuple[list[Candidate], bool]:
    """The candidates health lets through, and whether that needed panic mode.

    Hosts held back by live traffic's own evidence (cooldowns, ejections) count on neither side.
    """
    ready = [c for c in candidates if c.ready_in == 0.0]
    trusted_quota = sum(c.host.tpm for c in ready if not c.probe_down)
    if below_panic_threshold(trusted_quota, sum(c.host.tpm for c in ready)):
        return ready, True
    return [c for c in candidates if not c.probe_down], False


def pick(candidates: Sequence[Candidate], rng: random.Random) -> Choice | None:
    pool, panic = usable(candidates)
    eligible = [c for c in pool if c.ready_in == 0.0 and c.fits]
    if not eligible:
        return None
    tier = min(c.host.priority for c in eligible)
    tiered = [c for c in eligible if c.host.priority == tier]
    if len(tiered) == 1:
        return Choice(tiered[0], panic)
    first = _weighted(tiered, rng)
    second = _weighted([c for c in tiered if c is not first], rng)
    return Choice(first if first.free_fraction >= second.free_fraction else second, panic)


def soonest(candidates: Sequence[Candidate]) -> float:
    """Clock seconds until any host could take the request; inf when none is in sight.

    Hosts the probes exclude count only when nothing else can ever serve (they would be used in panic).
    """
    trusted = [c.recovers_in for c in candidates if not c.probe_down]
    wait = min(trusted, default=math.inf)
    if wait == math.inf:
        wait = min((c.recovers_in for c in candidates), default=math.inf)
    return wait


def _weighted(pool: Sequence[Candidate], rng: random.Random) -> Candidate:
    return rng.choices(pool, weights=[c.host.weight for c in pool], k=1)[0]
