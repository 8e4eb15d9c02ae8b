"""HealthBoard (cooldowns, ejections, probes) on a ManualClock; Retry-After parsing; capacity 429s."""

from __future__ import annotations

import math

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


def test_an_unknown_host_is_available(board: HealthBoard) -> None:
    assert board.available(H)
    assert board.recovers_in(H) == 0.0


def test_cool_down_for_what_the_host_asked(board: HealthBoard, clock: ManualClock) -> None:
    assert board.cool_down(H, 7.5, "429 quota") == 7.5
    assert not board.available(H)
    assert board.recovers_in(H) == 7.5
    clock.advance(7.5)
    assert board.available(H)


def test_cool_down_defaults_and_caps(board: HealthBoard) -> None:
    assert board.cool_down("a", None, "429") == 5.0
    assert board.recovers_in("a") == 5.0
    assert board.cool_down("b", 86_400, "429") == 300.0
    assert board.recovers_in("b") == 300.0
    assert board.cool_down("c", -3, "429") == 0.0
    assert board.available("c")


def test_a_shorter_cool_down_does_not_cut_a_longer_one(board: HealthBoard) -> None:
    board.cool_down(H, 30, "429")
    board.cool_down(H, 2, "429")
    assert board.recovers_in(H) == 30


def test_ejection_after_consecutive_failures(board: HealthBoard, clock: ManualClock) -> None:
    assert board.record_failure(H, "502") is False
    assert board.available(H)
    assert board.record_failure(H, "timeout") is True
    assert board.recovers_in(H) == 10.0
    assert board.describe(H)["ejection_reason"] == "timeout"
    clock.advance(10)
    assert board.available(H)


def test_a_success_between_failures_resets_the_count(board: HealthBoard) -> None:
    board.record_failure(H, "502")
    board.record_success(H)
    assert board.record_failure(H, "502") is False
    assert board.available(H)


def test_ejections_in_a_row_double_up_to_the_max(board: HealthBoard, clock: ManualClock) -> None:
    durations = []
    for _ in range(6):
        board.record_failure(H, "502")
        board.record_failure(H, "502")
        durations.append(board.recovers_in(H))
        clock.advance(durations[-1])
    assert durations == [10, 20, 40, 80, 120, 120]


def test_a_success_after_the_ejection_resets_the_doubling(board: HealthBoard, clock: ManualClock) -> None:
    board.eject(H, "502")
    clock.advance(10)
    board.eject(H, "502")
    assert board.recovers_in(H) == 20
    clock.advance(20)
    board.record_success(H)
    board.eject(H, "502")
    assert board.recovers_in(H) == 10


def test_an_explicit_ejection_length_is_used(board: HealthBoard) -> None:
    board.eject(H, "401 from upstream", seconds=42)
    assert board.recovers_in(H) == 42


def test_an_unhealthy_probe_keeps_the_host_out_indefinitely(board: HealthBoard, clock: ManualClock) -> None:
    board.set_probe(H, probe(False))
    assert board.recovers_in(H) == math.inf
    clock.advance(10_000)
    assert not board.available(H)
    board.set_probe(H, probe(True))
    assert board.available(H)


def test_a_healthy_probe_after_an_unhealthy_one_ends_an_ejection_early(board: HealthBoard) -> None:
    board.eject(H, "502")
    board.set_probe(H, probe(False))
    board.set_probe(H, probe(True))
    assert board.available(H)


def test_a_healthy_probe_alone_does_not_end_an_ejection(board: HealthBoard) -> None:
    board.set_probe(H, probe(True))
    board.eject(H, "502")
    board.set_probe(H, probe(True))
    assert board.recovers_in(H) == 10


def test_describe_shows_state_without_secrets(board: HealthBoard) -> None:
    board.cool_down(H, 3, "429 quota")
    board.set_probe(H, probe(True))
    view = board.describe(H)
    assert view["available"] is False
    assert view["cooldown_seconds"] == 3
    assert view["cooldown_reason"] == "429 quota"
    assert view["probe"]["healthy"] is True


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
