"""pick(): tiers first, then weighted power of two choices on free fraction; panic mode; soonest()."""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shared.balancer import Candidate, pick, soonest, usable
from shared.cluster import Host


def cand(
    name: str,
    free: float = 1.0,
    *,
    fits: bool = True,
    priority: int = 1,
    weight: float = 1.0,
    ready_in: float = 0.0,
    fits_in: float = 0.0,
    probe_down: bool = False,
) -> Candidate:
    host = Host(name, f"https://{name}.example", "gpt-4o", 1000, 60, priority, weight)
    return Candidate(host, free, fits, fits_in, ready_in, probe_down)


def picked(candidates: list[Candidate], rng: random.Random) -> str:
    chosen = pick(candidates, rng)
    assert chosen is not None
    return chosen.host.name


def test_nothing_eligible_gives_none() -> None:
    rng = random.Random(1)
    assert pick([], rng) is None
    full = cand("a", 0.005, fits=False, fits_in=3.0)
    cooling = cand("b", ready_in=3.0)
    assert pick([full, cooling], rng) is None


def test_the_single_eligible_host_is_picked() -> None:
    rng = random.Random(1)
    ok = cand("ok", 0.01)
    for _ in range(20):
        choice = pick([cand("full", fits=False), ok, cand("cold", ready_in=1)], rng)
        assert choice is not None and choice.candidate is ok and not choice.panic


def test_priority_one_is_preferred_even_when_fuller() -> None:
    rng = random.Random(2)
    ptu = cand("ptu", 0.1, priority=1)
    paygo = [cand("paygo1", 1.0, priority=2), cand("paygo2", 1.0, priority=2)]
    assert {picked([*paygo, ptu], rng) for _ in range(50)} == {"ptu"}


def test_spills_to_priority_two_when_priority_one_is_full() -> None:
    rng = random.Random(3)
    candidates = [cand("ptu1", fits=False), cand("ptu2", fits=False), cand("paygo", priority=2)]
    assert picked(candidates, rng) == "paygo"


def test_of_two_the_freer_fraction_always_wins() -> None:
    rng = random.Random(4)
    big, small = cand("big", 0.2), cand("small", 0.6)
    assert all(picked([big, small], rng) == "small" for _ in range(200))


def test_the_least_free_of_several_is_never_picked() -> None:
    rng = random.Random(5)
    pool = [cand("a", 0.9), cand("b", 0.7), cand("c", 0.5), cand("d", 0.3)]
    counts = Counter(picked(pool, rng) for _ in range(2000))
    assert counts["d"] == 0
    # With 4 equal weights, "a" wins whenever it is drawn (1/2 of draws); "c" only against "d" (1/6).
    assert 0.44 < counts["a"] / 2000 < 0.56
    assert 0.28 < counts["b"] / 2000 < 0.39
    assert 0.12 < counts["c"] / 2000 < 0.22


def test_weights_bias_the_draw() -> None:
    rng = random.Random(6)
    # Equal free fractions: the first draw wins the comparison, so weight 3:1 gives about 75%.
    heavy = cand("heavy", 0.5, weight=3)
    light = cand("light", 0.5, weight=1)
    n = 4000
    share = sum(picked([heavy, light], rng) == "heavy" for _ in range(n)) / n
    assert 0.70 < share < 0.80


def test_a_host_the_probe_calls_down_is_avoided_while_another_can_serve() -> None:
    rng = random.Random(8)
    doubted, trusted = cand("doubted", 1.0, probe_down=True), cand("trusted", 0.1)
    for _ in range(50):
        choice = pick([doubted, trusted], rng)
        assert choice is not None and choice.candidate is trusted and not choice.panic


def test_panic_when_the_probes_alone_exclude_every_host() -> None:
    rng = random.Random(9)
    a, b = cand("a", probe_down=True), cand("b", probe_down=True, ready_in=4.0)
    choice = pick([a, b], rng)
    assert choice is not None and choice.candidate is a and choice.panic
    # A host held back by its own cooldown is not used in panic either.
    assert pick([b], rng) is None
    assert usable([b]) == ([], False)


def test_panic_also_when_every_host_the_probes_trust_is_cooling_down() -> None:
    rng = random.Random(10)
    cooling, doubted = cand("cooling", ready_in=5.0), cand("doubted", probe_down=True)
    choice = pick([cooling, doubted], rng)
    assert choice is not None and choice.candidate is doubted and choice.panic


def test_panic_when_the_hosts_the_probes_trust_hold_under_half_the_quota() -> None:
    """Probes turn one by one: with two of three hosts doubted, the third cannot carry the deployment alone, so
    every ready host is used (Envoy's panic threshold, 50% by default); with one of three doubted, it stays out."""
    rng = random.Random(12)
    trusted = cand("trusted")
    doubted = [cand("d1", probe_down=True), cand("d2", probe_down=True)]
    pool, panic = usable([trusted, *doubted])
    assert panic and pool == [trusted, *doubted]
    assert {picked([trusted, *doubted], rng) for _ in range(60)} == {"trusted", "d1", "d2"}
    # A full trusted host below the threshold does not make the request wait: the doubted ones take it.
    full = cand("trusted", fits=False, fits_in=5.0)
    choice = pick([full, *doubted], rng)
    assert choice is not None and choice.host.name in {"d1", "d2"} and choice.panic
    # At or above the threshold the doubted host stays out, ready or not.
    two = [cand("t1"), cand("t2")]
    assert usable([*two, doubted[0]]) == (two, False)
    # Hosts held back by live traffic's own evidence (cooldown, ejection) count for neither side.
    cooling = cand("cooling", ready_in=3.0)
    assert usable([trusted, cooling, doubted[0]]) == ([trusted, cooling], False)


def test_no_panic_when_a_trusted_host_is_only_full() -> None:
    """Panic is about health, not load: a healthy host without room means wait or 429."""
    rng = random.Random(11)
    full, doubted = cand("full", fits=False, fits_in=2.0), cand("doubted", probe_down=True)
    assert pick([full, doubted], rng) is None
    assert usable([full, doubted]) == ([full], False)


def test_soonest_is_the_earliest_recovery() -> None:
    assert soonest([]) == math.inf
    assert soonest([cand("a", ready_in=math.inf)]) == math.inf
    candidates = [
        cand("cooling", ready_in=7.0, fits_in=2.0),  # 7: health lets it back at 7
        cand("full", fits=False, fits_in=4.5),  # 4.5: its window has room at 4.5
        cand("down", ready_in=math.inf),
        cand("doubted", fits=False, fits_in=1.0, probe_down=True),  # not while a trusted host recovers
    ]
    assert soonest(candidates) == 4.5
    assert soonest([cand("doubted", fits=False, fits_in=1.0, probe_down=True)]) == 1.0


_candidate = st.builds(
    cand,
    name=st.text("abcdefgh", min_size=1, max_size=3),
    free=st.floats(0, 1, allow_nan=False),
    fits=st.booleans(),
    priority=st.integers(1, 3),
    weight=st.floats(0.1, 10),
    ready_in=st.sampled_from([0.0, 0.0, 1.0, math.inf]),
    probe_down=st.sampled_from([False, False, True]),
)


@given(st.lists(_candidate, max_size=8), st.integers(0, 2**32))
def test_pick_is_eligible_and_from_the_best_tier(candidates: list[Candidate], seed: int) -> None:
    chosen = pick(candidates, random.Random(seed))
    ready = [c for c in candidates if c.ready_in == 0]
    trusted_ready = [c for c in ready if not c.probe_down]
    panic = len(trusted_ready) < len(ready) / 2  # every host here has the same quota
    pool = ready if panic else trusted_ready
    allowed = [c for c in pool if c.fits]
    if not allowed:
        assert chosen is None
        return
    assert chosen is not None
    assert any(chosen.candidate is c for c in allowed)
    assert chosen.host.priority == min(c.host.priority for c in allowed)
    assert chosen.panic == panic
