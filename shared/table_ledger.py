"""The ledger every instance shares, in Table Storage.

Each instance keeps its own exact window (LocalLedger) and, in the background, writes its
cumulative totals per (10-second slot, host) into the partition of that slot's minute, all in one
batch (PartitionKey = minute, RowKey = host|instance|slot: one writer per row, no contention, and
idempotent upserts, so a retried write can neither lose nor double-count). Writes grow with
instances, never with request rate. Every second or so the current and previous minute's
partitions are read; other instances' slots inside the sliding window count against headroom.
Ten-second slots rather than whole minutes keep that view within a sixth of a minute of the truth
even when usage is bursty, where a minute counter weighted by overlap can be far off.

Storage down or slow: requests go on using local state; rows stay dirty and are written when it
is back; one warning while it lasts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.clock import Clock
from shared.ledger import HostUsage, LocalLedger, Reservation, TokenUsage, UsageKey, UsageRecord
from shared.storage import ensure_table, safe_key

log = logging.getLogger("gateway")
MINUTE = 60.0
SLOT = 10.0
SLOTS_PER_MINUTE = 6
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class _Row:
    """This instance's totals for one (slot, host)."""

    charged: float = 0.0  # what the upstream limiter counts (estimates, trued up)
    requests: int = 0
    served: int = 0  # real usage
    by_client: dict[str, int] = field(default_factory=dict)
    version: int = 0  # bumped on every change; a flush that raced a change leaves the row dirty
    flushed: int = -1

    @property
    def dirty(self) -> bool:
        return self.version != self.flushed


class TableLedger:
    """LocalLedger plus the shared rows; same interface, so the router cannot tell them apart."""

    def __init__(
        self,
        client: TableClient,
        clock: Clock,
        instance_id: str,
        *,
        window_seconds: float = 60.0,
        request_window_seconds: float = 10.0,
        expiry_margin_seconds: float = 0.1,
        flush_interval: float = 1.0,
        read_interval: float = 1.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._instance = safe_key(instance_id)
        self._flush_interval = flush_interval
        self._read_interval = read_interval
        self._request_window = request_window_seconds
        self._local = LocalLedger(
            clock,
            window_seconds=window_seconds,
            request_window_seconds=request_window_seconds,
            expiry_margin_seconds=expiry_margin_seconds,
            shared=self,
        )
        self._rows: dict[tuple[int, str], _Row] = {}
        self._others: dict[str, dict[int, tuple[float, float]]] = {}  # host -> slot -> (charged, requests)
        self._read_at = 0.0  # clock wall time of the last successful read
        self.writes = 0  # table operations, for /status and the tests that count them
        self.reads = 0
        self._failing = False

    # -- the Ledger interface ------------------------------------------------------------------
    def reserve(self, keys: tuple[str, ...], tokens: int, *, prompt: int, client: str, deployment: str) -> Reservation:
        reservation = self._local.reserve(keys, tokens, prompt=prompt, client=client, deployment=deployment)
        reservation.slot = self._slot()
        for key in keys:
            row = self._row(reservation.slot, key)
            row.charged += tokens
            row.requests += 1
        return reservation

    def settle(self, reservation: Reservation, used: TokenUsage | None) -> None:
        if reservation.state != "open":
            return
        self._local.settle(reservation, used)
        for key in reservation.keys:
            row = self._row(reservation.slot, key)
            if used is not None and used.total > reservation.tokens:
                row.charged += used.total - reservation.tokens
            served = reservation.tokens if used is None else used.total
            row.served += served
            row.by_client[reservation.client] = row.by_client.get(reservation.client, 0) + served

    def release(self, reservation: Reservation) -> None:
        if reservation.state != "open":
            return
        self._local.release(reservation)
        for key in reservation.keys:
            row = self._row(reservation.slot, key)
            row.charged -= reservation.tokens
            row.requests -= 1

    def observe(self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None) -> None:
        self._local.observe(reservation, remaining_tokens, remaining_requests)

    def surprised(self, key: str, requests: bool) -> None:
        self._local.surprised(key, requests)

    def headroom(self, key: str, tpm: int, rpm: int) -> tuple[float, float]:
        return self._local.headroom(key, tpm, rpm)

    def seconds_until(self, key: str, tokens: int, tpm: int, rpm: int) -> float:
        return self._local.seconds_until(key, tokens, tpm, rpm)

    def window_tokens(self, key: str) -> float:
        return self._local.window_tokens(key)

    def own_window_tokens(self, key: str) -> float:
        return self._local.own_window_tokens(key)

    def open_tokens(self, key: str) -> float:
        return self._local.open_tokens(key)

    def day_tokens(self, client: str, deployment: str | None = None) -> int:
        return self._local.day_tokens(client, deployment)

    def host_usage(self) -> Mapping[str, HostUsage]:
        return self._local.host_usage()

    def records(self) -> Mapping[UsageKey, UsageRecord]:
        return self._local.records()

    async def usage_report(self, first: date, last: date) -> Mapping[UsageKey, UsageRecord]:
        return await self._local.usage_report(first, last)

    # -- SharedView: what the other instances used ----------------------------------------------
    def window(self, key: str) -> tuple[float, float]:
        return self._others_now(key)

    def day(self, client: str, deployment: str | None) -> int:
        return 0

    # -- shared state ----------------------------------------------------------------------------
    def _slot(self) -> int:
        return math.floor(self._clock.wall() / SLOT)

    def _row(self, slot: int, host_key: str) -> _Row:
        row = self._rows.get((slot, host_key))
        if row is None:
            row = self._rows[(slot, host_key)] = _Row()
        row.version += 1
        return row

    def _others_now(self, host_key: str) -> tuple[float, float]:
        """Other instances' usage in the sliding windows: whole slots inside, the oldest one in part."""
        slots = self._others.get(host_key)
        if not slots:
            return 0.0, 0.0
        now = self._clock.wall() / SLOT
        current = math.floor(now)
        overlap = 1.0 - (now - current)  # of the slot a whole window back
        tokens = requests = 0.0
        recent = 0.0
        for slot, (charged, count) in slots.items():
            age = current - slot
            if age < SLOTS_PER_MINUTE:
                tokens += charged
                recent += charged if age <= 1 else 0.0
            elif age == SLOTS_PER_MINUTE:
                tokens += charged * overlap
            if age == 0:
                requests += count
            elif age == 1:
                requests += count * overlap
        # What they sent since their last flush and our last read is not in the rows yet: assume they
        # went on at their recent pace, so that two instances do not both fill the same room.
        lag = min(MINUTE, self._clock.wall() - self._read_at + self._flush_interval)
        pace = recent / (SLOT * (1.0 + (now - current)))
        return tokens + pace * lag, requests * self._request_window / SLOT

    async def run(self) -> None:
        """Flush and refresh forever, in the background; never raises."""
        await self._with_backoff(ensure_table, self._client)
        next_read = 0.0
        while True:
            await self._with_backoff(self.flush)
            if self._clock.now() >= next_read:
                await self._with_backoff(self.refresh)
                next_read = self._clock.now() + self._read_interval
            await self._clock.sleep(self._flush_interval)

    async def _with_backoff(self, operation: Any, *args: Any) -> None:
        delay = self._flush_interval
        while True:
            try:
                await operation(*args)
            except ResourceNotFoundError:
                await self._with_backoff(ensure_table, self._client)  # deleted under us: recreate, go on
                continue
            except Exception as exc:  # noqa: BLE001 - a background loop must outlive any one failure
                if not isinstance(exc, AzureError | OSError | TimeoutError):
                    log.error("table ledger: unexpected %s; retrying", type(exc).__name__)
                if not self._failing:
                    log.warning("table storage unavailable (%s); serving on local state", type(exc).__name__)
                    self._failing = True
                await self._clock.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            if self._failing:
                log.warning("table storage is back; shared usage resumed")
                self._failing = False
            return

    async def flush(self) -> None:
        """Write every dirty row, one batch per minute; forget rows older than the window."""
        current = self._slot()
        by_minute: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        versions: dict[tuple[int, str], int] = {}
        for (slot, host_key), row in self._rows.items():
            if row.dirty:
                minute = slot // SLOTS_PER_MINUTE
                by_minute.setdefault(minute, []).append(("upsert", self._entity(slot, host_key, row)))
                versions[(slot, host_key)] = row.version
        for _, operations in sorted(by_minute.items()):
            for start in range(0, len(operations), 100):  # a transaction holds at most 100 entities
                batch = operations[start : start + 100]
                await self._client.submit_transaction(batch)
                self.writes += 1
                for _, entity in batch:
                    key = (int(entity["slot"]), str(entity["host"]))
                    self._rows[key].flushed = versions[key]
        for key in [k for k, row in self._rows.items() if k[0] < current - SLOTS_PER_MINUTE and not row.dirty]:
            del self._rows[key]

    def _entity(self, slot: int, host_key: str, row: _Row) -> dict[str, Any]:
        return {
            "PartitionKey": _partition(slot // SLOTS_PER_MINUTE),
            "RowKey": f"{safe_key(host_key)}|{self._instance}|{slot}",
            "host": host_key,
            "slot": str(slot),  # beyond Int32: a plain int would need an explicit Int64 type
            "instance": self._instance,
            "charged": round(row.charged),
            "requests": row.requests,
            "served": row.served,
            "by_client": json.dumps(row.by_client, separators=(",", ":")),
        }

    async def refresh(self) -> None:
        """Read other instances' slots of the current and previous minute."""
        minute = self._slot() // SLOTS_PER_MINUTE
        others: dict[str, dict[int, tuple[float, float]]] = {}
        for m in (minute - 1, minute):
            query = self._client.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": _partition(m)},
                select=["host", "instance", "slot", "charged", "requests"],
            )
            self.reads += 1
            async for entity in query:
                if entity.get("instance") == self._instance:
                    continue  # our own usage is exact in the local windows
                slots = others.setdefault(str(entity["host"]), {})
                charged, requests = slots.get(int(entity["slot"]), (0.0, 0.0))
                slots[int(entity["slot"])] = (
                    charged + float(entity.get("charged", 0)),
                    requests + float(entity.get("requests", 0)),
                )
        self._others = others
        self._read_at = self._clock.wall()

    def describe(self) -> dict[str, Any]:
        return {"kind": "table", "writes": self.writes, "reads": self.reads, "storage_ok": not self._failing}

    async def close(self) -> None:
        await self._client.close()


def _partition(minute: int) -> str:
    return f"m{minute:012d}"
