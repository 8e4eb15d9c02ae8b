"""A region's stateful objects, one generic store for every kind, and OpenAI's list paging.

Objects live only in the region that created them, as in Azure: another region's store has never heard of
them. An object is addressed by (kind, parent id, id): a vector store file's id is its file's id, so the
parent (the vector store) is part of its address. Removing an object removes its children with it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from dev.sim.errors import bad_request

Json = dict[str, Any]
T = TypeVar("T")
Key = tuple[str, str | None, str]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: the kind's prefix ("asst_", "file-", ...) and 32 hex digits."""
    return prefix + uuid.uuid4().hex


class Store:
    def __init__(self) -> None:
        self._objects: dict[Key, Json] = {}
        self._payloads: dict[Key, object] = {}
        self.created: Counter[str] = Counter()  # ever created, per kind (reset() clears it)

    def add(self, kind: str, obj: Json, *, parent: str | None = None, payload: object = None) -> Json:
        key = (kind, parent, obj["id"])
        self._objects[key] = obj
        if payload is not None:
            self._payloads[key] = payload
        self.created[kind] += 1
        return obj

    def get(self, kind: str, object_id: str, parent: str | None = None) -> Json | None:
        return self._objects.get((kind, parent, object_id))

    def payload(self, kind: str, object_id: str, of: type[T], parent: str | None = None) -> T:
        """What an object carries besides its JSON (a file's bytes, a response's input items)."""
        payload = self._payloads.get((kind, parent, object_id))
        if not isinstance(payload, of):
            raise KeyError((kind, parent, object_id))
        return payload

    def remove(self, kind: str, object_id: str, parent: str | None = None) -> None:
        key = (kind, parent, object_id)
        self._objects.pop(key, None)
        self._payloads.pop(key, None)
        for child_kind, _, child_id in [k for k in self._objects if k[1] == object_id]:
            self.remove(child_kind, child_id, object_id)

    def items(self, kind: str, parent: str | None = None) -> list[Json]:
        """Oldest first."""
        return [obj for (k, p, _), obj in self._objects.items() if k == kind and p == parent]

    def counts(self) -> dict[str, int]:
        return dict(Counter(kind for kind, _, _ in self._objects))


def page(items: Sequence[Json], query: Mapping[str, str], *, default_limit: int = 20, max_limit: int = 100) -> Json:
    """One page of a list endpoint: newest first unless `order=asc`, `after` / `before` ids of another page."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid order {order!r}: expected 'asc' or 'desc'.")
    ordered = list(reversed(items)) if order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    limit = _limit(query.get("limit"), default_limit, max_limit)
    if "after" in query:
        ordered = ordered[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        data = ordered[:limit]
    elif "before" in query:
        ordered = ordered[: ids.index(query["before"])] if query["before"] in ids else []
        data = ordered[-limit:]
    else:
        data = ordered[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": len(ordered) > limit}


def _limit(text: str | None, default: int, maximum: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise bad_request(f"Invalid limit {text!r}: expected an integer from 1 to {maximum}.")
    return int(text)
