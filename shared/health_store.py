"""Where active probe results live so that every instance reads the same health.

The timer trigger on one instance writes one row per host; every instance reads them, cached for a
few seconds. In memory when no Table Storage is configured (a single instance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from azure.data.tables.aio import TableClient

from shared.health import ProbeResult
from shared.storage import ensure_table, safe_key
from shared.storage_health import StorageHealth

PARTITION = "health"


class HealthStore(Protocol):
    async def publish(self, results: Mapping[str, ProbeResult]) -> None: ...
    async def load(self) -> Mapping[str, ProbeResult]: ...
    async def close(self) -> None: ...


class MemoryHealthStore:
    def __init__(self) -> None:
        self._results: dict[str, ProbeResult] = {}

    async def publish(self, results: Mapping[str, ProbeResult]) -> None:
        self._results.update(results)

    async def load(self) -> Mapping[str, ProbeResult]:
        return dict(self._results)

    async def close(self) -> None:
        return None


class TableHealthStore:
    def __init__(self, client: TableClient, health: StorageHealth | None = None) -> None:
        self._client = client
        self._health = health
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            await ensure_table(self._client)
            self._ready = True

    async def publish(self, results: Mapping[str, ProbeResult]) -> None:
        if self._health is None:
            return await self._publish(results)
        async with self._health.call("health"):
            await self._publish(results)

    async def load(self) -> Mapping[str, ProbeResult]:
        if self._health is None:
            return await self._load()
        async with self._health.call("health"):
            return await self._load()

    async def _publish(self, results: Mapping[str, ProbeResult]) -> None:
        await self._ensure()
        operations = [
            (
                "upsert",
                {
                    "PartitionKey": PARTITION,
                    "RowKey": safe_key(host_key),
                    "host": host_key,
                    "healthy": result.healthy,
                    "reason": result.reason[:1024],
                    "latency_ms": float(result.latency_ms),
                    "checked_at": float(result.checked_at),
                    "consecutive_failures": result.consecutive_failures,
                },
            )
            for host_key, result in results.items()
        ]
        for start in range(0, len(operations), 100):
            await self._client.submit_transaction(operations[start : start + 100])

    async def _load(self) -> Mapping[str, ProbeResult]:
        await self._ensure()
        results: dict[str, ProbeResult] = {}
        async for entity in self._client.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
            results[str(entity["host"])] = ProbeResult(
                healthy=bool(entity["healthy"]),
                reason=str(entity.get("reason", "")),
                latency_ms=float(entity.get("latency_ms", 0.0)),
                checked_at=float(entity.get("checked_at", 0.0)),
                consecutive_failures=int(entity.get("consecutive_failures", 0)),
            )
        return results

    async def close(self) -> None:
        await self._client.close()
