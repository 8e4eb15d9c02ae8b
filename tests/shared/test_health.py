"""HealthBoard (cooldowns, ejections, probes) on a ManualClock; Retry-After parsing; capacity 429s."""

from __future__ import annotations

import pytest

from shared.clock import ManualClock
from shared.health import HealthBoard, OutlierPolicy, ProbeResult, is_capacity_429, retry_after_seconds

H = "eastus/gpt-4o"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def board(clock: ManualClock) -> HealthBoard:
    return HealthBoard(clock, OutlierPolicy())  # 2 failures, 10 s doubling to 120 s, cooldown 5 s default, 300 s max


def probe(healthy: bool) -> ProbeResult:
    return ProbeResult(healthy, "ok" if healthy else "connect refused", 12.0, 1_700_000_000.0)


COST = 500


def test_an_unknown_host_is_available(board: HealthBoard) -> None:
    assert board.available(H)
    assert board.ready_in(H, COST) == 0.0
    assert not board.probe_down(H)


def test_a_cooldown_closes_the_host_to_metered_requests_for_what_it_asked(board: HealthBoard) -> None:
    assert board.cool_down(H, 7.5, "429 (request_limit)") == 7.5
    assert board.ready_in(H, 1) == 7.5
    assert board.ready_in(H, None) == 0.0  # files and reads use no window
    assert not board.available(H)


def test_cool_down_defaults_and_caps(board: HealthBoard) -> None:
    assert board.cool_down("a", None, "429 (capacity)") == 5.0
    assert board.ready_in("a", 1) == 5.0
    assert board.cool_down("b", 86_400, "429 (request_limit)") == 300.0  # a daily quota's Retry-After, capped
    assert board.ready_in("b", 1) == 300.0


def test_a_shorter_cool_down_does_not_cut_a_longer_one(board: HealthBoard) -> None:
    board.cool_down(H, 30, "429")
    board.cool_down(H, 2, "429")
    assert board.ready_in(H, 1) == 30


def test_a_token_block_holds_back_only_requests_at_least_that_large(board: HealthBoard, clock: ManualClock) -> None:
    assert board.block_tokens(H, COST, 8.0) == 8.0
    assert board.ready_in(H, COST) == 8.0
    assert board.ready_in(H, COST * 10) == 8.0
    assert board.ready_in(H, COST - 1) == 0.0
    assert board.available(H)  # an ordinary small request goes
    clock.advance(8.0)
    assert board.ready_in(H, COST) == 0.0
    assert board.describe(H)["token_blocks"] == []


def test_token_blocks_keep_the_strongest_constraint_per_size(board: HealthBoard, clock: ManualClock) -> None:
    board.block_tokens(H, 1000, 10.0)
    board.block_tokens(H, 400, 3.0)  # smaller requests blocked for less time
    assert board.ready_in(H, 500) == 3.0
    assert board.ready_in(H, 1000) == 10.0
    board.block_tokens(H, 2000, 5.0)  # covered by the 1000/10 s block: no new entry
    assert [b["min_cost"] for b in board.describe(H)["token_blocks"]] == [400, 1000]
    board.block_tokens(H, 300, 20.0)  # dominates both
    assert [b["min_cost"] for b in board.describe(H)["token_blocks"]] == [300]
    for cost in range(8):  # bounded, whatever a client sends
        board.block_tokens(H, 10 - cost, 30.0 + cost)
    assert len(board.describe(H)["token_blocks"]) <= 8


def test_ejection_after_consecutive_failures(board: HealthBoard, clock: ManualClock) -> None:
    assert not board.record_failure(H, "502")
    assert board.record_failure(H, "502")
    assert board.ready_in(H, None) == 10.0  # an ejection closes it to everything
    assert board.ready_in(H, 1) == 10.0
    clock.advance(10.0)
    assert board.available(H)


def test_a_success_between_failures_resets_the_count(board: HealthBoard) -> None:
    board.record_failure(H, "502")
    board.record_success(H)
    assert not board.record_failure(H, "502")
    assert board.available(H)


def test_ejections_in_a_row_double_up_to_the_max(board: HealthBoard, clock: ManualClock) -> None:
    durations = []
    for _ in range(6):
        board.record_failure(H, "timeout")
        board.record_failure(H, "timeout")
        durations.append(board.ready_in(H, None))
        clock.advance(durations[-1])
    assert durations == [10, 20, 40, 80, 120, 120]


def test_a_success_after_the_ejection_resets_the_doubling(board: HealthBoard, clock: ManualClock) -> None:
    board.eject(H, "502")
    clock.advance(10)
    board.eject(H, "502")
    assert board.ready_in(H, None) == 20
    clock.advance(20)
    board.record_success(H)
    board.eject(H, "502")
    assert board.ready_in(H, None) == 10


def test_an_explicit_ejection_length_is_used(board: HealthBoard) -> None:
    board.eject(H, "401 from upstream", seconds=42)
    assert board.ready_in(H, 1) == 42


def test_a_failing_probe_keeps_the_host_out_until_live_traffic_says_otherwise(
    board: HealthBoard, clock: ManualClock
) -> None:
    board.set_probe(H, probe(False))
    assert board.probe_down(H) and not board.available(H)
    clock.advance(10_000)
    board.set_probe(H, probe(False))  # the same verdict again (every few seconds, from the shared table)
    assert board.probe_down(H)
    assert board.record_success(H) is True  # the first contradiction is reported (and logged by the caller)
    assert not board.probe_down(H) and board.probe_disagrees(H) and board.available(H)
    assert board.record_success(H) is False  # once
    assert board.describe(H)["probe_disagrees"] is True


def test_a_live_success_before_the_probe_failed_does_not_outrank_it(board: HealthBoard, clock: ManualClock) -> None:
    board.record_success(H)
    clock.advance(1)
    board.set_probe(H, probe(False))
    assert board.probe_down(H)


def test_a_healthy_probe_clears_the_verdict_and_a_new_failure_counts_again(
    board: HealthBoard, clock: ManualClock
) -> None:
    board.set_probe(H, probe(False))
    board.record_success(H)
    board.set_probe(H, probe(True))
    assert not board.probe_disagrees(H)
    clock.advance(1)
    board.set_probe(H, probe(False))
    assert board.probe_down(H)  # the old live success predates this failure


def test_a_healthy_probe_after_an_unhealthy_one_ends_an_ejection_early(board: HealthBoard) -> None:
    board.eject(H, "502")
    board.set_probe(H, probe(False))
    board.set_probe(H, probe(True))
    assert board.available(H)


def test_a_healthy_probe_alone_does_not_end_an_ejection(board: HealthBoard) -> None:
    board.set_probe(H, probe(True))
    board.eject(H, "502")
    board.set_probe(H, probe(True))
    assert board.ready_in(H, None) == 10


def test_panic_mode_is_noted_once_per_change(board: HealthBoard, clock: ManualClock) -> None:
    assert board.note_panic("gpt-4o", True) is True
    assert board.note_panic("gpt-4o", True) is False
    clock.advance(3)
    assert board.panic() == {"gpt-4o": 3.0}
    assert board.note_panic("gpt-4o", False) is True
    assert board.panic() == {}
    assert board.note_panic("gpt-4o", False) is False


def test_describe_shows_state_without_secrets(board: HealthBoard) -> None:
    board.cool_down(H, 3, "429 (request_limit)")
    board.set_probe(H, probe(True))
    view = board.describe(H)
    assert view["available"] is False
    assert view["cooldown_seconds"] == 3
    assert view["cooldown_reason"] == "429 (request_limit)"
    assert view["probe"]["healthy"] is True
    assert view["probe_disagrees"] is False


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
        ({"retry-after": "8"}, 8.0),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # garbage is skipped
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


@pytest.mark.parametrize(
    ("body", "capacity"),
    [
        (b'{"error":{"code":"429","message":"The service is experiencing High Demand. Retry later."}}', True),
        (b'{"error":{"code":"429","message":"No capacity is available for this model."}}', True),
        (
            b'{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI'
            b" API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier."
            b' Please retry after 8 seconds."}}',
            False,
        ),
        (b"", False),
        (b"\xff\xfe not utf-8 overloaded", True),
    ],
)
def test_is_capacity_429(body: bytes, capacity: bool) -> None:
    assert is_capacity_429(body) is capacity
