"""Table-driven routes for stateful objects: one `Collection` spec per kind gives its CRUD on each surface.

A collection declares its kind, id parameter, parent collection (messages live in a thread, steps in a run),
the surfaces Azure offers it on and which generic operations it has: create (the family's function), list
(paged), get, update (listed fields) and delete. Every route is looked up in the region's own store, so
another region answers 404 for an object it never created; a parent missing from the region is a 404 too.
Routes are added in order: register a literal path (`threads/runs`) before a templated one (`threads/{id}`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import not_found, server_error
from dev.sim.parse import json_body
from dev.sim.store import page
from dev.sim.surfaces import Surfaces

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Create = Callable[[web.Request, Json | None], Awaitable[Json]]  # stores the new object, returns it
Check = Callable[[web.Request, Json], None]  # raises for a body naming objects this region does not hold


@dataclass(frozen=True)
class Collection:
    kind: str  # the store's kind and the objects' `object`, e.g. "thread.message"
    noun: str  # as 404 messages name it: "No message found with id ..."
    segment: str  # the path segment: "messages"
    param: str  # the id's path parameter: "message_id"
    surfaces: Surfaces
    parent: Collection | None = None
    create: Create | None = None
    updates: tuple[str, ...] = ()  # body fields POST /{id} may change; none: no update route
    check: Check | None = None  # applied to an update's body
    listed: bool = True
    deletable: bool = True
    deleted: str | None = None  # the delete answer's `object`; default "<kind>.deleted"
    default_limit: int = 20
    max_limit: int = 100

    @property
    def path(self) -> str:
        return f"{self.parent.item_path}/{self.segment}" if self.parent else self.segment

    @property
    def item_path(self) -> str:
        return f"{self.path}/{{{self.param}}}"


def owner(collection: Collection, request: web.Request) -> Json | None:
    """The object the collection's items belong to, after checking the whole chain exists in this region."""
    return find(collection.parent, request) if collection.parent else None


def find(collection: Collection, request: web.Request) -> Json:
    """The object the path names, or the 404 of the first missing link."""
    parent = owner(collection, request)
    object_id = request.match_info[collection.param]
    found = context(request).store.get(collection.kind, object_id, parent["id"] if parent else None)
    if found is None:
        raise not_found(collection.noun, object_id)
    return found


def require(request: web.Request, collection: Collection, object_ids: list[str], parent: str | None = None) -> None:
    """Every id a body references must exist in this region."""
    store = context(request).store
    for object_id in object_ids:
        if store.get(collection.kind, object_id, parent) is None:
            raise not_found(collection.noun, object_id)


class Routes:
    """A region's data-plane routes. Object routes answer 500 while the error_500 fault is on."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._app.router.add_route(method, path, handler)

    def objects(self, method: str, template: str, handler: Handler, surfaces: Surfaces) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            if context(request).faults.error_500:
                raise server_error()
            return await handler(request)

        for prefix in surfaces:
            self.add(method, prefix + template, handle)

    def collection(self, c: Collection) -> None:
        async def create(request: web.Request) -> web.StreamResponse:
            assert c.create is not None
            return web.json_response(await c.create(request, owner(c, request)))

        async def listing(request: web.Request) -> web.StreamResponse:
            parent = owner(c, request)
            items = context(request).store.items(c.kind, parent["id"] if parent else None)
            return web.json_response(page(items, request.query, default_limit=c.default_limit, max_limit=c.max_limit))

        async def get(request: web.Request) -> web.StreamResponse:
            return web.json_response(find(c, request))

        async def update(request: web.Request) -> web.StreamResponse:
            found = find(c, request)
            body = await json_body(request)
            if c.check is not None:
                c.check(request, body)
            found.update({name: body[name] for name in c.updates if name in body})
            return web.json_response(found)

        async def delete(request: web.Request) -> web.StreamResponse:
            found, parent = find(c, request), owner(c, request)
            context(request).store.remove(c.kind, found["id"], parent["id"] if parent else None)
            return web.json_response({"id": found["id"], "object": c.deleted or f"{c.kind}.deleted", "deleted": True})

        if c.create is not None:
            self.objects("POST", c.path, create, c.surfaces)
        if c.listed:
            self.objects("GET", c.path, listing, c.surfaces)
        self.objects("GET", c.item_path, get, c.surfaces)
        if c.updates:
            self.objects("POST", c.item_path, update, c.surfaces)
        if c.deletable:
            self.objects("DELETE", c.item_path, delete, c.surfaces)
