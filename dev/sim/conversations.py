"""Conversations and their items (v1 only: Azure serves them at /openai/v1/conversations, with no api-version
form). A Responses call naming a conversation appends its input and output items to it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.parse import json_body
from dev.sim.router import Collection, Routes, find, owner
from dev.sim.store import Store, new_id
from dev.sim.surfaces import V1

Json = dict[str, Any]
MAX_ITEMS = 20  # per create call, as OpenAI allows


def item(value: object) -> Json:
    """A Responses input item as stored: messages get typed content parts and an id; others keep their shape."""
    if not isinstance(value, dict):
        raise bad_request("Each item must be an object.")
    stored = dict(value)
    if stored.get("type", "message") == "message":
        part = "output_text" if stored.get("role") == "assistant" else "input_text"
        content = stored.get("content")
        parts = [{"type": part, "text": content}] if isinstance(content, str) else content
        stored |= {"type": "message", "content": parts, "status": stored.get("status", "completed")}
    stored.setdefault("id", new_id("msg_"))
    return stored


def append(store: Store, conversation_id: str, items: list[Json]) -> list[Json]:
    for entry in items:
        store.add(ITEMS.kind, dict(entry), parent=conversation_id)
    return items


def _items(value: object) -> list[Json]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise bad_request(f"'items' must be an array of at most {MAX_ITEMS} items.")
    return [item(entry) for entry in value]


async def _create(request: web.Request, parent: Json | None) -> Json:
    body = await json_body(request)
    items = _items(body.get("items"))
    conversation: Json = {
        "id": new_id("conv_"),
        "object": "conversation",
        "created_at": int(time.time()),
        "metadata": body.get("metadata") or {},
    }
    store = context(request).store
    store.add(CONVERSATIONS.kind, conversation)
    append(store, conversation["id"], items)
    return conversation


async def _add_items(request: web.Request, parent: Json | None) -> Json:
    assert parent is not None
    body = await json_body(request)
    if body.get("items") is None:
        raise bad_request("Missing required parameter: 'items'.")
    items = append(context(request).store, parent["id"], _items(body["items"]))
    first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
    return {"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False}


async def _delete_item(request: web.Request) -> web.StreamResponse:
    """Deleting an item answers the conversation it was removed from."""
    found, conversation = find(ITEMS, request), owner(ITEMS, request)
    assert conversation is not None
    context(request).store.remove(ITEMS.kind, found["id"], conversation["id"])
    return web.json_response(conversation)


CONVERSATIONS = Collection(
    "conversation",
    "conversation",
    "conversations",
    "conversation_id",
    (V1,),
    create=_create,
    updates=("metadata",),
    listed=False,
)
ITEMS = Collection(
    "conversation.item", "item", "items", "item_id", (V1,), parent=CONVERSATIONS, create=_add_items, deletable=False
)


def mount(routes: Routes) -> None:
    routes.collection(CONVERSATIONS)
    routes.collection(ITEMS)
    routes.objects("DELETE", ITEMS.item_path, _delete_item, ITEMS.surfaces)
