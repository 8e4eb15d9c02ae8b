"""Table Storage access: one async client per table, identity-based in Azure, a connection string locally.

The SDK's own retries are off: callers run in the background with their own backoff, and a request
must never wait on storage.
"""

from __future__ import annotations

import contextlib
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient

from shared.config import TableSettings

USAGE_TABLE = "gatewayusage"
HEALTH_TABLE = "gatewayhealth"
AFFINITY_TABLE = "gatewayaffinity"
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
