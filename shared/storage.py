"""Table Storage access: one async client per table, identity-based in Azure, a connection string locally.

The SDK's own retries are off: callers run in the background with their own backoff, and a request
must never wait on storage.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any
from urllib.parse import quote

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import EdmType, EntityProperty
from azure.data.tables.aio import TableClient

from shared.config import TableSettings

USAGE_TABLE = "gatewayusage"
HEALTH_TABLE = "gatewayhealth"
AFFINITY_TABLE = "gatewayaffinity"
BATCH_LIMIT = 100  # entities in one entity group transaction
_TIMEOUTS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 0}


def table_client(settings: TableSettings, name: str, credential: AsyncTokenCredential | None) -> TableClient:
    if settings.connection_string is not None:
        return TableClient.from_connection_string(settings.connection_string.reveal(), name, **_TIMEOUTS)
    if settings.endpoint is None or credential is None:
        raise ValueError("Table Storage needs a connection string, or an endpoint and a credential")
    return TableClient(settings.endpoint, name, credential=credential, **_TIMEOUTS)


async def ensure_table(client: TableClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        await client.create_table()


def safe_key(value: str) -> str:
    """PartitionKey/RowKey may not contain / \\ # ? or control characters."""
    return "".join("|" if ch in "/\\#?" or ord(ch) < 32 or 127 <= ord(ch) < 160 else ch for ch in value)


def quote_key(value: str) -> str:
    """A key part that is valid in PartitionKey/RowKey and never collides with another (percent-encoded, no '|')."""
    return quote(value, safe="")


def shard(value: str, shards: int) -> int:
    """A stable spread of names over partitions (the same in every process, unlike hash())."""
    return zlib.crc32(value.encode()) % shards


def int64(value: int) -> EntityProperty:
    """Counts that may pass 2^31: the SDK types a bare int as Int32 and refuses larger ones."""
    return EntityProperty(value, EdmType.INT64)


def as_int(value: Any) -> int:
    """An integer property as read back (Int64 comes as an EntityProperty)."""
    return int(value.value if isinstance(value, EntityProperty) else value)


def permanent(exc: BaseException) -> bool:
    """The service refused this request itself (malformed, too large): sending it again cannot succeed."""
    return isinstance(exc, HttpResponseError) and exc.status_code in (400, 413)
