"""Recent usage: slot arithmetic and chunks of bounded size."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.recent_usage import CHUNK_CHARS, MAX_CHUNKS, RecentUsage

DAY = "2026-12-01"


def test_add_keeps_recent_slots_and_only_days_of_the_same_day() -> None:
    total = RecentUsage(DAY)
    total.add(RecentUsage(DAY, {"h": {10: (5, 1), 3: (99, 9)}}, {("a", "d"): 7}), since_slot=4)
    total.add(RecentUsage(DAY, {"h": {10: (1, 1)}}, {("a", "d"): 3}), since_slot=4)
    total.add(RecentUsage("2026-11-30", {"h": {10: (1, 0)}}, {("a", "d"): 1000}), since_slot=4)
    assert total.windows == {"h": {10: (7, 2)}}
    assert total.days == {("a", "d"): 10}


def test_minus_never_goes_below_zero_and_ignores_another_days_usage() -> None:
    everyone = RecentUsage(DAY, {"h": {10: (100, 4), 11: (5, 1)}}, {("a", "d"): 50})
    mine = RecentUsage(DAY, {"h": {10: (30, 1), 11: (9, 2)}}, {("a", "d"): 60})
    assert everyone.minus(mine).windows == {"h": {10: (70, 3)}}
    assert everyone.minus(mine).days == {}
    assert everyone.minus(RecentUsage("2026-11-30", {}, {("a", "d"): 60})).days == {("a", "d"): 50}


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=300))
def test_chunks_are_bounded_and_round_trip(clients: int, name_length: int) -> None:
    usage = RecentUsage(
        DAY,
        {f"client:{'x' * name_length}{i}": {100: (2**40 + i, i)} for i in range(clients // 10)},
        {(f"{'é' * name_length}{i}", "gpt-4o"): 2**33 + i for i in range(clients)},
    )
    chunks, dropped = usage.chunks()
    assert len(chunks) <= MAX_CHUNKS and all(len(chunk) <= CHUNK_CHARS and chunk.isascii() for chunk in chunks)
    back = RecentUsage.from_chunks(DAY, chunks)
    items = len(back.days) + sum(len(slots) for slots in back.windows.values())
    assert items + dropped == len(usage.days) + len(usage.windows)
    if not dropped:
        assert back == usage
    assert all(isinstance(json.loads(chunk), list) for chunk in chunks)
