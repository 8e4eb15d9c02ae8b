"""Batches: created from an input file that must live in the same region; listed, read and cancelled."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.files import named_file
from dev.sim.parse import json_body
from dev.sim.router import Collection, Routes, find
from dev.sim.store import new_id
from dev.sim.surfaces import BOTH

Json = dict[str, Any]
EXPIRES_AFTER = 24 * 3600


async def _create(request: web.Request, parent: Json | None) -> Json:
    body = await json_body(request)
    for name in ("endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise bad_request(f"Missing required parameter: {name!r}.")
    named_file(request, body, "input_file_id")
    created = int(time.time())
    batch = {
        "id": new_id("batch_"),
        "object": "batch",
        "endpoint": body["endpoint"],
        "errors": None,
        "input_file_id": body["input_file_id"],
        "completion_window": body["completion_window"],
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created,
        "expires_at": created + EXPIRES_AFTER,
        "cancelling_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    return context(request).store.add(BATCHES.kind, batch)


async def _cancel(request: web.Request) -> web.StreamResponse:
    batch = find(BATCHES, request)
    batch.update(status="cancelling", cancelling_at=int(time.time()))
    return web.json_response(batch)


BATCHES = Collection("batch", "batch", "batches", "batch_id", BOTH, create=_create, deletable=False)


def mount(routes: Routes) -> None:
    routes.collection(BATCHES)
    routes.objects("POST", BATCHES.item_path + "/cancel", _cancel, BATCHES.surfaces)
