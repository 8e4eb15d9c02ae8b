"""Vector stores, their files and file batches, and search (both surfaces).

Files must exist in the region (a vector store only indexes its own resource's files). Indexing is instant:
files and batches are "completed" when created, so cancelling a batch answers it as it finished. Search is a
plain text match: a file scores the fraction of the query's words found in (the first MiB of) its content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.files import FILES, Blob, head, named_file, named_files
from dev.sim.parse import ids, json_body, positive_int
from dev.sim.router import Collection, Routes, find, owner, require
from dev.sim.store import Store, new_id, page
from dev.sim.surfaces import BOTH

Json = dict[str, Any]
SEARCH_BYTES = 1024 * 1024
DEFAULT_RESULTS = 10
CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


@dataclass(frozen=True)
class BatchFiles:
    ids: list[str]


def _counts(completed: int) -> Json:
    return {"in_progress": 0, "completed": completed, "failed": 0, "cancelled": 0, "total": completed}


def _index(store: Store, vector_store: Json, file_id: str, attributes: object = None) -> Json:
    """Add a file (known to exist here) to a vector store and update the store's counts."""
    file = store.get(FILES.kind, file_id)
    assert file is not None
    entry = {
        "id": file_id,
        "object": "vector_store.file",
        "created_at": int(time.time()),
        "usage_bytes": file["bytes"],
        "vector_store_id": vector_store["id"],
        "status": "completed",
        "last_error": None,
        "attributes": attributes or {},
        "chunking_strategy": CHUNKING,
    }
    store.add(VECTOR_STORE_FILES.kind, entry, parent=vector_store["id"])
    _recount(store, vector_store)
    return entry


def _recount(store: Store, vector_store: Json) -> None:
    files = store.items(VECTOR_STORE_FILES.kind, vector_store["id"])
    vector_store.update(file_counts=_counts(len(files)), usage_bytes=sum(f["usage_bytes"] for f in files))


async def _create(request: web.Request, parent: Json | None) -> Json:
    body = await json_body(request)
    file_ids = named_files(request, body)
    now = int(time.time())
    vector_store = {
        "id": new_id("vs_"),
        "object": "vector_store",
        "created_at": now,
        "name": body.get("name") or "",
        "usage_bytes": 0,
        "file_counts": _counts(0),
        "status": "completed",
        "expires_after": body.get("expires_after"),
        "expires_at": None,
        "last_active_at": now,
        "metadata": body.get("metadata") or {},
    }
    store = context(request).store
    store.add(VECTOR_STORES.kind, vector_store)
    for file_id in file_ids:
        _index(store, vector_store, file_id)
    return vector_store


async def _add_file(request: web.Request, parent: Json | None) -> Json:
    assert parent is not None
    body = await json_body(request)
    return _index(context(request).store, parent, named_file(request, body), body.get("attributes"))


async def _remove_file(request: web.Request) -> web.StreamResponse:
    found, vector_store = find(VECTOR_STORE_FILES, request), owner(VECTOR_STORE_FILES, request)
    assert vector_store is not None
    store = context(request).store
    store.remove(VECTOR_STORE_FILES.kind, found["id"], vector_store["id"])
    _recount(store, vector_store)
    return web.json_response({"id": found["id"], "object": "vector_store.file.deleted", "deleted": True})


async def _create_batch(request: web.Request, parent: Json | None) -> Json:
    assert parent is not None
    body = await json_body(request)
    files = body.get("files")
    entries = files if isinstance(files, list) else [{"file_id": i} for i in ids(body.get("file_ids"), "file_ids")]
    if not entries or not all(isinstance(e, dict) and isinstance(e.get("file_id"), str) for e in entries):
        raise bad_request("A file batch needs 'file_ids' or 'files' (objects with a 'file_id').")
    require(request, FILES, [e["file_id"] for e in entries])
    store = context(request).store
    for entry in entries:
        _index(store, parent, entry["file_id"], entry.get("attributes") or body.get("attributes"))
    batch = {
        "id": new_id("vsfb_"),
        "object": "vector_store.files_batch",
        "created_at": int(time.time()),
        "status": "completed",
        "vector_store_id": parent["id"],
        "file_counts": _counts(len(entries)),
    }
    return store.add(FILE_BATCHES.kind, batch, parent=parent["id"], payload=BatchFiles([e["file_id"] for e in entries]))


async def _cancel_batch(request: web.Request) -> web.StreamResponse:
    batch = find(FILE_BATCHES, request)
    if batch["status"] == "in_progress":
        batch["status"] = "cancelled"
    return web.json_response(batch)


async def _batch_files(request: web.Request) -> web.StreamResponse:
    batch, vector_store = find(FILE_BATCHES, request), owner(FILE_BATCHES, request)
    assert vector_store is not None
    store = context(request).store
    members = set(store.payload(FILE_BATCHES.kind, batch["id"], BatchFiles, vector_store["id"]).ids)
    entries = [f for f in store.items(VECTOR_STORE_FILES.kind, vector_store["id"]) if f["id"] in members]
    return web.json_response(page(entries, request.query))


def _text(store: Store, file_id: str) -> str | None:
    if store.get(FILES.kind, file_id) is None:
        return None  # deleted since it was indexed
    return head(store.payload(FILES.kind, file_id, Blob), SEARCH_BYTES).decode("utf-8", "replace")


async def _file_content(request: web.Request) -> web.StreamResponse:
    found = find(VECTOR_STORE_FILES, request)
    content = _text(context(request).store, found["id"]) or ""
    parts = [{"type": "text", "text": content}]
    return web.json_response({"object": "vector_store.file_content.page", "data": parts, "has_more": False})


async def _search(request: web.Request) -> web.StreamResponse:
    vector_store = find(VECTOR_STORES, request)
    body = await json_body(request)
    query = body.get("query")
    queries = [query] if isinstance(query, str) else query
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) for q in queries):
        raise bad_request("'query' must be a string or an array of strings.")
    words = {w for q in queries for w in q.lower().split()}
    store = context(request).store
    results = []
    for entry in store.items(VECTOR_STORE_FILES.kind, vector_store["id"]):
        content = _text(store, entry["id"])
        file = store.get(FILES.kind, entry["id"])
        if content is None or file is None or not words:
            continue
        score = sum(w in content.lower() for w in words) / len(words)
        if score > 0:
            results.append(
                {
                    "file_id": entry["id"],
                    "filename": file["filename"],
                    "score": score,
                    "attributes": entry["attributes"],
                    "content": [{"type": "text", "text": content}],
                }
            )
    results.sort(key=lambda r: -float(r["score"]))
    limit = positive_int(body.get("max_num_results"), "max_num_results", DEFAULT_RESULTS)
    return web.json_response(
        {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": results[:limit],
            "has_more": False,
            "next_page": None,
        }
    )


VECTOR_STORES = Collection(
    "vector_store",
    "vector store",
    "vector_stores",
    "vector_store_id",
    BOTH,
    create=_create,
    updates=("name", "metadata", "expires_after"),
)
VECTOR_STORE_FILES = Collection(
    "vector_store.file",
    "vector store file",
    "files",
    "file_id",
    BOTH,
    parent=VECTOR_STORES,
    create=_add_file,
    updates=("attributes",),
    deletable=False,
)
FILE_BATCHES = Collection(
    "vector_store.files_batch",
    "vector store file batch",
    "file_batches",
    "batch_id",
    BOTH,
    parent=VECTOR_STORES,
    create=_create_batch,
    listed=False,
    deletable=False,
)


def mount(routes: Routes) -> None:
    for collection in (VECTOR_STORES, VECTOR_STORE_FILES, FILE_BATCHES):
        routes.collection(collection)
    routes.objects("POST", VECTOR_STORES.item_path + "/search", _search, BOTH)
    routes.objects("DELETE", VECTOR_STORE_FILES.item_path, _remove_file, BOTH)
    routes.objects("GET", VECTOR_STORE_FILES.item_path + "/content", _file_content, BOTH)
    routes.objects("POST", FILE_BATCHES.item_path + "/cancel", _cancel_batch, BOTH)
    routes.objects("GET", FILE_BATCHES.item_path + "/files", _batch_files, BOTH)
