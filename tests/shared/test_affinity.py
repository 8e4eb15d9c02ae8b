"""Affinity stores: the in-memory LRU with expiry and owner index; the table store written behind the response,
read through a cache with a bounded miss path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from shared.affinity import AffinityUnavailable, Home, MemoryAffinityStore, TableAffinityStore
from shared.clock import ManualClock

EAST, WEST = Home("eastus/gpt-4o", "app-a"), Home("westus/gpt-4o", "app-a")


async def test_memory_store_expires_records() -> None:
    clock = ManualClock()
    store = MemoryAffinityStore(clock)
    store.put("response:a", EAST, ttl=10.0)
    clock.advance(9.9)
    assert await store.get("response:a") == EAST
    clock.advance(0.1)
    assert await store.get("response:a") is None


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryAffinityStore(ManualClock(), max_entries=2)
    store.put("file:a", Home("h1"), 60)
    store.put("file:b", Home("h2"), 60)
    assert await store.get("file:a") == Home("h1")  # now b is the least recently used
    store.put("file:c", Home("h3"), 60)
    assert await store.get("file:b") is None
    assert (await store.get("file:a"), await store.get("file:c")) == (Home("h1"), Home("h3"))


async def test_the_owner_index_lists_what_each_owner_created() -> None:
    clock = ManualClock()
    store = MemoryAffinityStore(clock)
    store.put("file:f1", EAST, 60)
    store.put("file:f2", Home("westus/gpt-4o", "app-b"), 60)
    store.put("batch:b1", EAST, 60)
    store.put("file:f3", Home("eastus/gpt-4o"), 60)  # owner unknown: nobody's
    store.put("session:app-a:s1", EAST, 60)  # sessions are not objects
    assert await store.owned("app-a", "file") == {"f1"}
    assert await store.owned("app-b", "file") == {"f2"}
    store.forget("file:f1", EAST)
    assert await store.owned("app-a", "file") == set()
    assert await store.owned("app-a", "batch") == {"b1"}
    clock.advance(61)
    assert await store.owned("app-a", "batch") == set()
    assert await store.sweep() == 3


class Entity(dict[str, Any]):
    """A row as the SDK returns it: its properties, and its ETag in `metadata`."""

    def __init__(self, properties: dict[str, Any], etag: str) -> None:
        super().__init__(properties)
        self.metadata = {"etag": etag}


class FakeTable:
    """The TableClient calls the store makes, over a dict; `down` fails every call, `hang` never answers."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Entity] = {}
        self.versions = 0
        self.reads = 0
        self.down = False
        self.hang = False
        self.refuse: set[str] = set()  # RowKeys the service answers 400 for

    async def create_table(self) -> None:
        await self._check()

    async def get_entity(self, partition_key: str, row_key: str) -> dict[str, Any]:
        await self._check()
        self.reads += 1
        try:
            return self.rows[(partition_key, row_key)]
        except KeyError:
            raise ResourceNotFoundError("no such entity") from None

    async def upsert_entity(self, entity: dict[str, Any]) -> None:
        await self._check()
        if entity["RowKey"] in self.refuse:
            error = HttpResponseError("PropertyValueTooLarge")
            error.status_code = 400
            raise error
        self.versions += 1
        self.rows[(entity["PartitionKey"], entity["RowKey"])] = Entity(entity, f"v{self.versions}")

    async def delete_entity(self, partition_key: str, row_key: str, **condition: Any) -> None:
        await self._check()
        row = self.rows.get((partition_key, row_key))
        if row is not None and "etag" in condition and row.metadata["etag"] != condition["etag"]:
            error = HttpResponseError("UpdateConditionNotSatisfied")
            error.status_code = 412
            raise error
        self.rows.pop((partition_key, row_key), None)

    def query_entities(self, query_filter: str, *, parameters: dict[str, Any], **options: Any) -> AsyncIterator[Any]:
        async def rows() -> AsyncIterator[dict[str, Any]]:
            await self._check()
            for (partition, _), entity in list(self.rows.items()):
                in_partition = "pk" in parameters and partition == parameters["pk"]
                expired = "now" in parameters and float(entity["expires_at"]) < parameters["now"]
                if in_partition or expired:
                    yield entity

        return rows()

    async def close(self) -> None:
        return None

    async def _check(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ServiceRequestError("storage unreachable")


async def written(store: TableAffinityStore) -> None:
    runner = asyncio.create_task(store.run())
    for _ in range(50):
        await asyncio.sleep(0)
        if not store.describe()["pending_writes"]:
            break
    runner.cancel()


async def test_a_put_never_waits_and_is_written_behind() -> None:
    clock, table = ManualClock(1000.0), FakeTable()
    store = TableAffinityStore(table, clock, cache_seconds=5.0)  # type: ignore[arg-type]
    store.put("response:resp_1", EAST, ttl=100.0)  # not awaitable: nothing on the request path waits
    assert table.rows == {} and await store.get("response:resp_1") == EAST
    await written(store)
    record = next(row for (partition, _), row in table.rows.items() if len(partition) == 2)
    assert (record["RowKey"], record["host"], record["owner"], record["expires_at"]) == (
        "response:resp_1",
        EAST.host,
        "app-a",
        1100.0,
    )
    reader = TableAffinityStore(table, clock, cache_seconds=5.0)  # type: ignore[arg-type]
    assert await reader.get("response:resp_1") == EAST
    assert await reader.get("response:resp_1") == EAST
    assert table.reads == 1  # the second read came from the cache
    assert await reader.get("response:unknown") is None
    assert await reader.owned("app-a", "response") == {"resp_1"}
    clock.advance(100.0)
    assert await reader.get("response:resp_1") is None  # expired in the table too
    clock.advance(1.0)
    assert await reader.sweep() == 2  # the record and its index row
    assert table.rows == {}


class RewrittenWhileSwept(FakeTable):
    """Another instance rewrites each expired row right after the sweep has read it."""

    def query_entities(self, query_filter: str, *, parameters: dict[str, Any], **options: Any) -> AsyncIterator[Any]:
        rows = super().query_entities(query_filter, parameters=parameters, **options)

        async def rewritten() -> AsyncIterator[Any]:
            async for entity in rows:
                read = Entity(dict(entity), entity.metadata["etag"])
                await self.upsert_entity({**entity, "expires_at": parameters["now"] + 3600})
                yield read  # as it was read, before the rewrite

        return rewritten()


async def test_the_sweep_keeps_a_record_rewritten_after_it_was_read() -> None:
    clock, table = ManualClock(1000.0), RewrittenWhileSwept()
    store = TableAffinityStore(table, clock)  # type: ignore[arg-type]
    store.put("session:app-a:s1", EAST, ttl=10.0)
    await written(store)
    clock.advance(20.0)
    assert await store.sweep() == 0
    assert any(row["RowKey"] == "session:app-a:s1" for row in table.rows.values())


async def test_a_read_that_does_not_come_back_in_time_is_unknown_not_absent() -> None:
    clock, table = ManualClock(), FakeTable()
    store = TableAffinityStore(table, clock, read_timeout=0.01)  # type: ignore[arg-type]
    table.hang = True
    with pytest.raises(AffinityUnavailable):
        await store.get("response:resp_2")
    assert store.describe()["storage_ok"] is False


async def test_records_survive_an_outage_and_are_written_when_storage_returns() -> None:
    clock, table = ManualClock(), FakeTable()
    store = TableAffinityStore(table, clock)  # type: ignore[arg-type]
    table.down = True
    store.put("response:resp_1", EAST, ttl=3600.0)
    await written(store)
    clock.advance(3000.0)  # long past the cache time: this instance still routes by what it could not write
    assert await store.get("response:resp_1") == EAST
    with pytest.raises(AffinityUnavailable):  # unknown here and unreadable there: not the same as absent
        await store.get("response:resp_2")
    table.down = False
    await store._write_pending()
    assert any(row["RowKey"] == "response:resp_1" for row in table.rows.values())
    assert await store.get("response:resp_2") is None


async def test_a_row_the_service_refuses_does_not_hold_up_the_others() -> None:
    clock, table = ManualClock(), FakeTable()
    store = TableAffinityStore(table, clock)  # type: ignore[arg-type]
    table.refuse.add("file:bad")
    store.put("file:bad", Home("eastus/gpt-4o"), 60)
    store.put("file:good", Home("eastus/gpt-4o"), 60)
    for _ in range(6):
        await store._write_pending()
    assert {row["RowKey"] for row in table.rows.values()} == {"file:good"}
    assert store.describe()["pending_writes"] == 0


async def test_a_delete_forgets_the_record_and_its_index_row() -> None:
    clock, table = ManualClock(), FakeTable()
    store = TableAffinityStore(table, clock)  # type: ignore[arg-type]
    store.put("file:f1", EAST, 60)
    await store._write_pending()
    store.forget("file:f1", EAST)
    assert await store.owned("app-a", "file") == set()  # even before the delete is written
    await store._write_pending()
    assert table.rows == {}
