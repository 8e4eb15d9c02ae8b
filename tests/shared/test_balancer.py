"""pick(): tiers first, then weighted power of two choices on free fraction; soonest()."""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.balancer import Candidate, pick, soonest
from shared.cluster import Host


def cand(
    name: str,
    free: float,
    *,
    tpm: int = 1000,
    priority: int = 1,
    weight: float = 1.0,
    requests: float = 10,
    ready_in: float = 0.0,
    fits_in: float = 0.0,
) -> Candidate:
    host = Host(name, f"https://{name}.example", "gpt-4o", tpm, 60, priority, weight)
    return Candidate(host, free, requests, ready_in, fits_in)


def picked(candidates: list[Candidate], cost: int, rng: random.Random) -> str:
    chosen = pick(candidates, cost, rng)
    assert chosen is not None
    return chosen.host.name


def test_nothing_eligible_gives_none() -> None:
    rng = random.Random(1)
    assert pick([], 10, rng) is None
    full = cand("a", 5)
    cooling = cand("b", 1000, ready_in=3.0)
    no_requests = cand("c", 1000, requests=0.5)
    assert pick([full, cooling, no_requests], 10, rng) is None


def test_the_single_eligible_host_is_picked() -> None:
    rng = random.Random(1)
    ok = cand("ok", 10)
    for _ in range(20):
        assert pick([cand("full", 9), ok, cand("cold", 1000, ready_in=1)], 10, rng) is ok


def test_priority_one_is_preferred_even_when_fuller() -> None:
    rng = random.Random(2)
    ptu = cand("ptu", 100, priority=1)
    paygo = [cand("paygo1", 1000, priority=2), cand("paygo2", 1000, priority=2)]
    assert {picked([*paygo, ptu], 100, rng) for _ in range(50)} == {"ptu"}


def test_spills_to_priority_two_when_priority_one_is_full() -> None:
    rng = random.Random(3)
    candidates = [cand("ptu1", 99, priority=1), cand("ptu2", 50, priority=1), cand("paygo", 1000, priority=2)]
    assert pick(candidates, 100, rng) is candidates[2]


def test_of_two_the_freer_fraction_always_wins() -> None:
    rng = random.Random(4)
    # "big" has more free tokens but a smaller share of its quota free.
    big = cand("big", 2000, tpm=10_000)
    small = cand("small", 600, tpm=1000)
    assert all(pick([big, small], 100, rng) is small for _ in range(200))


def test_the_least_free_of_several_is_never_picked() -> None:
    rng = random.Random(5)
    pool = [cand("a", 900), cand("b", 700), cand("c", 500), cand("d", 300)]
    counts = Counter(picked(pool, 100, rng) for _ in range(2000))
    assert counts["d"] == 0
    # With 4 equal weights, "a" wins whenever it is drawn (1/2 of draws); "c" only against "d" (1/6).
    assert 0.44 < counts["a"] / 2000 < 0.56
    assert 0.28 < counts["b"] / 2000 < 0.39
    assert 0.12 < counts["c"] / 2000 < 0.22


def test_weights_bias_the_draw() -> None:
    rng = random.Random(6)
    # Equal free fractions: the first draw wins the comparison, so weight 3:1 gives about 75%.
    heavy = cand("heavy", 500, weight=3)
    light = cand("light", 500, weight=1)
    n = 4000
    share = sum(pick([heavy, light], 100, rng) is heavy for _ in range(n)) / n
    assert 0.70 < share < 0.80


def test_a_cost_above_the_quota_needs_a_fully_free_host() -> None:
    rng = random.Random(7)
    assert pick([cand("a", 999, tpm=1000)], 5000, rng) is None
    idle = cand("b", 1000, tpm=1000)
    assert pick([idle], 5000, rng) is idle


def test_soonest_is_the_earliest_recovery() -> None:
    assert soonest([]) == math.inf
    assert soonest([cand("a", 0, ready_in=math.inf)]) == math.inf
    candidates = [
        cand("cooling", 0, ready_in=7.0, fits_in=2.0),  # 7: health lets it back at 7
        cand("full", 0, ready_in=0.0, fits_in=4.5),  # 4.5: its window has room at 4.5
        cand("down", 0, ready_in=math.inf),
    ]
    assert soonest(candidates) == 4.5


_candidate = st.builds(
    cand,
    name=st.text("abcdefgh", min_size=1, max_size=3),
    free=st.floats(-100, 2000, allow_nan=False),
    tpm=st.integers(1, 1500),
    priority=st.integers(1, 3),
    weight=st.floats(0.1, 10),
    requests=st.sampled_from([0.0, 0.5, 1.0, 5.0]),
    ready_in=st.sampled_from([0.0, 0.0, 1.0, math.inf]),
)


@given(st.lists(_candidate, max_size=8), st.integers(0, 3000), st.integers(0, 2**32))
def test_pick_is_eligible_and_from_the_best_tier(candidates: list[Candidate], cost: int, seed: int) -> None:
    chosen = pick(candidates, cost, random.Random(seed))

    def eligible(c: Candidate) -> bool:
        return c.ready_in == 0 and c.free_requests >= 1 and c.free_tokens >= min(cost, c.host.tpm)

    allowed = [c for c in candidates if eligible(c)]
    if not allowed:
        assert chosen is None
        return
    assert chosen is not None
    assert any(chosen is c for c in allowed)
    assert chosen.host.priority == min(c.host.priority for c in allowed)
