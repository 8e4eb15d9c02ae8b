"""Who writes the summary: a lease in one row, taken and renewed only with an ETag condition.

The lease row sits in the summary's partition and is written in the same transaction as the summary,
so a summary is only ever written by the writer that holds the lease, and every renewal is a summary.
A holder renews at every summary; when it stops (gone, cut off from storage, closed) the lease runs
out and the first writer to see that takes it: the service lets exactly one conditional write win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

ROW = "lease"


@dataclass(frozen=True)
class Lease:
    holder: str = ""
    until: float = 0.0  # clock wall time
    etag: str | None = None  # of the row as last seen; None: there is no row yet

    def held_by(self, writer: str, wall: float) -> bool:
        return self.holder == writer and wall < self.until

    def open_to(self, writer: str, wall: float, wait: float) -> bool:
        """Whether `writer` may try to take the lease now: it ran out `wait` ago (at least the clock skew
        allowed between instances: the holder must see it run out first)."""
        return self.holder == writer or wall > self.until + wait


def operation(lease: Lease, partition: str, writer: str, until: float) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The write that takes or renews `lease` (as last seen) for `writer`; fails if anyone wrote it since."""
    entity = {"PartitionKey": partition, "RowKey": ROW, "holder": writer, "until": until}
    if lease.etag is None:
        return "create", entity, {}
    condition = {"mode": UpdateMode.REPLACE, "etag": lease.etag, "match_condition": MatchConditions.IfNotModified}
    return "update", entity, condition


def read(entity: Mapping[str, Any]) -> Lease:
    metadata = getattr(entity, "metadata", {})
    return Lease(str(entity.get("holder", "")), float(entity.get("until", 0.0)), metadata.get("etag"))
