"""Code-interpreter containers and their files (v1 only: Azure serves them at /openai/v1/containers).

A container file is uploaded (multipart `file`) or copied from a file of the same region (`file_id`); its
content downloads from `GET .../files/{id}/content`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.files import FILES, Blob, named_file, named_files, stream
from dev.sim.parse import form, json_body, upload
from dev.sim.router import Collection, Routes, find, owner
from dev.sim.store import Store, new_id
from dev.sim.surfaces import V1

Json = dict[str, Any]
EXPIRES_AFTER = {"anchor": "last_active_at", "minutes": 20}


def _store_file(store: Store, container: Json, blob: Blob, filename: str) -> Json:
    file = {
        "id": new_id("cfile_"),
        "object": "container.file",
        "bytes": blob.size,
        "container_id": container["id"],
        "created_at": int(time.time()),
        "path": f"/mnt/data/{filename}",
        "source": "user",
    }
    return store.add(CONTAINER_FILES.kind, file, parent=container["id"], payload=blob)


def _copy(store: Store, container: Json, file_id: str) -> Json:
    """A container file from a file of this region (known to exist)."""
    file = store.get(FILES.kind, file_id)
    assert file is not None
    return _store_file(store, container, store.payload(FILES.kind, file_id, Blob), file["filename"])


async def _create(request: web.Request, parent: Json | None) -> Json:
    body = await json_body(request)
    if not isinstance(body.get("name"), str):
        raise bad_request("Missing required parameter: 'name'.")
    file_ids = named_files(request, body)
    now = int(time.time())
    container = {
        "id": new_id("cntr_"),
        "object": "container",
        "created_at": now,
        "status": "running",
        "name": body["name"],
        "expires_after": body.get("expires_after") or EXPIRES_AFTER,
        "last_active_at": now,
        "memory_limit": body.get("memory_limit") or "1g",
    }
    store = context(request).store
    store.add(CONTAINERS.kind, container)
    for file_id in file_ids:
        _copy(store, container, file_id)
    return container


async def _add_file(request: web.Request, parent: Json | None) -> Json:
    """Multipart `file` (an upload) or JSON `file_id` (a copy of a file of this region)."""
    assert parent is not None
    store = context(request).store
    if request.content_type.startswith("multipart/"):
        part = upload(await form(request), "file")
        return _store_file(store, parent, Blob.of(part.file.read()), part.filename)
    return _copy(store, parent, named_file(request, await json_body(request)))


async def _content(request: web.Request) -> web.StreamResponse:
    file, container = find(CONTAINER_FILES, request), owner(CONTAINER_FILES, request)
    assert container is not None
    return stream(context(request).store.payload(CONTAINER_FILES.kind, file["id"], Blob, container["id"]))


CONTAINERS = Collection("container", "container", "containers", "container_id", (V1,), create=_create)
CONTAINER_FILES = Collection(
    "container.file", "container file", "files", "file_id", (V1,), parent=CONTAINERS, create=_add_file
)


def mount(routes: Routes) -> None:
    routes.collection(CONTAINERS)
    routes.collection(CONTAINER_FILES)
    routes.objects("GET", CONTAINER_FILES.item_path + "/content", _content, CONTAINER_FILES.surfaces)
