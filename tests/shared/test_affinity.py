"""Affinity records: ids named by requests, the in-memory LRU with expiry, the table store with its cache."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError

from shared.affinity import (
    AffinityUnavailable,
    MemoryAffinityStore,
    TableAffinityStore,
    batch_output_files,
    created_object,
    named_object,
    object_key,
    referenced_id,
    session_key,
)
from shared.clock import ManualClock
from shared.errors import GatewayError
from shared.routes import match


async def test_memory_store_expires_records() -> None:
    clock = ManualClock()
    store = MemoryAffinityStore(clock)
    await store.put("response:a", "eastus/gpt-4o", ttl=10.0)
    clock.advance(9.9)
    assert await store.get("response:a") == "eastus/gpt-4o"
    clock.advance(0.1)
    assert await store.get("response:a") is None


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryAffinityStore(ManualClock(), max_entries=2)
    await store.put("a", "h1", 60)
    await store.put("b", "h2", 60)
    assert await store.get("a") == "h1"  # now b is the least recently used
    await store.put("c", "h3", 60)
    assert await store.get("b") is None
    assert (await store.get("a"), await store.get("c")) == ("h1", "h3")


async def test_a_later_put_moves_the_record() -> None:
    store = MemoryAffinityStore(ManualClock())
    await store.put("session:s", "eastus/gpt-4o", 60)
    await store.put("session:s", "westus/gpt-4o", 60)
    assert await store.get("session:s") == "westus/gpt-4o"


def test_keys_are_namespaced_and_validated() -> None:
    assert object_key("response", "resp_1") == "response:resp_1"
    assert object_key("file", "file-1") == "file:file-1"
    assert session_key({"x-session-id": "chat-42"}) == "session:chat-42"
    assert session_key({}) is None
    assert referenced_id({"previous_response_id": "resp_1"}, "previous_response_id") == "resp_1"
    assert referenced_id({"model": "gpt-4o"}, "previous_response_id") is None
    assert referenced_id(None, "input_file_id") is None
    for bad in ("", "a/b", "a b", "x" * 129, "resp:1"):
        with pytest.raises(GatewayError) as caught:
            session_key({"x-session-id": bad})
        assert caught.value.status == 400
        with pytest.raises(GatewayError):
            referenced_id({"previous_response_id": bad}, "previous_response_id")
    with pytest.raises(GatewayError) as caught:
        referenced_id({"input_file_id": 7}, "input_file_id")
    assert caught.value.code == "invalid_input_file_id"


def test_the_object_a_request_goes_home_to() -> None:
    assert named_object(match("GET", "/openai/v1/responses/resp_1"), None) == ("response", "resp_1")
    assert named_object(match("GET", "/openai/files/file-1/content"), None) == ("file", "file-1")
    continued = {"model": "gpt-4o", "previous_response_id": "resp_0"}
    assert named_object(match("POST", "/openai/v1/responses"), continued) == ("response", "resp_0")
    assert named_object(match("POST", "/openai/v1/responses"), {"model": "gpt-4o"}) is None
    assert named_object(match("POST", "/openai/files"), None) is None
    batch = {"input_file_id": "file-1", "endpoint": "/chat/completions", "completion_window": "24h"}
    assert named_object(match("POST", "/openai/batches"), batch) == ("file", "file-1")  # a batch follows its file
    assert named_object(match("POST", "/openai/batches/batch_1/cancel"), None) == ("batch", "batch_1")
    for bad in (None, {"endpoint": "/chat/completions"}, {"input_file_id": "../x"}):
        with pytest.raises(GatewayError) as caught:
            named_object(match("POST", "/openai/batches"), bad)
        assert caught.value.status == 400
    assert named_object(match("POST", "/openai/deployments/gpt-4o/chat/completions"), continued) is None


def test_the_files_a_batch_wrote() -> None:
    done = {"id": "batch_1", "object": "batch", "output_file_id": "file-out", "error_file_id": "file-err"}
    assert batch_output_files(done) == ["file-out", "file-err"]
    assert batch_output_files({**done, "error_file_id": None, "output_file_id": "../x"}) == []
    assert batch_output_files({**done, "object": "file"}) == []
    assert batch_output_files(None) == []


def test_created_object_from_a_body_or_a_stream_event() -> None:
    body = {"id": "resp_abc", "object": "response", "output": []}
    assert created_object(body) == ("response", "resp_abc")
    assert created_object({"type": "response.created", "response": body}) == ("response", "resp_abc")
    assert created_object({"id": "file-1", "object": "file", "bytes": 3}) == ("file", "file-1")
    assert created_object({"id": "batch_1", "object": "batch", "status": "validating"}) == ("batch", "batch_1")
    assert created_object({"type": "response.output_text.delta", "delta": "x"}) is None
    assert created_object({"id": "chatcmpl-1", "object": "chat.completion"}) is None
    assert created_object({"id": "../x", "object": "response"}) is None
    assert created_object([body]) is None


class FakeTable:
    """The three TableClient calls the store makes, over a dict; `down` makes every call fail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0
        self.down = False

    async def create_table(self) -> None:
        self._check()

    async def get_entity(self, partition_key: str, row_key: str) -> dict[str, Any]:
        self._check()
        self.reads += 1
        try:
            return self.rows[(partition_key, row_key)]
        except KeyError:
            raise ResourceNotFoundError("no such entity") from None

    async def upsert_entity(self, entity: dict[str, Any]) -> None:
        self._check()
        self.rows[(entity["PartitionKey"], entity["RowKey"])] = dict(entity)

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if self.down:
            raise ServiceRequestError("storage unreachable")


async def test_table_store_shares_records_and_caches_reads() -> None:
    clock, table = ManualClock(1000.0), FakeTable()
    writer = TableAffinityStore(table, clock, cache_seconds=5.0)  # type: ignore[arg-type]
    reader = TableAffinityStore(table, clock, cache_seconds=5.0)  # type: ignore[arg-type]
    await writer.put("response:resp_1", "eastus/gpt-4o", ttl=100.0)
    ((partition, row),) = table.rows
    assert len(partition) == 2 and row == "response:resp_1"
    assert table.rows[(partition, row)]["expires_at"] == 1100.0

    assert await reader.get("response:resp_1") == "eastus/gpt-4o"
    assert await reader.get("response:resp_1") == "eastus/gpt-4o"
    assert table.reads == 1  # the second read came from the cache
    assert await reader.get("response:unknown") is None

    clock.advance(100.0)
    assert await reader.get("response:resp_1") is None  # expired in the table too


async def test_table_store_outage() -> None:
    clock, table = ManualClock(), FakeTable()
    store = TableAffinityStore(table, clock)  # type: ignore[arg-type]
    table.down = True
    # A write that fails keeps the record in this instance for its whole life, not just the cache time.
    await store.put("response:resp_1", "eastus/gpt-4o", ttl=3600.0)
    clock.advance(3000.0)
    assert await store.get("response:resp_1") == "eastus/gpt-4o"
    with pytest.raises(AffinityUnavailable):  # unknown here and unreadable there: not the same as absent
        await store.get("response:resp_2")
    table.down = False
    assert await store.get("response:resp_2") is None
