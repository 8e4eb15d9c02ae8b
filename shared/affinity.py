"""Affinity: where each stateful object lives and who owns it.

Records "kind:id" -> Home(host key, owner), with an expiry matching the object's life; sessions
"session:<owner>:<id>" -> Home(host). An owner index lists, per owner and kind, the ids it created,
for lists that show only the caller's objects. In memory for one instance; in Table Storage for
several, where nothing on the request path waits on storage for long: records are written behind
the response (retried until written, durably enough to outlive an outage), and reads come from a
cache, with a miss bounded by a short timeout (then the owner is unknown, not absent: discovery.py
asks the regions).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.clock import Clock
from shared.storage import ensure_table, safe_key

log = logging.getLogger("gateway")

READ_TIMEOUT_SECONDS = 0.05  # real seconds a request may wait for a record that is not cached
INDEX_TIMEOUT_SECONDS = 1.0  # a list (rare, costs no tokens) may wait this long for its owner's index
MAX_PENDING = 100_000  # records waiting to be written; past it the oldest are dropped, loudly
WRITE_ATTEMPTS = 5  # for an entity the service refuses (400): then it is dropped, the others go on
SWEEP_PAGES = 20  # expired rows deleted per sweep, in pages of 100: bounded work per timer run


@dataclass(frozen=True)
class Home:
    host: str  # the host key whose resource holds the object
    owner: str | None = None  # the client that created it; None: unknown (created outside the gateway)


class AffinityUnavailable(Exception):
    """The shared store could not be read in time: where an object lives is unknown, not absent."""


class AffinityStore(Protocol):
    async def get(self, key: str) -> Home | None: ...
    def put(self, key: str, home: Home, ttl: float) -> None: ...
    def forget(self, key: str, home: Home) -> None: ...
    async def owned(self, owner: str, kind: str) -> set[str]: ...
    async def sweep(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


def kind_of(key: str) -> str:
    return key.partition(":")[0]


def id_of(key: str) -> str:
    return key.rpartition(":")[2]


class MemoryAffinityStore:
    """A bounded LRU of records with expiry, and the owner index over them: this process's view, or the
    cache in front of a table."""

    def __init__(self, clock: Clock, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._records: OrderedDict[str, tuple[Home, float]] = OrderedDict()
        self._index: dict[tuple[str, str], set[str]] = {}  # (owner, kind) -> ids

    def cached(self, key: str) -> Home | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record[1] <= self._clock.now():
            self._drop(key)
            return None
        self._records.move_to_end(key)
        return record[0]

    async def get(self, key: str) -> Home | None:
        return self.cached(key)

    def put(self, key: str, home: Home, ttl: float) -> None:
        if key in self._records:
            self._drop(key)
        self._records[key] = (home, self._clock.now() + ttl)
        if home.owner is not None and not key.startswith("session:"):
            self._index.setdefault((home.owner, kind_of(key)), set()).add(id_of(key))
        while len(self._records) > self._max:
            self._drop(next(iter(self._records)))

    def forget(self, key: str, home: Home) -> None:
        if key in self._records:
            self._drop(key)

    def _drop(self, key: str) -> None:
        home, _ = self._records.pop(key)
        if home.owner is not None:
            ids = self._index.get((home.owner, kind_of(key)))
            if ids is not None:
                ids.discard(id_of(key))

    async def owned(self, owner: str, kind: str) -> set[str]:
        ids = list(self._index.get((owner, kind), ()))  # a copy: reading drops what has expired
        return {i for i in ids if self.cached(f"{kind}:{i}") is not None}

    async def sweep(self) -> int:
        now = self._clock.now()
        expired = [key for key, (_, until) in self._records.items() if until <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory", "records": len(self._records)}

    async def close(self) -> None:
        return None


@dataclass
class _Write:
    operation: str  # "upsert" | "delete"
    entity: dict[str, Any]
    key: str | None = None  # the record it writes, if it is one (not an index row)
    attempts: int = 0


class TableAffinityStore:
    """Records in Table Storage: PartitionKey = two hex digits of the key's hash (spread), RowKey = the key;
    the owner index in a partition per (owner, kind), RowKey = the id."""

    def __init__(
        self,
        client: TableClient,
        clock: Clock,
        *,
        cache_seconds: float = 60.0,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_cached: int = 100_000,
    ) -> None:
        self._client = client
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._read_timeout = read_timeout
        self._cache = MemoryAffinityStore(clock, max_cached)
        self._pending: OrderedDict[tuple[str, str], _Write] = OrderedDict()  # (partition, row) -> latest write
        self._homes: dict[str, Home] = {}  # records not yet written: this instance still routes by them
        self._wake = asyncio.Event()
        self._ready = False
        self._failing = False
        self.dropped = 0

    # -- reads: cache first, then a bounded read ---------------------------------------------------
    async def get(self, key: str) -> Home | None:
        home = self._homes.get(key) or self._cache.cached(key)
        if home is not None:
            return home
        try:
            entity = await asyncio.wait_for(self._read(key), self._read_timeout)
        except (TimeoutError, AzureError, OSError) as exc:
            self._failed("read", exc)
            raise AffinityUnavailable(key) from None
        if entity is None:
            return None
        left = float(entity["expires_at"]) - self._clock.wall()
        if left <= 0:
            return None
        owner = entity.get("owner")
        home = Home(str(entity["host"]), str(owner) if owner else None)
        self._cache.put(key, home, min(left, self._cache_seconds))
        return home

    async def _read(self, key: str) -> Mapping[str, Any] | None:
        await self._ensure()
        try:
            entity: Mapping[str, Any] = await self._client.get_entity(_partition(key), safe_key(key))
        except ResourceNotFoundError:
            return None
        return entity

    async def owned(self, owner: str, kind: str) -> set[str]:
        ids = {id_of(k) for k, home in self._homes.items() if home.owner == owner and kind_of(k) == kind}
        try:
            async with asyncio.timeout(INDEX_TIMEOUT_SECONDS):
                await self._ensure()
                now = self._clock.wall()
                query = self._client.query_entities(
                    "PartitionKey eq @pk",
                    parameters={"pk": _index_partition(owner, kind)},
                    select=["RowKey", "expires_at"],
                )
                async for entity in query:
                    if float(entity.get("expires_at", 0)) > now:
                        ids.add(str(entity["RowKey"]))
        except (TimeoutError, AzureError, OSError) as exc:
            self._failed("read", exc)
            raise AffinityUnavailable(f"{owner}/{kind}") from None
        partition = _index_partition(owner, kind)
        deleted = {row for (pk, row), write in self._pending.items() if pk == partition and write.operation == "delete"}
        return ids - deleted

    # -- writes: behind the response ------------------------------------------------------------------
    def put(self, key: str, home: Home, ttl: float) -> None:
        self._cache.put(key, home, min(ttl, self._cache_seconds))
        self._homes[key] = home
        expires = self._clock.wall() + ttl
        entity = {"PartitionKey": _partition(key), "RowKey": safe_key(key), "host": home.host, "expires_at": expires}
        if home.owner is not None:
            entity["owner"] = home.owner
            if not key.startswith("session:"):
                index = {
                    "PartitionKey": _index_partition(home.owner, kind_of(key)),
                    "RowKey": safe_key(id_of(key)),
                    "expires_at": expires,
                }
                self._enqueue(_Write("upsert", index))
        self._enqueue(_Write("upsert", entity, key))

    def forget(self, key: str, home: Home) -> None:
        self._cache.forget(key, home)
        self._homes.pop(key, None)
        self._enqueue(_Write("delete", {"PartitionKey": _partition(key), "RowKey": safe_key(key)}))
        if home.owner is not None:
            partition = _index_partition(home.owner, kind_of(key))
            self._enqueue(_Write("delete", {"PartitionKey": partition, "RowKey": safe_key(id_of(key))}))

    def _enqueue(self, write: _Write) -> None:
        slot = (write.entity["PartitionKey"], write.entity["RowKey"])
        self._pending.pop(slot, None)  # a later write of the same row supersedes an earlier one
        self._pending[slot] = write
        while len(self._pending) > MAX_PENDING:
            _, oldest = self._pending.popitem(last=False)
            if oldest.key is not None:
                self._homes.pop(oldest.key, None)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("affinity store: %d records dropped unwritten (storage down too long)", self.dropped)
        self._wake.set()

    async def run(self) -> None:
        """Write what is pending, at once and then on every new record; back off while storage fails."""
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            if await self._write_pending():
                delay = 0.5
                continue
            self._wake.set()  # something is left: try again after a pause
            await self._clock.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _write_pending(self) -> bool:
        """True when everything pending was written (or given up on)."""
        try:
            await self._ensure()
        except (AzureError, OSError) as exc:
            self._failed("write", exc)
            return False
        for slot, write in list(self._pending.items()):
            try:
                if write.operation == "upsert":
                    await self._client.upsert_entity(write.entity)
                else:  # deleting a row that is not there is no error
                    await self._client.delete_entity(write.entity["PartitionKey"], write.entity["RowKey"])
            except HttpResponseError as exc:
                if exc.status_code == 400:  # the service refuses this entity: others must not wait behind it
                    write.attempts += 1
                    if write.attempts >= WRITE_ATTEMPTS:
                        log.error("affinity store: giving up on row %s: %s", slot, type(exc).__name__)
                        self._settled(slot, write)
                    continue
                self._failed("write", exc)
                return False
            except (AzureError, OSError) as exc:
                self._failed("write", exc)
                return False
            self._settled(slot, write)
        if self._failing:
            log.warning("affinity store: table storage is back")
            self._failing = False
        return True

    def _settled(self, slot: tuple[str, str], write: _Write) -> None:
        if self._pending.get(slot) is not write:
            return  # superseded by a newer write of the same row while this one was in flight
        del self._pending[slot]
        if write.key is not None:
            self._homes.pop(write.key, None)  # in the table now (and in the cache)

    async def sweep(self) -> int:
        """Delete records and index rows that have expired (Table Storage has no TTL); bounded per call."""
        try:
            await self._ensure()
            now = self._clock.wall()
            query = self._client.query_entities(
                "expires_at lt @now", parameters={"now": now}, select=["PartitionKey", "RowKey"], results_per_page=100
            )
            removed = 0
            async for entity in query:
                try:
                    # Only as it was read: a record rewritten since (a session moved back, say) is kept.
                    await self._client.delete_entity(
                        entity["PartitionKey"],
                        entity["RowKey"],
                        etag=entity.metadata.get("etag"),
                        match_condition=MatchConditions.IfNotModified,
                    )
                except HttpResponseError as exc:
                    if exc.status_code not in (404, 412):
                        raise
                    continue
                removed += 1
                if removed >= SWEEP_PAGES * 100:
                    break
        except (AzureError, OSError) as exc:
            self._failed("sweep", exc)
            return 0
        return removed

    async def _ensure(self) -> None:
        if not self._ready:
            await ensure_table(self._client)
            self._ready = True

    def _failed(self, action: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "affinity store: could not %s (%s); serving from what this instance knows", action, type(exc).__name__
            )
        self._failing = True

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "table",
            "storage_ok": not self._failing,
            "pending_writes": len(self._pending),
            "dropped": self.dropped,
        }

    async def close(self) -> None:
        if self._pending:
            await self._write_pending()  # a graceful stop writes what it still holds
        await self._client.close()


def _partition(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:2]


def _index_partition(owner: str, kind: str) -> str:
    return "o" + hashlib.sha256(f"{owner}\n{kind}".encode()).hexdigest()[:24]
