"""Lists that span regions: files and batches live in many resources, and a client wants one list.

Each resource is asked for its first page; the pages are merged newest first, as OpenAI orders them.
A cursor (`after`) names an object of one region only, so it cannot page a merged list: refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import GatewayError

# OpenAI's page size when `limit` is absent, per collection.
DEFAULT_LIMITS = {"files": 10_000, "batches": 20}
MAX_LIMIT = 10_000


def page_limit(collection: str, query: Sequence[tuple[str, str]]) -> int:
    """The merged page's size; 400 for a malformed `limit` and for any `after`."""
    params = dict(query)
    if "after" in params:
        raise GatewayError(
            400,
            "unsupported_parameter",
            f"'after' is not supported: the gateway merges {collection} from every region into one list, and a "
            "cursor names an object of one region only. Ask for a larger 'limit' instead.",
        )
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMITS[collection]
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise GatewayError(400, "invalid_limit", f"'limit' must be a whole number from 1 to {MAX_LIMIT}.")
    return int(text)


def merge(pages: Sequence[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """One list page from each region's first page: newest first, at most `limit` items."""
    items = [item for page in pages for item in page["data"]]
    # Stable sort: within one second, a region's own (newest first) order is kept.
    items.sort(key=lambda item: _created_at(item), reverse=True)
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": len(items) > limit or any(page.get("has_more") is True for page in pages),
    }


def parse_page(payload: Any) -> Mapping[str, Any] | None:
    """A region's answer if it is a list page, else None (the region failed)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    if not all(isinstance(item, dict) for item in payload["data"]):
        return None
    return payload


def _created_at(item: Mapping[str, Any]) -> int:
    value = item.get("created_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
