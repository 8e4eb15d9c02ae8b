"""LocalLedger on a ManualClock: reservations on several windows, settlement, headroom, the x-ratelimit hint,
the adaptive expiry margin and the usage records.

Defaults: token window 60 s in buckets of 0.25 s, request window 10 s in buckets of 0.05 s, margin 0.1 s; so a
reservation made at t=0 is counted until 0.25 + 60 + 0.1 = 60.35 (tokens) and 0.05 + 10 + 0.1 = 10.15 (requests).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clock import ManualClock
from shared.ledger import LocalLedger, Reservation, TokenUsage, seconds_to_next_day, utc_day

H = "eastus/gpt-4o"
CLIENT = "client:app"
BIG_TPM = 1_000_000
RPM = 600  # 100 requests per 10 s
MIDNIGHT = 1_796_083_200.0  # 2026-12-01T00:00:00Z


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(clock: ManualClock) -> LocalLedger:
    return LocalLedger(clock)


def reserve(
    ledger: LocalLedger, tokens: int, client: str = "app", keys: tuple[str, ...] = (H,), prompt: int = 0
) -> Reservation:
    return ledger.reserve(keys, tokens, prompt=prompt, client=client, deployment="gpt-4o")


def tokens_free(ledger: LocalLedger, tpm: int = BIG_TPM, key: str = H) -> float:
    return ledger.headroom(key, tpm, RPM)[0]


def test_reserve_takes_headroom_and_release_gives_it_back(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000)
    assert ledger.headroom(H, 10_000, RPM) == (9000, 99)
    assert ledger.window_tokens(H) == 1000
    ledger.release(r)
    assert ledger.headroom(H, 10_000, RPM) == (10_000, 100)
    assert ledger.host_usage() == {}  # a released request was not served
    assert ledger.records() == {}


def test_a_reservation_charges_every_window_it_names(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000, keys=(H, CLIENT))
    assert tokens_free(ledger, 20_000, CLIENT) == 19_000
    assert tokens_free(ledger, 20_000) == 19_000
    ledger.settle(r, TokenUsage(1200, 300))  # 1500 > the estimate: both windows trued up
    assert ledger.window_tokens(CLIENT) == ledger.window_tokens(H) == 1500
    assert set(ledger.host_usage()) == {H}  # served tokens are counted on the host only


def test_settle_with_more_than_the_estimate_charges_the_difference(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000)
    ledger.settle(r, TokenUsage(1000, 500))
    assert ledger.window_tokens(H) == 1500
    assert ledger.host_usage()[H].tokens == 1500


def test_settle_with_less_than_the_estimate_keeps_the_estimate(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000)
    ledger.settle(r, TokenUsage(150, 50))
    assert ledger.window_tokens(H) == 1000  # Azure charged the estimate at admission
    assert ledger.host_usage()[H].tokens == 200  # but only 200 were served


def test_settle_without_usage_keeps_the_estimate_and_records_it(ledger: LocalLedger, clock: ManualClock) -> None:
    r = reserve(ledger, 1000, prompt=40)
    ledger.settle(r, None)
    assert ledger.window_tokens(H) == 1000
    assert ledger.host_usage()[H].tokens == 1000
    [record] = ledger.records().values()
    assert (record.prompt, record.completion, record.requests) == (40, 960, 1)


def test_a_reservation_is_closed_once(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000)
    ledger.settle(r, TokenUsage(3000, 0))
    ledger.settle(r, TokenUsage(3000, 0))
    ledger.release(r)
    assert ledger.window_tokens(H) == 3000
    assert ledger.host_usage()[H].requests == 1


def test_reservations_expire_with_the_window_and_its_margin(ledger: LocalLedger, clock: ManualClock) -> None:
    reserve(ledger, 1000)
    clock.advance(10.14)
    assert ledger.headroom(H, 10_000, RPM) == (9000, 99)
    clock.advance(0.02)  # 10.16: the request window has let it go
    assert ledger.headroom(H, 10_000, RPM) == (9000, 100)
    clock.advance(50.18)  # 60.34
    assert tokens_free(ledger, 10_000) == 9000
    clock.advance(0.02)  # 60.36
    assert tokens_free(ledger, 10_000) == 10_000


def test_request_limit_is_rpm_over_ten_seconds(ledger: LocalLedger) -> None:
    assert ledger.request_limit(600) == 100
    assert ledger.request_limit(1440) == 240
    assert ledger.request_limit(6) == 1
    assert ledger.request_limit(1) == 1  # never below one request
    for _ in range(3):
        reserve(ledger, 1)
    assert ledger.headroom(H, BIG_TPM, 60)[1] == 10 - 3


def test_a_surprise_429_without_a_retry_after_doubles_the_margin_which_then_decays(
    ledger: LocalLedger, clock: ManualClock
) -> None:
    reserve(ledger, 1)  # at 0: counted until 10.05 (its bucket's end + 10 s) + the margin (0.1)
    clock.advance(10.0)
    ledger.surprised(H, requests=True, retry_after=None)  # 0.1 -> 0.2
    ledger.surprised(H, requests=True, retry_after=None)  # -> 0.4
    clock.advance(0.4)  # the margin has barely decayed: still counted (the floor would have let it go)
    assert ledger.headroom(H, BIG_TPM, 6)[1] == 0
    clock.advance(0.1)
    assert ledger.headroom(H, BIG_TPM, 6)[1] == 1
    clock.advance(100)  # ten half-lives (the request window's length) later it is back near its floor
    reserve(ledger, 1)
    clock.advance(10.2)
    assert ledger.headroom(H, BIG_TPM, 6)[1] == 1
    for _ in range(20):  # the token margin is separate, and bounded
        ledger.surprised(H, requests=False, retry_after=None)
    reserve(ledger, 100)
    clock.advance(60.25 + 2.0 + 0.01)
    assert tokens_free(ledger) == BIG_TPM


def test_a_surprise_429_widens_the_margin_by_how_late_the_view_was_not_by_a_fixed_factor(
    ledger: LocalLedger, clock: ManualClock
) -> None:
    # A 429 saying "room in 1.0" for a request sent the moment this view had room: the host frees room
    # 1.0 later than the view did, so the margin grows from 0.1 to 1.1, not to a doubled 0.2 (too little:
    # more 429s) nor to some guess (too much: quota given away in every window).
    reserve(ledger, 1)  # at 0: counted until 10.05 + the margin
    clock.advance(10.0)
    ledger.surprised(H, requests=True, retry_after=1.0)
    clock.advance(1.0)  # the margin has decayed to ~1.03 by now: still counted (a doubled one would not be)
    assert ledger.headroom(H, BIG_TPM, 6)[1] == 0
    clock.advance(0.2)
    assert ledger.headroom(H, BIG_TPM, 6)[1] == 1


def test_a_hint_tightens_headroom_and_later_reservations_tighten_it_more(
    ledger: LocalLedger, clock: ManualClock
) -> None:
    reserve(ledger, 1000)  # t=0: A
    clock.advance(30)
    b = reserve(ledger, 500)  # t=30: B
    clock.advance(10)  # the answer to B comes 10 s later (a long generation) ...
    ledger.observe(b, 5000, None)  # ... saying what Azure had left when it admitted B: 5000
    assert tokens_free(ledger) == 5000
    reserve(ledger, 2000)  # t=40: C
    assert tokens_free(ledger) == 3000
    clock.advance(20.36)  # t=60.36: A has left our window, so it has left Azure's
    assert tokens_free(ledger) == 4000
    clock.advance(30)  # a window after B's admission the hint says nothing any more
    assert tokens_free(ledger) == BIG_TPM - 2000


def test_expiry_between_admission_and_a_late_answer_loosens_the_hint(ledger: LocalLedger, clock: ManualClock) -> None:
    reserve(ledger, 9000)  # t=0
    clock.advance(55)
    slow = reserve(ledger, 1000)  # t=55: Azure admits it with 0 left (the 9000 still count)
    clock.advance(30)  # t=85: the 9000 left both windows at ~60; the answer arrives only now
    ledger.observe(slow, 0, None)
    assert tokens_free(ledger, 10_000) == 9000  # not 0: what expired since admission is room again


def test_an_older_hint_does_not_replace_a_newer_one(ledger: LocalLedger) -> None:
    older = reserve(ledger, 1000)
    newer = reserve(ledger, 2000)
    ledger.observe(newer, 5000, None)
    ledger.observe(older, 9000, None)  # answered later, but sent earlier: staler
    assert tokens_free(ledger) == 5000


def test_a_newer_hint_replaces_an_older_one(ledger: LocalLedger) -> None:
    older = reserve(ledger, 1000)
    newer = reserve(ledger, 2000)
    ledger.observe(older, 9000, None)
    assert tokens_free(ledger) == 7000  # 9000 minus the 2000 reserved after `older`
    ledger.observe(newer, 8000, None)
    assert tokens_free(ledger) == 8000


def test_a_hint_older_than_the_window_is_ignored(ledger: LocalLedger, clock: ManualClock) -> None:
    r = reserve(ledger, 1000)
    ledger.observe(r, 0, None)
    assert tokens_free(ledger) == 0
    clock.advance(30)
    reserve(ledger, 100)
    clock.advance(30.1)  # 60.1 s after the hint (past the 60 s window); the first 1000 count until 60.35
    assert tokens_free(ledger) == BIG_TPM - 1100  # the hint would have said 0 - 100


def test_a_request_hint_tightens_request_headroom(ledger: LocalLedger, clock: ManualClock) -> None:
    r = reserve(ledger, 10)
    ledger.observe(r, None, 2)
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 2
    reserve(ledger, 10)
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 1
    clock.advance(10.2)  # older than the 10 s request window, and both requests have left it
    assert ledger.headroom(H, BIG_TPM, RPM)[1] == 100


def test_releasing_a_reservation_the_hint_already_covers_does_not_loosen_it(ledger: LocalLedger) -> None:
    # A 429 carrying `x-ratelimit-remaining-tokens: 0`: Azure has nothing left and did not admit the request.
    r = reserve(ledger, 4000)
    ledger.observe(r, 0, 0)
    ledger.release(r)  # never admitted, nothing expired since: Azure still has nothing left
    free_tokens, free_requests = ledger.headroom(H, BIG_TPM, RPM)
    assert free_tokens <= 0
    assert free_requests <= 0


def test_seconds_until_waits_for_the_token_window(ledger: LocalLedger, clock: ManualClock) -> None:
    reserve(ledger, 800)
    clock.advance(10)
    assert ledger.seconds_until(H, 200, 1000, RPM) == 0.0
    assert ledger.seconds_until(H, 500, 1000, RPM) == pytest.approx(60.35 - 10)


def test_seconds_until_waits_for_the_request_window(ledger: LocalLedger, clock: ManualClock) -> None:
    reserve(ledger, 1)  # rpm 6: one request per 10 s
    clock.advance(3)
    assert ledger.seconds_until(H, 1, BIG_TPM, 6) == pytest.approx(10.15 - 3)


def test_seconds_until_is_infinite_for_a_request_larger_than_the_quota(ledger: LocalLedger) -> None:
    assert ledger.seconds_until(H, 5000, 1000, RPM) == math.inf


def test_seconds_until_is_a_short_positive_wait_when_only_the_hint_binds(ledger: LocalLedger) -> None:
    r = reserve(ledger, 1000)
    ledger.observe(r, 100, None)
    wait = ledger.seconds_until(H, 500, BIG_TPM, RPM)
    assert 0 < wait <= 1


def test_usage_records_are_per_day_client_and_deployment(ledger: LocalLedger, clock: ManualClock) -> None:
    clock.advance(MIDNIGHT - 10)  # 23:59:50 on 2026-11-30
    ledger.settle(reserve(ledger, 100, "app-a"), TokenUsage(100, 50))
    ledger.settle(reserve(ledger, 100, "app-b"), None)
    ledger.release(reserve(ledger, 100, "app-b"))
    assert ledger.day_tokens("app-a") == 150 and ledger.day_tokens("app-a", "gpt-4o") == 150
    assert ledger.day_tokens("app-a", "other") == 0
    clock.advance(10)  # midnight UTC: a new day starts from zero
    assert ledger.day_tokens("app-a") == 0
    ledger.settle(reserve(ledger, 100, "app-a"), TokenUsage(7, 3))
    records = ledger.records()
    assert records[("2026-11-30", "app-a", "gpt-4o")].tokens == 150
    assert records[("2026-11-30", "app-b", "gpt-4o")].requests == 1
    assert records[("2026-12-01", "app-a", "gpt-4o")].prompt == 7


async def test_the_usage_report_covers_the_days_asked(ledger: LocalLedger, clock: ManualClock) -> None:
    clock.advance(MIDNIGHT - 10)
    ledger.settle(reserve(ledger, 100), TokenUsage(1, 1))
    clock.advance(86_400)
    ledger.settle(reserve(ledger, 100), TokenUsage(2, 2))
    report = await ledger.usage_report(date(2026, 12, 1), date(2026, 12, 31))
    assert list(report) == [("2026-12-01", "app", "gpt-4o")]


def test_utc_days() -> None:
    assert utc_day(MIDNIGHT - 0.001) == "2026-11-30"
    assert utc_day(MIDNIGHT) == "2026-12-01"
    assert seconds_to_next_day(MIDNIGHT - 5) == pytest.approx(5)


@given(st.lists(st.floats(-2e9, 4e9) | st.integers(-20_000, 40_000).map(lambda day: day * 86400.0), max_size=20))
def test_utc_day_names_the_day_of_any_time_in_any_order(walls: list[float]) -> None:
    for wall in walls:  # the last day asked for is kept: a later time of another day must not get it
        assert utc_day(wall) == datetime.fromtimestamp(wall, UTC).date().isoformat()
        assert (
            utc_day(math.nextafter(wall, -math.inf))
            == datetime.fromtimestamp(math.nextafter(wall, -math.inf), UTC).date().isoformat()
        )
