"""SlidingWindow: conservative expiry (bucket end + length), exact waits, releases."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from shared.window import SlidingWindow

LENGTH = 60.0
RES = 0.25


def window() -> SlidingWindow:
    return SlidingWindow(LENGTH, RES)


def test_an_add_counts_until_its_bucket_end_plus_the_length() -> None:
    w = window()
    w.add(0.1, 100)  # bucket [0, 0.25): counted until 0.25 + 60
    assert w.total(60.1) == 100  # an exact window would have dropped it at 60.1
    assert w.total(60.2499) == 100
    assert w.total(60.25) == 0
    assert w.expired_total == 100


def test_buckets_expire_one_by_one_in_order() -> None:
    w = window()
    w.add(0.0, 10)
    w.add(1.0, 20)
    w.add(2.0, 30)
    assert w.total(61.0) == 50  # first bucket gone at 60.25, second lives until 61.25
    assert w.total(61.25) == 30
    assert w.expired_total == 30
    assert w.total(1000.0) == 0
    assert w.expired_total == 60


def test_adds_in_the_same_bucket_add_up() -> None:
    w = window()
    w.add(5.0, 1)
    w.add(5.1, 2)
    w.add(5.24, 3)
    assert w.total(5.24) == 6
    assert w.total(65.25) == 0  # one bucket, one expiry
    assert w.expired_total == 6


def test_seconds_until_is_zero_when_room_fits_now() -> None:
    w = window()
    w.add(0.0, 80)
    assert w.seconds_until(10.0, 20, 100) == 0.0
    assert w.seconds_until(10.0, 21, 100) > 0


def test_seconds_until_waits_for_just_enough_buckets() -> None:
    w = window()
    w.add(0.0, 50)  # expires 60.25
    w.add(1.0, 50)  # expires 61.25
    assert w.seconds_until(30.0, 40, 100) == 60.25 - 30.0  # the first bucket frees enough
    assert w.seconds_until(30.0, 60, 100) == 61.25 - 30.0  # both are needed
    assert w.seconds_until(61.25, 100, 100) == 0.0


def test_seconds_until_is_inf_when_room_exceeds_the_limit() -> None:
    w = window()
    assert w.seconds_until(0.0, 101, 100) == math.inf
    w.add(0.0, 10)
    assert w.seconds_until(0.0, 95, 100) == 60.25
    assert w.seconds_until(0.0, 101, 100) == math.inf


def test_a_negative_add_takes_back() -> None:
    w = window()
    w.add(3.0, 100)
    w.add(3.0, -100)
    assert w.total(3.0) == 0
    assert w.seconds_until(3.0, 100, 100) == 0.0
    w.add(4.0, 10)
    w.add(3.0, -5)  # into an older bucket that is still alive
    assert w.total(4.0) == 5


def test_an_add_to_an_expired_bucket_is_ignored() -> None:
    w = window()
    w.add(0.0, 100)
    w.add(70.0, 10)
    assert w.total(70.0) == 10
    expired = w.expired_total
    w.add(0.0, -100)  # e.g. a late release of a reservation whose bucket already left the window
    w.add(0.0, 40)
    assert w.total(70.0) == 10
    assert w.expired_total == expired
    assert w.seconds_until(70.0, 90, 100) == 0.0


def test_an_add_to_an_expired_bucket_of_an_empty_window_does_not_count() -> None:
    w = window()
    w.add(0.0, 100)
    assert w.total(70.0) == 0
    w.add(0.0, 50)
    assert w.total(70.0) == 0
    assert w.seconds_until(70.0, 100, 100) == 0.0


def test_total_is_never_negative() -> None:
    w = window()
    w.add(0.0, -10)
    assert w.total(0.0) == 0


_ops = st.lists(
    st.tuples(st.floats(0, 5, allow_nan=False), st.integers(0, 1000), st.floats(0, 100, allow_nan=False)),
    max_size=40,
)


@given(_ops)
def test_total_matches_the_adds_inside_the_window(ops: list[tuple[float, int, float]]) -> None:
    """On a monotonic clock: move, add, move, look.

    Whatever the bucketing, an add counts at least while now < at + length and at most while
    now < at + length + resolution (never dropped early, late by at most one bucket).
    """
    w = window()
    now = 0.0
    adds: list[tuple[float, int]] = []
    for step, amount, look in ops:
        now += step
        w.add(now, amount)
        adds.append((now, amount))
        now += look
        total = w.total(now)
        surely_in = sum(a for t, a in adds if now < t + LENGTH)
        maybe_in = sum(a for t, a in adds if now < t + LENGTH + RES)
        assert surely_in <= total <= maybe_in
        assert total + w.expired_total == sum(a for _, a in adds)
