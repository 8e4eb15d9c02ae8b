"""HTTP in and out: a Starlette request becomes the router's call, its Outgoing a Starlette response.

A client that hangs up costs nothing more: once its body is read, one watcher waits for the
disconnect until the answer's last byte and cancels the request's task at whatever it awaits (the
wait for a host, the upstream call, a stream's next event), and every counter is given back on the
way out. A disconnect is logged at info level; it is not the gateway's error. Each request leaves
one JSON line on the `gateway.access` logger when its answer is complete or its client left.
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
from starlette.types import Message, Receive, Scope, Send

from shared.errors import GatewayError
from shared.outgoing import REQUEST_ID_HEADER, Outgoing
from shared.record import RequestRecord
from shared.relay import CutOff, Relay
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
    watch: Watch | None = None
    streaming = False

    async def read_body(limit: int) -> bytes:
        nonlocal watch
        body = await _read_body(request, limit)
        watch = Watch(request.receive, task)
        return body

    try:
        outgoing = await handle(request.method, path_of(request), query_of(request), request.headers, read_body, record)
        streaming = outgoing.stream is not None
    except asyncio.CancelledError:
        if watch is None or not watch.gone:
            raise
        task.uncancel()
        return _gone(record, telemetry)
    except ClientGone:
        return _gone(record, telemetry)
    finally:
        if watch is not None and not streaming:
            watch.stop()
    try:
        return respond(outgoing, record, telemetry, watch)
    except BaseException:
        if watch is not None:
            watch.stop()
        raise


class Watch:
    """The request's one disconnect watcher, from the end of its body to the end of its answer (a streamed one
    included): a client that hangs up cancels the request's task at whatever it awaits, and `gone` says why."""

    __slots__ = ("_receive", "_task", "_waiting", "gone")

    def __init__(self, receive: Receive, task: asyncio.Task[object]) -> None:
        self.gone = False
        self._receive = receive
        self._task = task
        self._waiting = self._wait()

    def _wait(self) -> asyncio.Future[Message]:
        # The server's receive() itself is the task (no coroutine of ours around it, held by every open stream).
        waiting = asyncio.ensure_future(self._receive())
        waiting.add_done_callback(self._heard)
        return waiting

    def _heard(self, waiting: asyncio.Future[Message]) -> None:
        if waiting.cancelled() or waiting.exception() is not None or waiting is not self._waiting:
            return
        if waiting.result()["type"] == "http.disconnect":
            self.gone = True
            self._task.cancel()
        else:
            self._waiting = self._wait()

    def stop(self) -> None:
        """Before the answer's last byte leaves: the server tells a finished answer as a disconnect too."""
        self._waiting.cancel()


class Relayed(StreamingResponse):
    """A relayed body sent chunk by chunk, watched by the request's own disconnect watcher (Starlette's
    StreamingResponse runs a task group with a listener task of its own for every stream, on ASGI servers
    before spec 2.4 such as uvicorn: a third task and its cancel scopes per open stream)."""

    def __init__(
        self,
        body: Relay,
        status: int,
        headers: Mapping[str, str],
        watch: Watch | None,
        record: RequestRecord,
        telemetry: Telemetry,
    ) -> None:
        super().__init__(body, status, headers)
        self._relay = body
        self._watch = watch
        self._record = record
        self._telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self.raw_headers = []  # on the wire now; an open stream need not hold them
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                del chunk  # not held while the next one is awaited
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except CutOff:
            # A plain body cut short upstream: never send its end, so the server drops the connection and the
            # client sees a truncated body (its length was not known up front), not a complete one.
            log.warning("upstream body cut off mid-answer (%s %s)", self._record.method, self._record.path)
        except asyncio.CancelledError:
            if self._watch is None or not self._watch.gone:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # the client left: finish as usual
        except OSError:
            pass  # a server that tells a client gone by failing the send (ASGI spec 2.4)
        finally:
            if self._watch is not None:
                self._watch.stop()
            # Whatever ended the response: an attempt whose body was not read to the end is finished here.
            await self._relay.aclose()
            _log(self._record, self._telemetry)


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


def respond(outgoing: Outgoing, record: RequestRecord, telemetry: Telemetry, watch: Watch | None = None) -> Response:
    """The Starlette response; the access line is written once it has been sent (or abandoned)."""
    headers = outgoing.headers
    # The upstream's request id, when it gave one, is the id of the whole exchange: the client, the
    # access log and Azure's own logs then name the request alike.
    record.request_id = headers.get(REQUEST_ID_HEADER) or record.ensure_id()
    headers[REQUEST_ID_HEADER] = record.request_id
    record.status = outgoing.status
    if outgoing.stream is not None:
        return Relayed(outgoing.stream, outgoing.status, headers, watch, record, telemetry)

    async def sent() -> None:
        # A coroutine: Starlette runs a plain function's background task in a worker thread, a thread hop per answer.
        _log(record, telemetry)

    return Response(outgoing.body, outgoing.status, headers, background=BackgroundTask(sent))


def error_response(exc: GatewayError, record: RequestRecord, telemetry: Telemetry | None = None) -> Response:
    record.error = exc.code
    return respond(Outgoing.error(exc), record, telemetry or Telemetry())


_ACCESS_LINE = json.JSONEncoder(separators=(",", ":"))


def _log(record: RequestRecord, telemetry: Telemetry) -> None:
    if access.isEnabledFor(logging.INFO):  # the line is built only when it goes somewhere
        access.info(_ACCESS_LINE.encode(record.fields()))
    telemetry.finish(record)
