"""Lists that span regions, the pure part: what a client may ask, and how regions' pages merge into one.

Objects of one kind live in many resources and a client wants one list. Each region's list is
ordered by `created_at` (newest first unless `order=asc`); the merge takes the best head among the
regions, ties going to the region listed first, so the merged order is total and the same on every
instance. A page ends at an item; `after=<that id>` continues from the item in its own region and
from the matching point in every other region (`resume`), which is what the SDKs' auto-pagination sends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import GatewayError
from shared.routes import valid_object_id

# OpenAI's page size when `limit` is absent, and the largest it allows, per collection.
DEFAULT_LIMITS = {"files": 10_000}
MAX_LIMITS = {"files": 10_000}
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
REGION_PAGE = 100  # what the gateway asks each region for at a time (files: up to the client's limit)

Item = Mapping[str, Any]


@dataclass(frozen=True)
class Query:
    limit: int
    after: str | None
    order: str  # "desc" | "asc"


def parse_query(collection: str, params: Sequence[tuple[str, str]]) -> Query:
    """The merged page asked for; 400 for a malformed `limit`, `after` or `order`, and for `before`."""
    values = dict(params)
    if "before" in values:
        raise GatewayError(
            400,
            "unsupported_parameter",
            f"'before' is not supported: the gateway merges {collection} from every region; page forward with 'after'.",
        )
    largest = MAX_LIMITS.get(collection, MAX_LIMIT)
    text = values.get("limit")
    limit = DEFAULT_LIMITS.get(collection, DEFAULT_LIMIT) if text is None else -1
    if text is not None and text.isdigit() and 1 <= int(text) <= largest:
        limit = int(text)
    if limit < 0:
        raise GatewayError(400, "invalid_limit", f"'limit' must be a whole number from 1 to {largest}.")
    order = values.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "invalid_order", "'order' must be 'asc' or 'desc'.")
    after = values.get("after")
    if after is not None and not valid_object_id(after):
        raise GatewayError(400, "invalid_after", "'after' must be the id of an item of a page you received.")
    return Query(limit, after, order)


def region_page_size(collection: str, query: Query) -> int:
    return min(query.limit + 1, MAX_LIMITS.get(collection, REGION_PAGE))


@dataclass
class Stream:
    """One region's side of the merge: its own cursor and what was fetched but not yet taken."""

    index: int  # the region's place in the merge: ties go to the lower one
    after: str | None = None  # the last item fetched from it (its own cursor); None: from the start
    buffer: deque[dict[str, Any]] = field(default_factory=deque)
    exhausted: bool = False

    def copy(self) -> Stream:
        return Stream(self.index, self.after, deque(self.buffer), self.exhausted)

    def take_page(self, page: Mapping[str, Any]) -> None:
        data = page["data"]
        self.buffer.extend(data)
        if data:
            self.after = str(data[-1].get("id"))
        self.exhausted = page.get("has_more") is not True or not data


def created_at(item: Item) -> int:
    value = item.get("created_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _key(item: Item, index: int, order: str) -> tuple[int, int]:
    created = created_at(item)
    return (-created if order == "desc" else created, index)


def best(streams: Sequence[Stream], order: str) -> Stream | None:
    """The stream whose head comes next; None when no stream holds an item (fetch more, or the end)."""
    ready = [s for s in streams if s.buffer]
    return min(ready, key=lambda s: _key(s.buffer[0], s.index, order), default=None)


def behind(item: Item, index: int, anchor: Item, anchor_index: int, order: str) -> bool:
    """Does `item` (of region `index`) come before the anchor in the merged order: was it already served?"""
    return _key(item, index, order) < _key(anchor, anchor_index, order)


def resume(stream: Stream, anchor: Item, anchor_index: int, order: str) -> bool:
    """Drop the items the merged list served before `anchor`; True once the stream's head comes after it."""
    while stream.buffer and behind(stream.buffer[0], stream.index, anchor, anchor_index, order):
        stream.buffer.popleft()
    return bool(stream.buffer) or stream.exhausted


def page(items: Sequence[Item], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(items),
        "first_id": items[0].get("id") if items else None,
        "last_id": items[-1].get("id") if items else None,
        "has_more": has_more,
    }


def parse_page(payload: Any) -> Mapping[str, Any] | None:
    """A region's answer if it is a list page, else None (the region failed)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    if not all(isinstance(item, dict) for item in payload["data"]):
        return None
    return payload
