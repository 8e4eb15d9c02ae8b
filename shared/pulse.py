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
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (PartitionKey, RowKey, etag) of its chunks


def operations(
    writer: str, seq: int, usage: RecentUsage, at: float, chunks: list[str], previous_chunks: int
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
        pulses.append(Pulse(writer, seq, usage, float(first["at"]), rows))
    return pulses


def _etag(entity: Mapping[str, Any]) -> str:
    metadata = getattr(entity, "metadata", {})
    return str(metadata.get("etag", ""))
