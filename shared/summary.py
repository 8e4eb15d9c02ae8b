"""The compacted summary: every writer's pulse summed, slot by slot and client by client.

The lease holder (lease.py) reads all pulses about once a second and writes their sum into one small
partition; every instance reads only that partition. So an instance's reads do not grow with the
number of instances: pulses are read once per second in all (by one writer), not once per reader.
The summary says when its pulse reads began: a reader takes out its own pulse as of that moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared import lease
from shared.lease import Lease
from shared.pulse import CARRY_WINDOWS, EMPTY, Pulse
from shared.recent_usage import SLOT, SLOTS_KEPT, RecentUsage, slot_of
from shared.storage import as_int, int64

PARTITION = "summary"  # copy 0, with the lease
READERS_PER_COPY = 250  # instances that read one copy: about 550 entities/s on its partition


def partition(copy: int) -> str:
    return PARTITION if copy == 0 else f"{PARTITION}{copy}"


def copies_for(writers: int) -> int:
    """How many partitions hold the summary, so that none is read by more than READERS_PER_COPY instances."""
    return max(1, math.ceil(writers / READERS_PER_COPY))


@dataclass
class Summary:
    usage: RecentUsage  # everyone's, the reader's own included
    read_start: float  # clock wall time the pulse reads began
    seq: int = 0
    writers: int = 0  # that count in the window now
    leader: str = ""
    copies: int = 1  # partitions it is written to (partition(0) .. partition(copies - 1))
    lease_until: float = 0.0  # the leader's lease as it wrote this: copies carry no lease row


def aggregate(
    pulses: Iterable[Pulse], day: str, wall: float, *, stale_after: float, window: float, request_window: float
) -> tuple[RecentUsage, int]:
    """Every pulse summed, each carried forward as far as it is stale (pulse.py); and how many writers
    count in the window now."""
    current = slot_of(wall)
    pulses = list(pulses)
    active = sum(_counts(pulse, wall, current, stale_after, window) for pulse in pulses)
    total = RecentUsage(day)
    for pulse in pulses:
        total.add(pulse.usage, since_slot=current - SLOTS_KEPT + 1)
        carried = pulse.carried(wall, active, stale_after=stale_after, window=window, request_window=request_window)
        for key, (tokens, requests) in carried.items():
            slots = total.windows.setdefault(key, {})
            old = slots.get(current, (0, 0))
            slots[current] = (old[0] + round(tokens), old[1] + round(requests))
    return total, active


def _counts(pulse: Pulse, wall: float, current: int, stale_after: float, window: float) -> bool:
    """Whether a writer counts among those sharing the limits now: used them within the window, or is
    cut off (not closed) and carried forward."""
    newest = pulse.usage.newest_slot
    in_window = newest is not None and newest >= current - round(window / SLOT)
    return in_window or (not pulse.final and stale_after < wall - pulse.at <= CARRY_WINDOWS * window)


def finished(pulses: Iterable[Pulse], day: str, current_slot: int) -> list[Pulse]:
    """Pulses that count for nothing any more: no slot inside the window and not of today
    (a gone writer's real usage today still counts against daily quotas until the day ends)."""
    oldest = current_slot - SLOTS_KEPT
    return [p for p in pulses if p.usage.day != day and (p.usage.newest_slot or oldest) <= oldest]


def operations(
    summary: Summary, chunks: list[str], previous_chunks: int, held: Lease | None, copy: int = 0
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """One transaction per copy: every chunk of the summary, and in copy 0 first the lease (taken or
    renewed, conditionally: `held` as last seen, to run until summary.lease_until)."""
    count = max(len(chunks), previous_chunks, 1)
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    if held is not None:
        rows.append(lease.operation(held, PARTITION, summary.leader, summary.lease_until))
    for index in range(count):
        entity: dict[str, Any] = {
            "PartitionKey": partition(copy),
            "RowKey": f"c{index:03d}",
            "seq": int64(summary.seq),
            "n": len(chunks),
            "day": summary.usage.day,
            "v": chunks[index] if index < len(chunks) else EMPTY,
        }
        if index == 0:
            entity.update(
                read_start=summary.read_start,
                writers=summary.writers,
                leader=summary.leader,
                copies=summary.copies,
                until=summary.lease_until,
            )
        rows.append(("upsert", entity, {}))
    return rows


def read(entities: Iterable[Mapping[str, Any]]) -> tuple[Lease, Summary | None]:
    """The lease and the summary from the rows of one copy (either may not exist yet). A copy other than
    the first has no lease row: its lease is as the summary says, without an ETag to take it by."""
    held: Lease | None = None
    chunks: dict[int, Mapping[str, Any]] = {}
    for entity in entities:
        if entity["RowKey"] == lease.ROW:
            held = lease.read(entity)
        elif str(entity["RowKey"]).startswith("c"):
            chunks[int(str(entity["RowKey"])[1:])] = entity
    first = chunks.get(0)
    if first is None:
        return held or Lease(), None
    seq = as_int(first["seq"])
    parts = [str(c["v"]) for i, c in sorted(chunks.items()) if i < int(first["n"]) and as_int(c["seq"]) == seq]
    usage = RecentUsage.from_chunks(str(first["day"]), parts)
    leader, until = str(first["leader"]), float(first.get("until", 0.0))
    found = Summary(
        usage, float(first["read_start"]), seq, int(first["writers"]), leader, int(first.get("copies", 1)), until
    )
    return held or Lease(leader, until), found
