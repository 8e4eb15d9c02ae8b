"""The table-driven collections: one spec gives create, list, get, update and delete on its surfaces."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from dev.sim.context import context
from dev.sim.parse import json_body
from dev.sim.router import Collection, Routes
from dev.sim.store import new_id
from dev.sim.surfaces import BOTH
from dev.simulator import SimDeployment, SimRegion
from shared.clock import ManualClock
from tests.dev.sim.conftest import AUTH, VERSION, get, post

Json = dict[str, Any]


async def _create_note(request: Any, parent: Json | None) -> Json:
    body = await json_body(request)
    note = {"id": new_id("note_"), "object": "note", "created_at": int(time.time()), "text": body.get("text")}
    return context(request).store.add(NOTES.kind, note)


async def _create_tag(request: Any, parent: Json | None) -> Json:
    assert parent is not None
    tag = {"id": new_id("tag_"), "object": "note.tag", "note_id": parent["id"]}
    return context(request).store.add(TAGS.kind, tag, parent=parent["id"])


NOTES = Collection("note", "note", "notes", "note_id", BOTH, create=_create_note, updates=("text",))
TAGS = Collection("note.tag", "tag", "tags", "tag_id", BOTH, parent=NOTES, create=_create_tag)


@pytest_asyncio.fixture
async def regions() -> AsyncIterator[list[str]]:
    started = []
    for name in ("eastus", "westus"):
        region = SimRegion(name, [SimDeployment("gpt-4o", 1000)], ManualClock(), ttft=0.0, per_token=0.0)
        routes = Routes(region.app)
        routes.collection(NOTES)
        routes.collection(TAGS)
        await region.start()
        started.append(region)
    yield [region.endpoint for region in started]
    for region in started:
        await region.stop()


@pytest.mark.asyncio
async def test_a_collection_has_crud_on_both_surfaces(regions: list[str], session: aiohttp.ClientSession) -> None:
    home, elsewhere = regions
    classic, v1 = f"{home}/openai/notes", f"{home}/openai/v1/notes"
    first = (await post(session, f"{classic}?api-version={VERSION}", {"text": "one"}))[2]
    second = (await post(session, v1, {"text": "two"}))[2]
    assert first["id"].startswith("note_") and first["text"] == "one"

    status, _, listing = await get(session, v1)
    assert status == 200 and [n["id"] for n in listing["data"]] == [second["id"], first["id"]]
    assert (await get(session, f"{classic}/{first['id']}?api-version={VERSION}"))[2] == first
    updated = (await post(session, f"{v1}/{first['id']}", {"text": "uno", "id": "ignored"}))[2]
    assert (updated["id"], updated["text"]) == (first["id"], "uno")  # only the listed fields change

    async with session.delete(f"{v1}/{first['id']}", headers=AUTH) as resp:
        assert await resp.json() == {"id": first["id"], "object": "note.deleted", "deleted": True}
    status, _, missing = await get(session, f"{v1}/{first['id']}")
    assert status == 404
    assert missing["error"] == {
        "code": "not_found",
        "message": f"No note found with id {first['id']!r}.",
        "type": "invalid_request_error",
        "param": None,
    }
    assert (await get(session, f"{elsewhere}/openai/v1/notes/{second['id']}"))[0] == 404
    assert (await get(session, classic))[2]["error"]["code"] == "MissingApiVersionParameter"


@pytest.mark.asyncio
async def test_children_need_their_parent_in_the_region(regions: list[str], session: aiohttp.ClientSession) -> None:
    home, elsewhere = regions
    note = (await post(session, f"{home}/openai/v1/notes", {}))[2]
    tag = (await post(session, f"{home}/openai/v1/notes/{note['id']}/tags", {}))[2]
    assert tag["note_id"] == note["id"]
    assert (await get(session, f"{home}/openai/v1/notes/{note['id']}/tags/{tag['id']}"))[2] == tag
    status, _, error = await post(session, f"{elsewhere}/openai/v1/notes/{note['id']}/tags", {})
    assert (status, error["error"]["message"]) == (404, f"No note found with id {note['id']!r}.")
    other = (await post(session, f"{home}/openai/v1/notes", {}))[2]
    status, _, error = await get(session, f"{home}/openai/v1/notes/{other['id']}/tags/{tag['id']}")
    assert (status, error["error"]["message"]) == (404, f"No tag found with id {tag['id']!r}.")  # not that note's

    async with session.delete(f"{home}/openai/v1/notes/{note['id']}", headers=AUTH):
        pass
    assert (await get(session, f"{home}/openai/v1/notes/{note['id']}/tags"))[0] == 404
