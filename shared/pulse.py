"""A pulse: one writer's recent usage (its slots of every window key, its real tokens today), rewritten whole
by that writer when it changed, at most once per flush.

A writer is one process: the instance id plus an incarnation drawn at start, so that a restarted
instance never overwrites what its previous process wrote. Pulses are spread over PULSE_SHARDS
partitions by writer; a pulse is one or more chunk rows of one partition, written in one transaction,
so a reader sees all of one version or none of it. Only the leader reads pulses (see summary.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.recent_usage import RecentUsage
from shared.storage import as_int, int64, shard

CARRY_WINDOWS = 3  # how long a pulse its writer stopped refreshing without closing is carried forward
PULSE_SHARDS = 4  # the leader reads each once a cycle; 1,000 instances put 250 pulses/s on each
EMPTY = "[]"


def partition_of(writer: str) -> str:
    return partition(shard(writer, PULSE_SHARDS))


def partition(index: int) -> str:
    return f"p{index:02d}"


def partitions() -> list[str]:
    return [partition(index) for index in range(PULSE_SHARDS)]


@dataclass
class Pulse:
    writer: str
    seq: int
    usage: RecentUsage
    at: float  # clock wall time it was built: the usage since is not in it
    final: bool = False  # written by its writer's close(): nothing follows
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (PartitionKey, RowKey, etag) of its chunks

    def carried(
        self, wall: float, writers: int, *, stale_after: float, window: float, request_window: float
    ) -> dict[str, tuple[float, float]]:
        """What to count for this writer beyond its slots, per key, at `wall`.

        A writer rewrites its pulse every flush while anything of it is in the window, so a pulse older
        than `stale_after` (a few flushes) whose writer did not close means storage cuts it off, or it crashed (the
        two look alike). Such a writer is taken to keep its windows as full as they were when written, or
        at its fair part of the limit (a `writers`th), whichever is more, for CARRY_WINDOWS windows; and
        the writer itself keeps to exactly that (table_ledger.py). A writer that closed stops counting
        once its slots leave the window; so does one not heard of for longer (taken for gone)."""
        age = wall - self.at
        if self.final or not stale_after < age <= CARRY_WINDOWS * window:
            return {}
        carried = {}
        for key in self.usage.windows.keys() | self.usage.limits.keys():
            level = allowance(self.usage, key, self.at, writers, window, request_window)
            now = self.usage.in_window(key, wall, window, request_window)
            if level[0] > now[0] or level[1] > now[1]:
                carried[key] = (max(0.0, level[0] - now[0]), max(0.0, level[1] - now[1]))
        return carried


def allowance(
    usage: RecentUsage, key: str, at: float, writers: int, window: float, request_window: float
) -> tuple[float, float]:
    """How full a cut-off writer may keep its windows of `key`: as full as its pulse of `at` showed them,
    or its fair part of the limit, whichever is more."""
    said = usage.in_window(key, at, window, request_window)
    limit = usage.limits.get(key, (0.0, 0.0))
    share = max(1, writers)
    return max(said[0], limit[0] / share), max(said[1], limit[1] / share)


def operations(
    writer: str, seq: int, usage: RecentUsage, at: float, chunks: list[str], previous_chunks: int, final: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The upserts that replace a writer's pulse; chunks it no longer needs are emptied, not deleted
    (a delete of a row that is not there would fail the whole transaction)."""
    count = max(len(chunks), previous_chunks)
    return [
        (
            "upsert",
            {
                "PartitionKey": partition_of(writer),
                "RowKey": f"{writer}|{index:03d}",
                "seq": int64(seq),
                "n": len(chunks),
                "day": usage.day,
                "at": at,
                "final": final,
                "v": chunks[index] if index < len(chunks) else EMPTY,
            },
        )
        for index in range(count)
    ]


def read(entities: Iterable[Mapping[str, Any]]) -> list[Pulse]:
    """Pulses from their chunk rows: chunk 0 names the version; chunks of any other version are left out."""
    by_writer: dict[str, dict[int, Mapping[str, Any]]] = {}
    for entity in entities:
        writer, _, index = str(entity["RowKey"]).rpartition("|")
        by_writer.setdefault(writer, {})[int(index)] = entity
    pulses = []
    for writer, chunks in by_writer.items():
        first = chunks.get(0)
        if first is None:
            continue
        seq, count = as_int(first["seq"]), int(first["n"])
        parts = [str(c["v"]) for i, c in sorted(chunks.items()) if as_int(c["seq"]) == seq and i < count]
        rows = [(str(c["PartitionKey"]), str(c["RowKey"]), _etag(c)) for c in chunks.values()]
        usage = RecentUsage.from_chunks(str(first["day"]), parts)
        pulses.append(Pulse(writer, seq, usage, float(first["at"]), bool(first.get("final", False)), rows))
    return pulses


def _etag(entity: Mapping[str, Any]) -> str:
    metadata = getattr(entity, "metadata", {})
    return str(metadata.get("etag", ""))
