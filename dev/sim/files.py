"""Files: uploaded (multipart) or planted by the control server as synthetic content of any size.

A file's content is a `Blob` read in chunks, so `GET /files/{id}/content` streams with bounded memory: a
planted 300 MiB file is generated on the fly (deterministic bytes, see `synthetic`), never held whole.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.parse import form, ids, upload
from dev.sim.router import Collection, Routes, find, require
from dev.sim.store import Store, new_id
from dev.sim.streams import Streamed
from dev.sim.surfaces import BOTH

Json = dict[str, Any]
CHUNK = 256 * 1024
BLOCK = 1024 * 1024  # synthetic content repeats one pseudo-random MiB


@dataclass(frozen=True)
class Blob:
    """A file's content: uploaded bytes, or (data None) `size` synthetic bytes generated on the fly."""

    size: int
    data: bytes | None = None

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(len(data), data)

    def chunks(self) -> Iterator[bytes]:
        if self.data is None:
            yield from synthetic(self.size)
            return
        for start in range(0, self.size, CHUNK):
            yield self.data[start : start + CHUNK]


@cache
def _block() -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(BLOCK // 32))


def synthetic(size: int) -> Iterator[bytes]:
    """The content of a planted file of `size` bytes, in chunks: byte k is that of one fixed MiB at k mod 1 MiB."""
    view, sent = memoryview(_block()), 0
    while sent < size:
        start = sent % BLOCK
        chunk = bytes(view[start : start + min(CHUNK, size - sent, BLOCK - start)])
        sent += len(chunk)
        yield chunk


def head(blob: Blob, limit: int) -> bytes:
    """At most the first `limit` bytes (what a search reads of a file)."""
    data = b""
    for chunk in blob.chunks():
        data += chunk[: limit - len(data)]
        if len(data) >= limit:
            break
    return data


def store_file(store: Store, blob: Blob, filename: str, purpose: str) -> Json:
    file = {
        "id": new_id("file-"),
        "object": "file",
        "bytes": blob.size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }
    return store.add(FILES.kind, file, payload=blob)


def stream(content: Blob) -> Streamed:
    """A download: the content's chunks, never all of it at once."""

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in content.chunks():
            yield chunk

    return Streamed(chunks(), content_type="application/octet-stream", length=content.size)


async def _upload(request: web.Request, parent: Json | None) -> Json:
    fields = await form(request)
    purpose, part = fields.get("purpose"), upload(fields, "file")
    if not isinstance(purpose, str):
        raise bad_request("A file upload needs the multipart fields 'purpose' and 'file'.")
    return store_file(context(request).store, Blob.of(part.file.read()), part.filename, purpose)


async def _content(request: web.Request) -> web.StreamResponse:
    return stream(context(request).store.payload(FILES.kind, find(FILES, request)["id"], Blob))


FILES = Collection(
    "file", "file", "files", "file_id", BOTH, create=_upload, deleted="file", default_limit=10_000, max_limit=10_000
)


def named_file(request: web.Request, body: Json, field: str = "file_id") -> str:
    """The id of a file of this region that the body names (400 if it names none, 404 if it is not here)."""
    file_id = body.get(field)
    if not isinstance(file_id, str):
        raise bad_request(f"Missing required parameter: {field!r}.")
    require(request, FILES, [file_id])
    return file_id


def named_files(request: web.Request, body: Json, field: str = "file_ids") -> list[str]:
    """The ids of files of this region that the body lists (none if absent; 404 for one that is not here)."""
    file_ids = ids(body.get(field), field)
    require(request, FILES, file_ids)
    return file_ids


def mount(routes: Routes) -> None:
    routes.collection(FILES)
    routes.objects("GET", FILES.item_path + "/content", _content, FILES.surfaces)
