"""listing: what a client may ask of a merged list, and the merge order of the regions' pages."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import GatewayError
from shared.listing import Query, Stream, behind, best, page, parse_page, parse_query, region_page_size, resume


def item(object_id: str, created: int) -> dict[str, Any]:
    return {"id": object_id, "object": "file", "created_at": created}


def stream(index: int, *items: dict[str, Any], exhausted: bool = True) -> Stream:
    s = Stream(index)
    s.take_page({"data": list(items), "has_more": not exhausted})
    return s


def test_the_query_a_client_may_send() -> None:
    assert parse_query("files", []) == Query(10_000, None, "desc")
    assert parse_query("batches", [("api-version", "2024-10-21")]) == Query(20, None, "desc")
    assert parse_query("vector_stores", [("limit", "7"), ("order", "asc"), ("after", "vs_1")]) == Query(
        7, "vs_1", "asc"
    )
    for params in ([("limit", "0")], [("limit", "101")], [("limit", "x")], [("order", "up")], [("after", "a/b")]):
        with pytest.raises(GatewayError) as caught:
            parse_query("batches", params)
        assert caught.value.status == 400
    with pytest.raises(GatewayError) as caught:
        parse_query("files", [("before", "file-1")])
    assert caught.value.code == "unsupported_parameter"
    assert region_page_size("files", Query(5000, None, "desc")) == 5001
    assert region_page_size("batches", Query(100, None, "desc")) == 100


def test_the_best_head_goes_first_and_ties_go_to_the_first_region() -> None:
    east = stream(0, item("e2", 30), item("e1", 10))
    west = stream(1, item("w3", 30), item("w2", 20), item("w1", 5))
    order = []
    while (chosen := best([east, west], "desc")) is not None:
        order.append(chosen.buffer.popleft()["id"])
    assert order == ["e2", "w3", "w2", "e1", "w1"]
    east, west = stream(0, item("e1", 10), item("e2", 30)), stream(1, item("w1", 5), item("w3", 30))
    order = []
    while (chosen := best([east, west], "asc")) is not None:
        order.append(chosen.buffer.popleft()["id"])
    assert order == ["w1", "e1", "e2", "w3"]


def test_a_stream_remembers_its_own_cursor_and_whether_it_is_done() -> None:
    s = Stream(0)
    s.take_page({"data": [item("a", 2), item("b", 1)], "has_more": True})
    assert (s.after, s.exhausted, len(s.buffer)) == ("b", False, 2)
    s.take_page({"data": [], "has_more": True})
    assert s.exhausted  # an empty page ends it whatever it says


def test_resuming_after_an_item_drops_what_was_already_served() -> None:
    anchor = item("w2", 20)  # the page ended at w2, of region 1
    assert behind(item("e3", 20), 0, anchor, 1, "desc")  # same second, lower region: served before w2
    assert not behind(item("u3", 20), 2, anchor, 1, "desc")  # same second, higher region: comes after
    east = stream(0, item("e9", 30), item("e8", 20), item("e7", 10))
    assert resume(east, anchor, 1, "desc")
    assert [i["id"] for i in east.buffer] == ["e7"]
    uk = stream(2, item("u9", 30), item("u8", 20), item("u7", 10))
    assert resume(uk, anchor, 1, "desc")
    assert [i["id"] for i in uk.buffer] == ["u8", "u7"]
    more = stream(0, item("e9", 30), exhausted=False)
    assert not resume(more, anchor, 1, "desc")  # everything fetched was served: fetch on


def test_a_page_and_what_counts_as_one() -> None:
    assert page([item("a", 2), item("b", 1)], True) == {
        "object": "list",
        "data": [item("a", 2), item("b", 1)],
        "first_id": "a",
        "last_id": "b",
        "has_more": True,
    }
    assert page([], False)["first_id"] is None
    assert parse_page({"data": [item("e1", 1)]}) is not None
    for bad in (None, [], {"data": None}, {"data": ["x"]}, {"error": {}}):
        assert parse_page(bad) is None
