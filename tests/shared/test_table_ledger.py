"""The shared ledger's bookkeeping against an in-memory stand-in for one table (Azurite runs in tests/e2e)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.clock import ManualClock
from shared.ledger import TokenUsage
from shared.table_ledger import TableLedger

HOST = "eastus/gpt-4o"
TPM, RPM = 100_000, 600


class FakeTable:
    """Upsert batches and partition queries, the two operations the ledger uses."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.failing = False
        self.batches = 0

    async def create_table(self) -> None:
        return None

    async def submit_transaction(self, operations: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.failing:
            raise ServiceRequestError("storage unreachable")
        self.batches += 1
        for kind, entity in operations:
            assert kind == "upsert"
            self.rows[(entity["PartitionKey"], entity["RowKey"])] = dict(entity)

    def query_entities(self, query_filter: str, *, parameters: dict[str, Any], select: list[str]) -> AsyncIterator[Any]:
        if self.failing:
            raise ServiceRequestError("storage unreachable")

        async def rows() -> AsyncIterator[dict[str, Any]]:
            for (partition, _), entity in list(self.rows.items()):
                if partition == parameters["pk"]:
                    yield {k: entity[k] for k in select if k in entity}

        return rows()

    async def close(self) -> None:
        return None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000_000.0)


def ledger(table: FakeTable, clock: ManualClock, instance: str) -> TableLedger:
    return TableLedger(table, clock, instance, expiry_margin_seconds=0.0)  # type: ignore[arg-type]


def served(table: FakeTable) -> int:
    return sum(int(row["served"]) for row in table.rows.values())


async def test_another_instances_usage_counts_against_headroom(clock: ManualClock) -> None:
    table = FakeTable()
    a, b = ledger(table, clock, "a"), ledger(table, clock, "b")
    a.reserve((HOST,), 30_000, prompt=0, client="app", deployment="gpt-4o")
    await a.flush()
    await b.refresh()
    free_tokens, _ = b.headroom(HOST, TPM, RPM)
    assert free_tokens <= TPM - 30_000
    assert b.window_tokens(HOST) >= 30_000 and b.own_window_tokens(HOST) == 0
    # A minute later that usage has left the sliding window for everybody.
    clock.advance(71)
    await b.refresh()
    assert b.headroom(HOST, TPM, RPM)[0] == TPM


async def test_own_rows_are_not_counted_twice(clock: ManualClock) -> None:
    table = FakeTable()
    a = ledger(table, clock, "a")
    a.reserve((HOST,), 10_000, prompt=0, client="app", deployment="gpt-4o")
    await a.flush()
    await a.refresh()
    assert a.headroom(HOST, TPM, RPM)[0] == TPM - 10_000


async def test_rows_carry_the_charge_and_the_real_usage_per_client(clock: ManualClock) -> None:
    table = FakeTable()
    a = ledger(table, clock, "a")
    kept = a.reserve((HOST,), 1_000, prompt=0, client="app-a", deployment="gpt-4o")
    a.settle(kept, TokenUsage(600, 0))  # Azure charged the estimate; 600 were used
    released = a.reserve((HOST,), 5_000, prompt=0, client="app-b", deployment="gpt-4o")
    a.release(released)  # a 429: never admitted
    await a.flush()
    (row,) = table.rows.values()
    assert (row["charged"], row["requests"], row["served"]) == (1_000, 1, 600)
    assert row["by_client"] == '{"app-a":600}'


async def test_writes_grow_with_flushes_not_with_requests(clock: ManualClock) -> None:
    table = FakeTable()
    a = ledger(table, clock, "a")
    for _ in range(500):
        a.settle(a.reserve((HOST,), 100, prompt=0, client="app", deployment="gpt-4o"), TokenUsage(100, 0))
    a.settle(a.reserve(("westus/gpt-4o",), 100, prompt=0, client="app", deployment="gpt-4o"), TokenUsage(100, 0))
    await a.flush()
    assert table.batches == 1  # every host's row of the minute in one transaction
    await a.flush()
    assert table.batches == 1  # nothing changed, nothing written


async def test_usage_counted_during_an_outage_is_written_when_storage_returns(clock: ManualClock) -> None:
    table = FakeTable()
    a = ledger(table, clock, "a")
    a.settle(a.reserve((HOST,), 100, prompt=0, client="app", deployment="gpt-4o"), TokenUsage(80, 0))
    await a.flush()
    table.failing = True
    for _ in range(10):
        a.settle(a.reserve((HOST,), 100, prompt=0, client="app", deployment="gpt-4o"), TokenUsage(90, 0))
        clock.advance(3)
        with pytest.raises(ServiceRequestError):
            await a.flush()
    assert served(table) == 80
    table.failing = False
    await a.flush()
    assert served(table) == 80 + 10 * 90
