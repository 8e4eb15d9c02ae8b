"""The generic object store and OpenAI's list paging."""

from __future__ import annotations

import pytest

from dev.sim.errors import AzureError
from dev.sim.store import Store, new_id, page

ITEMS = [{"id": f"o{i}"} for i in range(5)]  # oldest first, as the store keeps them


def ids(listing: dict[str, object]) -> list[str]:
    return [item["id"] for item in listing["data"]]  # type: ignore[attr-defined]


def test_a_page_is_newest_first_and_walks_with_after_and_before() -> None:
    whole = page(ITEMS, {})
    assert ids(whole) == ["o4", "o3", "o2", "o1", "o0"]
    assert (whole["object"], whole["first_id"], whole["last_id"], whole["has_more"]) == ("list", "o4", "o0", False)
    first = page(ITEMS, {"limit": "2"})
    assert (ids(first), first["has_more"]) == (["o4", "o3"], True)
    second = page(ITEMS, {"limit": "2", "after": "o3"})
    assert (ids(second), second["has_more"]) == (["o2", "o1"], True)
    assert (ids(page(ITEMS, {"limit": "2", "after": "o1"})), page(ITEMS, {"after": "o1"})["has_more"]) == (
        ["o0"],
        False,
    )
    previous = page(ITEMS, {"limit": "2", "before": "o1"})  # the two just before o1, newest first
    assert (ids(previous), previous["has_more"]) == (["o3", "o2"], True)
    assert ids(page(ITEMS, {"order": "asc", "limit": "2"})) == ["o0", "o1"]
    assert ids(page(ITEMS, {"order": "asc", "after": "o2"})) == ["o3", "o4"]
    empty = page(ITEMS, {"after": "unknown"})
    assert (empty["data"], empty["first_id"], empty["last_id"], empty["has_more"]) == ([], None, None, False)


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"order": "newest"}])
def test_bad_paging_parameters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(AzureError) as caught:
        page(ITEMS, query)
    assert caught.value.status == 400


def test_children_are_addressed_by_parent_and_removed_with_it() -> None:
    store = Store()
    store.add("vector_store", {"id": "vs_1"})
    store.add("vector_store", {"id": "vs_2"})
    for parent in ("vs_1", "vs_2"):  # one file in two vector stores: same id, two objects
        store.add("vector_store.file", {"id": "file-1", "in": parent}, parent=parent, payload=[parent])
    assert store.get("vector_store.file", "file-1") is None  # without its parent it is not found
    assert store.get("vector_store.file", "file-1", "vs_2") == {"id": "file-1", "in": "vs_2"}
    assert store.payload("vector_store.file", "file-1", list, "vs_1") == ["vs_1"]
    assert store.counts() == {"vector_store": 2, "vector_store.file": 2}

    store.remove("vector_store", "vs_1")
    assert store.items("vector_store.file", "vs_1") == []
    assert store.counts() == {"vector_store": 1, "vector_store.file": 1}
    assert store.created == {"vector_store": 2, "vector_store.file": 2}  # ever created, not current
    with pytest.raises(KeyError):
        store.payload("vector_store.file", "file-1", list, "vs_1")


def test_ids_carry_their_kinds_prefix() -> None:
    first, second = new_id("asst_"), new_id("asst_")
    assert first.startswith("asst_") and len(first) == len("asst_") + 32 and first != second
