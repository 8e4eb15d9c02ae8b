"""Affinity: which host owns a stateful object, so that requests naming it go home.

A Response, a file or a batch exists only in the Azure OpenAI resource that created it; a conversation opted
into stickiness (x-session-id) prefers the host it started on. All are records "kind:id" -> host key
with an expiry matching the object's life. In memory for a single instance; in Table Storage when several
instances share the traffic, with reads cached (a record changes only when a session moves).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.clock import Clock
from shared.errors import GatewayError
from shared.routes import Route
from shared.storage import ensure_table, safe_key

log = logging.getLogger("gateway")

_DAY = 24 * 3600.0
# How long each kind of object lives: Azure keeps stored responses for 30 days; files and batches until deleted.
OBJECT_TTL = {"response": 30 * _DAY, "file": 365 * _DAY, "batch": 365 * _DAY}
SESSION_TTL = 3600.0
SESSION_HEADER = "x-session-id"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class AffinityUnavailable(Exception):
    """The shared store could not be read: the owner of an object is unknown, not absent."""


class AffinityStore(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def put(self, key: str, host_key: str, ttl: float) -> None: ...
    async def close(self) -> None: ...


def valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def object_key(kind: str, object_id: str) -> str:
    # Namespaced, so that no client-chosen session id can overwrite where an object lives.
    return f"{kind}:{object_id}"


def session_key(headers: Mapping[str, str]) -> str | None:
    """The opt-in session of a request, or None; a malformed one is the client's error."""
    session = headers.get(SESSION_HEADER)
    if session is None:
        return None
    if not valid_id(session):
        raise GatewayError(400, "invalid_session_id", f"{SESSION_HEADER} must match {_ID.pattern}.")
    return "session:" + session


def referenced_id(body: Mapping[str, Any] | None, field: str) -> str | None:
    """An object id the body names (previous_response_id, input_file_id); a malformed one is the client's error."""
    value = body.get(field) if body else None
    if value is None:
        return None
    if not isinstance(value, str) or not valid_id(value):
        raise GatewayError(400, f"invalid_{field}", f"{field} must match {_ID.pattern}.")
    return value


def named_object(route: Route, body: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(kind, id) of the object a request must go home to: the one its path names, or one its body continues."""
    if route.kind is not None and route.object_id is not None:
        return route.kind, route.object_id
    if route.operation == "responses":
        previous = referenced_id(body, "previous_response_id")
        return None if previous is None else ("response", previous)
    if route.operation == "batches" and route.creates:
        # A batch reads its input file where it runs, so it is created in the file's region.
        input_file = referenced_id(body, "input_file_id")
        if input_file is None:
            raise GatewayError(400, "missing_input_file_id", "A batch needs a JSON body with 'input_file_id'.")
        return "file", input_file
    return None


def batch_output_files(payload: Any) -> list[str]:
    """The files a batch wrote (results, errors): they live in the batch's region."""
    if not isinstance(payload, dict) or payload.get("object") != "batch":
        return []
    ids = (payload.get("output_file_id"), payload.get("error_file_id"))
    return [i for i in ids if isinstance(i, str) and valid_id(i)]


def created_object(payload: Any) -> tuple[str, str] | None:
    """(kind, id) of the object a successful answer created: the JSON body, or a stream's response.created event."""
    if not isinstance(payload, dict):
        return None
    if payload.get("type") == "response.created":
        payload = payload.get("response")
        if not isinstance(payload, dict):
            return None
    kind, object_id = payload.get("object"), payload.get("id")
    if kind not in OBJECT_TTL or not isinstance(object_id, str) or not valid_id(object_id):
        return None
    return kind, object_id


class MemoryAffinityStore:
    """A bounded LRU of records with expiry: this process's view, or the cache in front of a table."""

    def __init__(self, clock: Clock, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._records: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def get(self, key: str) -> str | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record[1] <= self._clock.now():
            del self._records[key]
            return None
        self._records.move_to_end(key)
        return record[0]

    async def put(self, key: str, host_key: str, ttl: float) -> None:
        self._records[key] = (host_key, self._clock.now() + ttl)
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    async def close(self) -> None:
        return None


class TableAffinityStore:
    """One row per record: PartitionKey = 2 hex digits of the key's hash (spread), RowKey = the key.

    A record this instance could not write is kept in its cache for the record's whole life, so the
    client that got the id can still be routed home by this instance while storage is away.
    """

    def __init__(
        self,
        client: TableClient,
        clock: Clock,
        *,
        cache_seconds: float = 60.0,
        timeout_seconds: float = 2.0,
        max_cached: int = 100_000,
    ) -> None:
        self._client = client
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds  # real seconds: a request must not wait on storage for long
        self._cache = MemoryAffinityStore(clock, max_cached)
        self._ready = False
        self._failing = False

    async def get(self, key: str) -> str | None:
        cached = await self._cache.get(key)
        if cached is not None:
            return cached
        try:
            entity = await asyncio.wait_for(self._read(key), self._timeout)
        except (TimeoutError, AzureError, OSError) as exc:
            self._failed("read", exc)
            raise AffinityUnavailable(key) from None
        self._failing = False
        if entity is None:
            return None
        left = float(entity["expires_at"]) - self._clock.wall()
        if left <= 0:
            return None
        host_key = str(entity["host"])
        await self._cache.put(key, host_key, min(left, self._cache_seconds))
        return host_key

    async def put(self, key: str, host_key: str, ttl: float) -> None:
        entity = {
            "PartitionKey": _partition(key),
            "RowKey": safe_key(key),
            "host": host_key,
            "expires_at": self._clock.wall() + ttl,
        }
        try:
            await asyncio.wait_for(self._write(entity), self._timeout)
        except (TimeoutError, AzureError, OSError) as exc:
            self._failed("write", exc)
            await self._cache.put(key, host_key, ttl)
            return
        self._failing = False
        await self._cache.put(key, host_key, min(ttl, self._cache_seconds))

    async def _read(self, key: str) -> Mapping[str, Any] | None:
        await self._ensure()
        try:
            entity: Mapping[str, Any] = await self._client.get_entity(_partition(key), safe_key(key))
        except ResourceNotFoundError:
            return None
        return entity

    async def _write(self, entity: Mapping[str, Any]) -> None:
        await self._ensure()
        await self._client.upsert_entity(entity)

    async def _ensure(self) -> None:
        if not self._ready:
            await ensure_table(self._client)
            self._ready = True

    def _failed(self, action: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning("affinity store: could not %s (%s); retrying on the next request", action, type(exc).__name__)
        self._failing = True

    async def close(self) -> None:
        await self._client.close()


def _partition(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:2]
