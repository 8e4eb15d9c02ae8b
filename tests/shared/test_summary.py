"""The summary: pulses summed inside the window, finished pulses found, rows read back."""

from __future__ import annotations

from shared import summary
from shared.lease import Lease
from shared.pulse import CARRY_WINDOWS, Pulse
from shared.recent_usage import SLOTS_KEPT, RecentUsage, slot_of
from shared.summary import Summary

DAY, YESTERDAY = "2026-12-01", "2026-11-30"
WALL = 10_005.0  # half way through slot 1000
TIMES = {"stale_after": 3.0, "window": 60.0, "request_window": 10.0}


def test_aggregate_sums_window_slots_and_todays_days() -> None:
    current = slot_of(WALL)
    pulses = [
        Pulse(
            "a.1", 3, RecentUsage(DAY, {"h": {current: (10, 1), current - SLOTS_KEPT: (999, 9)}}, {("c", "d"): 5}), WALL
        ),
        Pulse(
            "b.1", 1, RecentUsage(DAY, {"h": {current: (20, 2)}, "client:c": {current: (20, 2)}}, {("c", "d"): 7}), WALL
        ),
        Pulse("c.1", 1, RecentUsage(YESTERDAY, {"h": {current - 1: (1, 1)}}, {("c", "d"): 100}), WALL),
    ]
    total = summary.aggregate(pulses, DAY, WALL, **TIMES)[0]
    assert total.windows == {"h": {current: (30, 3), current - 1: (1, 1)}, "client:c": {current: (20, 2)}}
    assert total.days == {("c", "d"): 12}
    # Only yesterday's pulse with nothing in the window is finished; a gone writer of today still counts.
    old = Pulse("d.1", 1, RecentUsage(YESTERDAY, {"h": {current - SLOTS_KEPT: (1, 1)}}), WALL - 100)
    assert summary.finished([*pulses, old], DAY, current) == [old]


def test_a_pulse_its_writer_stopped_refreshing_is_carried_forward_unless_it_closed() -> None:
    current = slot_of(WALL)
    usage = RecentUsage(DAY, {"h": {current - 1: (3_000, 30)}})
    (fresh, _) = summary.aggregate([Pulse("a.1", 1, usage, WALL - 2.5)], DAY, WALL, **TIMES)
    assert fresh.windows == usage.windows  # fresh enough: readers add the flush interval's pace themselves
    (stale, _) = summary.aggregate([Pulse("a.1", 1, usage, WALL - 11)], DAY, WALL, **TIMES)
    # Its windows are taken to stay as full as when it wrote: the token window still holds all of it; the
    # request window held its 30 then, and holds half of them now.
    assert stale.windows["h"][current] == (0, 15)
    (crashed, _) = summary.aggregate([Pulse("a.1", 1, usage, WALL - 60 * CARRY_WINDOWS - 1)], DAY, WALL, **TIMES)
    assert current not in crashed.windows["h"]  # cut off that long: taken for gone
    (closed, _) = summary.aggregate([Pulse("a.1", 1, usage, WALL - 11, final=True)], DAY, WALL, **TIMES)
    assert closed.windows == usage.windows  # it said it was going: nothing to carry


def test_summary_rows_read_back_with_the_lease_and_from_a_copy() -> None:
    usage = RecentUsage(DAY, {"h": {5: (1, 1)}}, {("c", "d"): 3})
    written = Summary(usage, read_start=123.5, seq=9, writers=4, leader="a.1", copies=2, lease_until=130.0)
    chunks, _ = usage.chunks()
    operations = summary.operations(written, chunks, 3, Lease("a.1", 100.0, "e"))
    assert operations[0][0] == "update" and len(operations) == 1 + 3  # lease, then chunks (old ones emptied)
    lease, read = summary.read([dict(op[1]) for op in operations])
    assert (lease.holder, lease.until, read) == ("a.1", 130.0, written)
    copy = summary.operations(written, chunks, 3, None, copy=1)
    assert {op[1]["PartitionKey"] for op in copy} == {summary.partition(1)} and len(copy) == 3  # no lease row
    lease, read = summary.read([dict(op[1]) for op in copy])
    assert (lease.holder, lease.until, lease.etag, read) == ("a.1", 130.0, None, written)


def test_copies_grow_with_the_writers_that_read_them() -> None:
    assert [summary.copies_for(n) for n in (0, 1, 250, 251, 1000)] == [1, 1, 1, 2, 4]
