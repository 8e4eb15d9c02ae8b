"""The peer view: the summary less our own pulse as the leader saw it, in sliding windows."""

from __future__ import annotations

from shared.clock import ManualClock
from shared.ledger import utc_day
from shared.peer_view import PeerView
from shared.recent_usage import RecentUsage, slot_of
from shared.summary import Summary

START = 1_000_000.0


def view(clock: ManualClock) -> PeerView:
    return PeerView(clock, window_seconds=60, request_window_seconds=10, flush_interval=1.0, skew=0.05)


def test_takes_out_the_own_pulse_committed_before_the_leaders_reads_began() -> None:
    clock = ManualClock(START)
    peers = view(clock)
    slot, day = slot_of(START), utc_day(START)
    peers.wrote(RecentUsage(day, {"h": {slot: (100, 1)}}, {("a", "d"): 100}))
    clock.advance(1.0)
    peers.wrote(RecentUsage(day, {"h": {slot: (300, 3)}}, {("a", "d"): 300}))  # after the leader began reading
    everyone = RecentUsage(day, {"h": {slot: (1_100, 6)}}, {("a", "d"): 1_100})
    peers.learn(Summary(everyone, read_start=START + 0.5))
    tokens, requests = peers.window("h")
    assert 1_000 < tokens < 1_200 and 5 < requests < 6  # 1,100 less the 100 the leader saw, plus others' pace since
    assert peers.day("a", "d") == 1_000 and peers.day("a", None) == 1_000


def test_usage_ages_out_of_the_window_and_the_day_but_a_missing_summary_keeps_the_pace() -> None:
    clock = ManualClock(START)
    peers = view(clock)
    everyone = RecentUsage(utc_day(START), {"h": {slot_of(START): (600, 6)}}, {("a", "d"): 600})
    peers.learn(Summary(everyone, read_start=START))
    assert peers.window("h")[0] >= 600
    clock.advance(71)
    # No newer summary (storage away): the others are taken to go on at their last pace, a window's worth.
    rate = 600 / (10 * (1 + (START / 10) % 1))
    assert peers.window("h")[0] == rate * 60
    # A newer summary without them: they stopped.
    peers.learn(Summary(RecentUsage(utc_day(clock.wall())), read_start=clock.wall()))
    assert peers.window("h") == (0.0, 0.0)
    clock.advance(86_400)
    assert peers.day("a", None) == 0


def test_a_leader_takes_out_exactly_the_pulse_it_summed() -> None:
    clock = ManualClock(START)
    peers = view(clock)
    day, slot = utc_day(START), slot_of(START)
    mine = RecentUsage(day, {"h": {slot - 3: (400, 4)}})
    peers.wrote(mine)  # committed at the very moment the reads began: by time alone it is ambiguous
    peers.learn(Summary(RecentUsage(day, {"h": {slot - 3: (1_000, 10)}}), read_start=START), seen=mine)
    assert peers.window("h")[0] == 600
