"""LocalLedger on a ManualClock: reservations, settlement, headroom and the x-ratelimit hint.

Defaults: token window 60 s + 0.5 s margin, request window 10 s + 0.5 s, buckets of 0.25 s; so a
reservation made at t=0 is counted until 0.25 + 60.5 = 60.75 (tokens) and 0.25 + 10.5 = 10.75 (requests).
"""

from __future__ import annotations

import math

import pytest

from shared.clock import ManualClock
from shared.ledger import LocalLedger

H = "eastus/gpt-4o"
BIG_TPM = 1_000_000
RPM = 600  # 100 requests per 10 s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(clock: ManualClock) -> LocalLedger:
    return LocalLedger(clock)


def tokens_free(ledger: LocalLedger, tpm: int = BIG_TPM) -> float:
    return ledger.headroom(H, tpm, RPM)[0]


def test_reserve_takes_headroom_and_release_gives_it_back(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    assert ledger.headroom(H, 10_000, RPM) == (9000, 99)
    assert ledger.window_tokens(H) == 1000
    ledger.release(r)
    assert ledger.headroom(H, 10_000, RPM) == (10_000, 100)
    assert ledger.usage()[H].requests == 0  # a released request was not served


def test_settle_with_more_than_the_estimate_charges_the_difference(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.settle(r, 1500)
    assert ledger.window_tokens(H) == 1500
    assert ledger.usage()[H].tokens == 1500


def test_settle_with_less_than_the_estimate_keeps_the_estimate(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.settle(r, 200)
    assert ledger.window_tokens(H) == 1000  # Azure charged the estimate at admission
    assert ledger.usage()[H].tokens == 200  # but only 200 were served


def test_settle_without_usage_keeps_the_estimate(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.settle(r, None)
    assert ledger.window_tokens(H) == 1000
    assert ledger.usage()[H].tokens == 1000


def test_a_reservation_is_closed_once(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.settle(r, 3000)
    ledger.settle(r, 3000)
    ledger.release(r)
    assert ledger.window_tokens(H) == 3000
    assert ledger.usage()[H].requests == 1


def test_reservations_expire_with_the_window(ledger: LocalLedger, clock: ManualClock) -> None:
    ledger.reserve(H, 1000, "app")
    clock.advance(10.7)
    assert ledger.headroom(H, 10_000, RPM) == (9000, 99)
    clock.advance(0.05)  # 10.75: the request window has let it go
    assert ledger.headroom(H, 10_000, RPM) == (9000, 100)
    clock.advance(49.95)  # 60.7
    assert tokens_free(ledger, 10_000) == 9000
    clock.advance(0.05)  # 60.75
    assert tokens_free(ledger, 10_000) == 10_000


def test_request_limit_is_rpm_over_ten_seconds(ledger: LocalLedger) -> None:
    assert ledger.request_limit(600) == 100
    assert ledger.request_limit(1440) == 240
    assert ledger.request_limit(6) == 1
    assert ledger.request_limit(1) == 1  # never below one request
    for _ in range(3):
        ledger.reserve(H, 1, "app")
    assert ledger.headroom(H, BIG_TPM, 60)[1] == 10 - 3


def test_a_hint_tightens_headroom_and_later_reservations_tighten_it_more(
    ledger: LocalLedger, clock: ManualClock
) -> None:
    first = ledger.reserve(H, 1000, "app")
    clock.advance(5)
    ledger.observe(first, 5000, None)  # Azure: 5000 left, this request included
    assert tokens_free(ledger) == 5000
    clock.advance(5)  # t=10
    ledger.reserve(H, 2000, "app")
    assert tokens_free(ledger) == 3000
    clock.advance(50.75)  # t=60.75: `first` has left our window, so it has left Azure's
    assert tokens_free(ledger) == 4000


def test_an_older_hint_does_not_replace_a_newer_one(ledger: LocalLedger) -> None:
    older = ledger.reserve(H, 1000, "app")
    newer = ledger.reserve(H, 2000, "app")
    ledger.observe(newer, 5000, None)
    ledger.observe(older, 9000, None)  # answered later, but sent earlier: staler
    assert tokens_free(ledger) == 5000


def test_a_newer_hint_replaces_an_older_one(ledger: LocalLedger) -> None:
    older = ledger.reserve(H, 1000, "app")
    newer = ledger.reserve(H, 2000, "app")
    ledger.observe(older, 9000, None)
    assert tokens_free(ledger) == 7000  # 9000 minus the 2000 reserved after `older`
    ledger.observe(newer, 8000, None)
    assert tokens_free(ledger) == 8000


def test_a_hint_older_than_the_window_is_ignored(ledger: LocalLedger, clock: ManualClock) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.observe(r, 0, None)
    assert tokens_free(ledger) == 0
    clock.advance(30)
    ledger.reserve(H, 100, "app")
    clock.advance(30.6)  # 60.6 s after the hint (past the 60.5 s window); the first 1000 count until 60.75
    assert tokens_free(ledger) == BIG_TPM - 1100  # the hint would have said 0 - 100


def test_a_request_hint_tightens_request_headroom(ledger: LocalLedger, clock: ManualClock) -> None:
    r = ledger.reserve(H, 10, "app")
    ledger.observe(r, None, 2)
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 2
    ledger.reserve(H, 10, "app")
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 1
    clock.advance(10.6)  # older than the 10.5 s request window
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 100 - 2


def test_releasing_a_reservation_the_hint_already_covers_does_not_loosen_it(ledger: LocalLedger) -> None:
    # A 429 carrying `x-ratelimit-remaining-tokens: 0`: Azure has nothing left and did not admit the request.
    r = ledger.reserve(H, 4000, "app")
    ledger.observe(r, 0, 0)
    ledger.release(r)  # never admitted, nothing expired since: Azure still has nothing left
    free_tokens, free_requests = ledger.headroom(H, BIG_TPM, RPM)
    assert free_tokens <= 0
    assert free_requests <= 0


def test_seconds_until_waits_for_the_token_window(ledger: LocalLedger, clock: ManualClock) -> None:
    ledger.reserve(H, 800, "app")
    clock.advance(10)
    assert ledger.seconds_until(H, 200, 1000, RPM) == 0.0
    assert ledger.seconds_until(H, 500, 1000, RPM) == pytest.approx(60.75 - 10)


def test_seconds_until_waits_for_the_request_window(ledger: LocalLedger, clock: ManualClock) -> None:
    ledger.reserve(H, 1, "app")  # rpm 6: one request per 10 s
    clock.advance(3)
    assert ledger.seconds_until(H, 1, BIG_TPM, 6) == pytest.approx(10.75 - 3)


def test_seconds_until_caps_the_cost_at_the_quota(ledger: LocalLedger) -> None:
    assert ledger.seconds_until(H, 5000, 1000, RPM) == 0.0  # bigger than the quota: fits an idle host
    ledger.reserve(H, 1, "app")
    assert 0 < ledger.seconds_until(H, 5000, 1000, RPM) < math.inf


def test_seconds_until_is_a_short_positive_wait_when_only_the_hint_binds(ledger: LocalLedger) -> None:
    r = ledger.reserve(H, 1000, "app")
    ledger.observe(r, 100, None)
    wait = ledger.seconds_until(H, 500, BIG_TPM, RPM)
    assert 0 < wait <= 1


def test_usage_is_per_host_and_per_client(ledger: LocalLedger) -> None:
    ledger.settle(ledger.reserve(H, 100, "app-a"), 150)
    ledger.settle(ledger.reserve(H, 100, "app-b"), None)
    ledger.settle(ledger.reserve(H, 100, "app-a"), 50)
    ledger.release(ledger.reserve(H, 100, "app-b"))
    ledger.settle(ledger.reserve("west/gpt-4o", 7, "app-b"), 7)
    usage = ledger.usage()
    assert usage[H].tokens == 300
    assert usage[H].requests == 3
    assert usage[H].by_client == {"app-a": 200, "app-b": 100}
    assert usage["west/gpt-4o"].by_client == {"app-b": 7}
