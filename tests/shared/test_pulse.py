"""Pulse rows: one version at a time, however the chunk count changes."""

from __future__ import annotations

from shared import pulse
from shared.recent_usage import RecentUsage

DAY = "2026-12-01"


def test_a_pulse_reads_back_from_its_rows_and_a_shrunk_one_leaves_no_stale_chunk() -> None:
    big = RecentUsage(DAY, {f"key-{i:05d}-{'x' * 100}": {7: (i, 1)} for i in range(400)})
    chunks, _ = big.chunks()
    assert len(chunks) > 1
    rows = {op[1]["RowKey"]: op[1] for op in pulse.operations("w.1", 1, big, 5.0, chunks, 0, final=False)}
    small = RecentUsage(DAY, {"h": {8: (5, 1)}})
    small_chunks, _ = small.chunks()
    rewrite = pulse.operations("w.1", 2, small, 6.0, small_chunks, len(chunks), final=True)
    assert len(rewrite) == len(chunks)  # the chunks no longer needed are emptied in the same transaction
    rows.update({op[1]["RowKey"]: op[1] for op in rewrite})
    (read,) = pulse.read(rows.values())
    assert (read.writer, read.seq, read.at, read.final) == ("w.1", 2, 6.0, True) and read.usage == small
    assert {op[1]["PartitionKey"] for op in rewrite} == {pulse.partition_of("w.1")}


def test_writers_spread_over_every_pulse_partition() -> None:
    used = {pulse.partition_of(f"instance-{i}.{i:08x}") for i in range(200)}
    assert used == set(pulse.partitions())
