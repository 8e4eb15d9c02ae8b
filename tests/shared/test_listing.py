"""listing: merging the first page of every region into one list, newest first."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import GatewayError
from shared.listing import merge, page_limit, parse_page


def page(*items: tuple[str, int], has_more: bool = False) -> dict[str, Any]:
    data = [{"id": i, "object": "file", "created_at": t} for i, t in items]
    return {"object": "list", "data": data, "has_more": has_more}


def test_pages_merge_newest_first_keeping_each_regions_order_within_a_second() -> None:
    east = page(("e2", 30), ("e1", 10))
    west = page(("w3", 30), ("w2", 20), ("w1", 5))
    merged = merge([east, west], 10)
    assert [item["id"] for item in merged["data"]] == ["e2", "w3", "w2", "e1", "w1"]
    assert (merged["object"], merged["first_id"], merged["last_id"], merged["has_more"]) == ("list", "e2", "w1", False)


def test_limit_truncates_and_has_more_says_so() -> None:
    merged = merge([page(("e1", 10)), page(("w2", 20), ("w1", 5))], 2)
    assert [item["id"] for item in merged["data"]] == ["w2", "e1"] and merged["has_more"]
    assert merge([page(("e1", 10), has_more=True), page()], 5)["has_more"]  # a region had more than its page
    assert merge([page(), page()], 5) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_the_limit_a_client_may_ask_for() -> None:
    assert page_limit("files", []) == 10_000
    assert page_limit("batches", [("api-version", "2024-10-21")]) == 20
    assert page_limit("batches", [("limit", "7")]) == 7
    for bad in ("0", "-1", "x", "10001", ""):
        with pytest.raises(GatewayError) as caught:
            page_limit("files", [("limit", bad)])
        assert caught.value.status == 400
    with pytest.raises(GatewayError) as caught:
        page_limit("files", [("after", "file-1")])
    assert caught.value.status == 400 and "'after' is not supported" in caught.value.message


def test_only_list_pages_are_pages() -> None:
    assert parse_page(page(("e1", 1))) is not None
    for bad in (None, [], {"data": None}, {"data": ["x"]}, {"error": {}}):
        assert parse_page(bad) is None
