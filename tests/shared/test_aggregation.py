"""Aggregator: lists merged from every region, only the caller's own objects, pages that continue with `after`
on any instance, and a whole list or none."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from shared.affinity import Home
from shared.config import Client, Secret
from shared.outgoing import BACKEND_HEADER
from shared.references import object_key
from tests.shared.rig import API_VERSION, CLIENT_KEY, EAST, HOSTS, UK, WEST, FakeResponse, Rig, Sent, call, make_rig

ADMIN_KEY = "gw-admin-key-0123456789"
CLIENTS = (Client("app", (Secret(CLIENT_KEY),)), Client("ops", (Secret(ADMIN_KEY),), admin=True))


class Regions:
    """Each host's files, listed newest first with limit/after/order like OpenAI, read one at a time by id."""

    def __init__(self, files: dict[str, list[tuple[str, int]]]) -> None:
        self.files = files  # host name -> [(id, created_at)]

    def __call__(self, sent: Sent) -> FakeResponse:
        parts = urlsplit(sent.url)
        query = dict(parse_qsl(parts.query))
        mine = [{"id": i, "object": "file", "created_at": t} for i, t in self.files[sent.host.name]]
        if "purpose" in query:  # the files whose id ends in 1 are the batch inputs
            mine = [f for f in mine if (f["id"].endswith("1")) == (query["purpose"] == "batch")]
        mine.sort(key=lambda f: f["created_at"], reverse=query.get("order", "desc") == "desc")
        name = parts.path.rsplit("/", 1)[-1]
        if name != "files":
            found = next((f for f in mine if f["id"] == name), None)
            if found is None:
                return FakeResponse(404, {}, b'{"error": {"code": "not_found"}}')
            return FakeResponse(200, {}, json.dumps(found).encode())
        if "after" in query:
            ids = [f["id"] for f in mine]
            mine = mine[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        limit = int(query.get("limit", "10000"))
        body = {"object": "list", "data": mine[:limit], "has_more": len(mine) > limit}
        return FakeResponse(200, {}, json.dumps(body).encode())


FILES = {
    "eastus": [("e1", 10), ("e2", 40), ("e3", 70)],
    "westus": [("w1", 20), ("w2", 50), ("w3", 80)],
    "uksouth": [("u1", 30), ("u2", 60), ("u3", 90)],
}
NEWEST_FIRST = ["u3", "w3", "e3", "u2", "w2", "e2", "u1", "w1", "e1"]
OWNER_OF = {"eastus": EAST, "westus": WEST, "uksouth": UK}


def rig_with(owned: set[str], owner: str = "app") -> Rig:
    rig = make_rig(Regions(FILES), clients=CLIENTS)
    for region, files in FILES.items():
        for file_id, _ in files:
            home = Home(OWNER_OF[region].key, owner if file_id in owned else "someone-else")
            rig.affinity.put(object_key("file", file_id), home, 3600)
    return rig


async def listed(rig: Rig, key: str = CLIENT_KEY, **params: str) -> dict[str, Any]:
    headers = [("api-key", key), ("content-type", "application/json")]
    query = [("api-version", API_VERSION), *params.items()]
    outgoing = await call(rig, "/openai/files", headers, b"", query, method="GET")
    assert outgoing.status == 200, outgoing.body
    assert outgoing.headers[BACKEND_HEADER] == "eastus,westus,uksouth"
    page: dict[str, Any] = json.loads(outgoing.body)
    return page


async def test_an_admin_sees_every_regions_objects_newest_first() -> None:
    rig = rig_with(set())
    page = await listed(rig, ADMIN_KEY)
    assert [f["id"] for f in page["data"]] == NEWEST_FIRST and not page["has_more"]
    assert (page["first_id"], page["last_id"]) == ("u3", "e1")


async def test_a_client_sees_only_its_own_and_has_more_stays_honest() -> None:
    rig = rig_with({"w3", "e2", "u1"})
    page = await listed(rig)
    assert [f["id"] for f in page["data"]] == ["w3", "e2", "u1"] and not page["has_more"]
    first = await listed(rig, limit="2")
    assert [f["id"] for f in first["data"]] == ["w3", "e2"] and first["has_more"]
    last = await listed(rig, limit="1", after="u1")
    assert last["data"] == [] and not last["has_more"]  # nothing of its own after u1, though others' files are


async def test_pages_follow_with_after_and_the_order_holds_across_pages() -> None:
    rig = rig_with(set())
    seen: list[str] = []
    after = None
    while True:
        page = await listed(rig, ADMIN_KEY, limit="2", **({"after": after} if after else {}))
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]  # what the SDKs' auto-pagination sends
    assert seen == NEWEST_FIRST
    ascending = []
    after = None
    for _ in range(9):
        page = await listed(rig, ADMIN_KEY, limit="4", order="asc", **({"after": after} if after else {}))
        ascending += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert ascending == list(reversed(NEWEST_FIRST))


async def test_a_page_of_a_filtered_list_does_not_continue_an_unfiltered_one() -> None:
    rig = rig_with(set())
    page = await listed(rig, ADMIN_KEY, limit="2")  # remembered: its regions' buffers, unfiltered
    assert [f["id"] for f in page["data"]] == ["u3", "w3"]
    rest = await listed(rig, ADMIN_KEY, limit="10", purpose="assistants", after="w3")
    assert [f["id"] for f in rest["data"]] == ["e3", "u2", "w2", "e2"]  # no batch input (ids ending in 1)


async def test_another_instance_continues_a_page_from_the_item_alone() -> None:
    first, second = rig_with(set()), rig_with(set())  # two instances, one store each, the same regions
    page = await listed(first, ADMIN_KEY, limit="4")
    assert [f["id"] for f in page["data"]] == NEWEST_FIRST[:4]
    rest = await listed(second, ADMIN_KEY, limit="10", after=page["data"][-1]["id"])
    assert [f["id"] for f in rest["data"]] == NEWEST_FIRST[4:]


async def test_after_an_item_the_client_may_not_see_is_refused() -> None:
    rig = rig_with({"w3"})
    headers = [("api-key", CLIENT_KEY), ("content-type", "application/json")]
    query = [("api-version", API_VERSION), ("after", "u3")]
    outgoing = await call(rig, "/openai/files", headers, b"", query, method="GET")
    assert outgoing.status == 400 and json.loads(outgoing.body)["error"]["code"] == "invalid_after"


async def test_a_region_that_cannot_list_fails_the_whole_list_naming_it() -> None:
    regions = Regions(FILES)
    for failure in (FakeResponse(500, {}, b"{}"), aiohttp.ServerDisconnectedError()):
        rig = make_rig(lambda sent, f=failure: f if sent.host == WEST else regions(sent), clients=CLIENTS)  # type: ignore[misc]
        headers = [("api-key", ADMIN_KEY), ("content-type", "application/json")]
        outgoing = await call(rig, "/openai/files", headers, b"", [("api-version", API_VERSION)], method="GET")
        assert outgoing.status == 503 and int(outgoing.headers["retry-after"]) >= 1
        error = json.loads(outgoing.body)["error"]
        assert (
            error["code"] == "RegionUnavailable" and "westus" in error["message"] and "eastus" not in error["message"]
        )


async def test_a_clients_mistake_in_a_list_passes_through_and_lists_cost_no_window() -> None:
    rig = make_rig(lambda sent: FakeResponse(400, {}, b'{"error": {"code": "invalid_purpose"}}'), clients=CLIENTS)
    rig.health.cool_down(EAST.key, 30, "429 (request_limit)")  # a list costs no tokens: asked all the same
    headers = [("api-key", ADMIN_KEY), ("content-type", "application/json")]
    outgoing = await call(rig, "/openai/files", headers, b"", [("purpose", "nope")], method="GET")
    assert outgoing.status == 400 and b"invalid_purpose" in outgoing.body
    assert {s.host for s in rig.session.sent} == set(HOSTS)
    assert all(rig.headroom(h) == (h.tpm, h.rpm / 6) for h in HOSTS)
