"""HTTP in and out: a Starlette request becomes the router's call, its Outgoing a Starlette response.

A client that hangs up costs nothing more: once its body is read, a watcher waits for the
disconnect and cancels the request's task at whatever it awaits (the wait for a host, the upstream
call), and every counter is given back on the way out. A disconnect is logged at info level; it is
not the gateway's error. Each request leaves one JSON line on the `gateway.access` logger when its
answer is complete or its client left.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from shared.errors import GatewayError
from shared.outgoing import REQUEST_ID_HEADER, Outgoing
from shared.record import RequestRecord
from shared.telemetry import Telemetry

log = logging.getLogger("gateway")
access = logging.getLogger("gateway.access")

BodyReader = Callable[[int], Awaitable[bytes]]
Handler = Callable[[str, str, list[tuple[str, str]], Mapping[str, str], BodyReader, RequestRecord], Awaitable[Outgoing]]


class ClientGone(Exception):
    """The client hung up before the gateway could answer."""


def path_of(request: Request) -> str:
    raw_path = request.scope.get("raw_path")
    return raw_path.decode("latin-1").partition("?")[0] if raw_path else request.url.path


def query_of(request: Request) -> list[tuple[str, str]]:
    """The query's items, as Starlette parses them; a short query (they repeat: `api-version=...`) once."""
    raw: bytes = request.scope.get("query_string", b"")
    if len(raw) <= _CACHED_QUERY_BYTES:
        return list(_parsed_query(raw))
    return request.query_params.multi_items()


_CACHED_QUERY_BYTES = 256


@functools.lru_cache(maxsize=256)
def _parsed_query(raw: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


async def serve(request: Request, handle: Handler, record: RequestRecord, telemetry: Telemetry) -> Response:
    telemetry.start(record, request.headers)
    task = asyncio.current_task()
    assert task is not None
    watcher: asyncio.Task[None] | None = None
    gone = asyncio.Event()

    async def read_body(limit: int) -> bytes:
        nonlocal watcher
        body = await _read_body(request, limit)
        watcher = asyncio.create_task(_watch(request, gone, task))
        return body

    try:
        outgoing = await handle(request.method, path_of(request), query_of(request), request.headers, read_body, record)
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()
        return _gone(record, telemetry)
    except ClientGone:
        return _gone(record, telemetry)
    finally:
        if watcher is not None:
            watcher.cancel()
    return respond(outgoing, record, telemetry)


async def _watch(request: Request, gone: asyncio.Event, task: asyncio.Task[object]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            task.cancel()
            return


def _gone(record: RequestRecord, telemetry: Telemetry) -> Response:
    record.ending = "client_gone"
    record.status = 499  # nginx's "client closed request": nobody reads it, the log line shows it
    log.info("client %s disconnected before its answer (%s %s)", record.client or "-", record.method, record.path)
    _log(record, telemetry)
    return Response(status_code=499)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; answer 413 as soon as the body is known to be larger."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayError(400, "invalid_request", "Content-Length is not a number.")
        if int(declared) > limit:
            raise GatewayError(
                413, "request_too_large", f"The request body exceeds the gateway's limit of {limit} bytes."
            )
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise GatewayError(
                    413, "request_too_large", f"The request body exceeds the gateway's limit of {limit} bytes."
                )
    except ClientDisconnect:
        raise ClientGone() from None
    return bytes(body)


def respond(outgoing: Outgoing, record: RequestRecord, telemetry: Telemetry) -> Response:
    """The Starlette response; the access line is written once it has been sent (or abandoned)."""
    headers = outgoing.headers
    # The upstream's request id, when it gave one, is the id of the whole exchange: the client, the
    # access log and Azure's own logs then name the request alike.
    record.request_id = headers.get(REQUEST_ID_HEADER) or record.ensure_id()
    headers[REQUEST_ID_HEADER] = record.request_id
    record.status = outgoing.status
    if outgoing.stream is not None:
        stream = outgoing.stream

        async def finished() -> None:
            await stream.aclose()
            _log(record, telemetry)

        return StreamingResponse(stream, outgoing.status, headers, background=BackgroundTask(finished))

    async def sent() -> None:
        # A coroutine: Starlette runs a plain function's background task in a worker thread, a thread hop per answer.
        _log(record, telemetry)

    return Response(outgoing.body, outgoing.status, headers, background=BackgroundTask(sent))


def error_response(exc: GatewayError, record: RequestRecord, telemetry: Telemetry | None = None) -> Response:
    record.error = exc.code
    return respond(Outgoing.error(exc), record, telemetry or Telemetry())


_ACCESS_LINE = json.JSONEncoder(separators=(",", ":"))


def _log(record: RequestRecord, telemetry: Telemetry) -> None:
    access.info(_ACCESS_LINE.encode(record.fields()))
    telemetry.finish(record)
