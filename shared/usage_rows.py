"""Usage records in the table: the conservation ledger behind /usage.

One row per (UTC day, writer, client, deployment) holds that writer's cumulative real usage: prompt,
completion and request counts as Int64, so no count overflows and a row's size does not depend on how
many clients there are. Only the writer writes its rows, with the absolute totals it holds (idempotent:
a retried or repeated write can neither lose nor double-count), and a writer is one process (pulse.py),
so a restarted instance starts rows of its own instead of overwriting earlier totals with smaller ones.
Rows are spread over USAGE_SHARDS partitions by writer; a report reads one day range of each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any
from urllib.parse import unquote

from shared.ledger import UsageKey, UsageRecord
from shared.storage import BATCH_LIMIT, as_int, int64, quote_key, shard

log = logging.getLogger("gateway")
USAGE_SHARDS = 16
MAX_REFUSALS = 3  # the service refused a row alone this often: it never will take it

Totals = tuple[int, int, int]  # (prompt, completion, requests)


def partition_of(writer: str) -> str:
    return f"u{shard(writer, USAGE_SHARDS):02d}"


def partitions() -> list[str]:
    return [f"u{index:02d}" for index in range(USAGE_SHARDS)]


def entity(writer: str, key: UsageKey, totals: Totals) -> dict[str, Any]:
    day, client, deployment = key
    return {
        "PartitionKey": partition_of(writer),
        "RowKey": f"{day}|{writer}|{quote_key(client)}|{quote_key(deployment)}",
        "prompt": int64(totals[0]),
        "completion": int64(totals[1]),
        "requests": int64(totals[2]),
    }


def read(row: Mapping[str, Any]) -> tuple[str, UsageKey, UsageRecord]:
    day, writer, client, deployment = str(row["RowKey"]).split("|")
    record = UsageRecord(as_int(row["prompt"]), as_int(row["completion"]), as_int(row["requests"]))
    return writer, (day, unquote(client), unquote(deployment)), record


def day_range(first: date, last: date) -> tuple[str, dict[str, str]]:
    """The query for one partition's rows of the days first..last."""
    return "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high", {
        "low": first.isoformat(),
        "high": (last + timedelta(days=1)).isoformat(),
    }


class UsageRows:
    """Which of this writer's records the table does not hold yet.

    A batch that fails for a passing reason (timeout, 503) is sent again at the next flush. One the
    service refuses outright is split: its rows go alone, and a row refused alone MAX_REFUSALS times is
    given up with an error in the log, so one bad row can never hold back every other.
    """

    def __init__(self, writer: str) -> None:
        self.writer = writer
        self._flushed: dict[UsageKey, Totals] = {}
        self._suspect: dict[UsageKey, int] = {}  # refused in a batch (0) or alone (count)
        self.abandoned = 0

    def batches(self, records: Mapping[UsageKey, UsageRecord]) -> list[list[tuple[UsageKey, Totals]]]:
        together: list[tuple[UsageKey, Totals]] = []
        alone: list[list[tuple[UsageKey, Totals]]] = []
        for key, record in records.items():
            totals = (record.prompt, record.completion, record.requests)
            if self._flushed.get(key) == totals:
                continue
            if key in self._suspect:
                alone.append([(key, totals)])
            else:
                together.append((key, totals))
        return [together[i : i + BATCH_LIMIT] for i in range(0, len(together), BATCH_LIMIT)] + alone

    def pending(self, records: Mapping[UsageKey, UsageRecord]) -> int:
        return sum(len(batch) for batch in self.batches(records))

    def written(self, batch: list[tuple[UsageKey, Totals]]) -> None:
        for key, totals in batch:
            self._flushed[key] = totals
            self._suspect.pop(key, None)

    def refused(self, batch: list[tuple[UsageKey, Totals]], reason: str) -> None:
        if len(batch) > 1:
            for key, _ in batch:
                self._suspect.setdefault(key, 0)
            return
        key = batch[0][0]
        self._suspect[key] = self._suspect.get(key, 0) + 1
        if self._suspect[key] >= MAX_REFUSALS:
            log.error("usage row %s refused %d times (%s); giving it up", key, MAX_REFUSALS, reason)
            self.written(batch)
            self.abandoned += 1
