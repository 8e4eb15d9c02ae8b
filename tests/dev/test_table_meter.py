"""The storage meter in front of Azurite: what it counts, and 503 Server Busy past its limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables.aio import TableClient

from dev.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from dev.table_meter import TableMeter, Throttle, classify


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as instance:
        yield instance


def through(meter_url: str, table: str) -> TableClient:
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint={meter_url}/{ACCOUNT};"
    )
    return TableClient.from_connection_string(connection, table, retry_total=0)


def test_classify_names_the_partition_of_queries_and_point_operations() -> None:
    query = classify("GET", "/acct/t()", "$filter=PartitionKey%20eq%20'p''01'", b"")
    assert (query.partition, query.writes) == ("p'01", False)
    point = classify("DELETE", "/acct/t(PartitionKey='p1',RowKey='r')", "", b"")
    assert (point.partition, point.writes, point.operations) == ("p1", True, 1)
    assert classify("POST", "/acct/Tables", "", b'{"TableName":"t"}').operations == 0


async def test_counts_transactions_and_entities_by_partition(azurite: Azurite) -> None:
    meter = TableMeter(f"http://127.0.0.1:{azurite.port}")
    url = await meter.start()
    try:
        async with through(url, "metered") as table:
            await table.create_table()
            await table.submit_transaction([("upsert", {"PartitionKey": "a", "RowKey": str(i)}) for i in range(7)])
            await table.upsert_entity({"PartitionKey": "b", "RowKey": "x"})
            rows = [r async for r in table.query_entities("PartitionKey eq @p", parameters={"p": "a"})]
        assert len(rows) == 7
        counts = meter.counts.report()
        assert counts["transactions"] == 4
        assert counts["entities_written"] == {"": 0, "a": 7, "b": 1}
        assert counts["entities_read"] == {"a": 7}
    finally:
        await meter.stop()


async def test_answers_server_busy_past_the_partition_limit(azurite: Azurite) -> None:
    meter = TableMeter(f"http://127.0.0.1:{azurite.port}", Throttle(partition_limit=10, account_limit=None))
    url = await meter.start()
    try:
        async with through(url, "throttled") as table:
            await table.create_table()
            await table.submit_transaction([("upsert", {"PartitionKey": "hot", "RowKey": str(i)}) for i in range(10)])
            with pytest.raises(HttpResponseError) as busy:
                await table.upsert_entity({"PartitionKey": "hot", "RowKey": "more"})
            assert busy.value.status_code == 503
            await table.upsert_entity({"PartitionKey": "cold", "RowKey": "fine"})  # other partitions go on
        assert meter.counts.throttled == 1
    finally:
        await meter.stop()
