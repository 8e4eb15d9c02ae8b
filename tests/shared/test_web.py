"""web: what the gateway reads from Starlette's request, as Starlette itself would read it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.types import Message

from shared import web
from shared.record import RequestRecord
from shared.relay import CutOff, Relay
from shared.telemetry import Telemetry
from shared.web import path_of, query_of


def request(query_string: bytes, raw_path: bytes = b"/openai/v1/responses") -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "raw_path": raw_path, "query_string": query_string})


@pytest.mark.parametrize(
    "query",
    [b"", b"api-version=2024-10-21", b"a=1&a=2&b=", b"x=%20y+z&&=v&k", b"q=" + b"a" * 300, b"%ZZ=%E9&v=\xe9"],
)
def test_the_query_reads_as_starlette_reads_it(query: bytes) -> None:
    assert query_of(request(query)) == request(query).query_params.multi_items()
    assert query_of(request(query)) == request(query).query_params.multi_items()  # and again, cached


@given(st.binary(max_size=300))
def test_any_query_reads_as_starlette_reads_it(query: bytes) -> None:
    assert query_of(request(query)) == request(query).query_params.multi_items()


def test_a_cached_query_is_a_fresh_list_each_time() -> None:
    first = query_of(request(b"api-version=1"))
    first.append(("extra", "1"))
    assert query_of(request(b"api-version=1")) == [("api-version", "1")]


def test_the_path_is_the_raw_one_without_its_query() -> None:
    assert path_of(request(b"", b"/openai/a%2Fb?x=1")) == "/openai/a%2Fb"


class Finished(Telemetry):
    def __init__(self) -> None:
        super().__init__()
        self.finished: list[RequestRecord] = []

    def finish(self, record: RequestRecord) -> None:
        self.finished.append(record)


class Unlogged(RequestRecord):
    def fields(self) -> dict[str, Any]:
        raise AssertionError("the access line was built though nobody logs it")


def test_the_access_line_is_built_only_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Finished()
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        web._log(RequestRecord("POST", "/x"), telemetry)
    assert json.loads(caplog.records[-1].getMessage())["path"] == "/x"
    logging.getLogger("gateway.access").setLevel(logging.WARNING)
    try:
        web._log(Unlogged("POST", "/y"), telemetry)
    finally:
        logging.getLogger("gateway.access").setLevel(logging.NOTSET)
    assert [r.path for r in telemetry.finished] == ["/x", "/y"]  # telemetry hears of every request


class Client:
    """The ASGI server's side of one request: what was sent, and a receive() that tells of a hang-up on cue."""

    def __init__(self, *messages: Message) -> None:
        self.sent: list[Message] = []
        self._messages = list(messages)
        self.leave = asyncio.Event()
        self.streaming = asyncio.Event()  # a body chunk went out

    async def receive(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message.get("body"):
            self.streaming.set()


async def upstream(*pieces: bytes, hang: bool = False) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
    if hang:
        await asyncio.Event().wait()


def relayed(client: Client, body: AsyncIterator[bytes], endings: list[str]) -> tuple[web.Relayed, RequestRecord]:
    record = RequestRecord("POST", "/openai/deployments/gpt-4o/chat/completions")
    task = asyncio.current_task()
    assert task is not None
    watch = web.Watch(client.receive, task)
    stream = Relay(body, lambda scanner, ending: endings.append(ending))
    return web.Relayed(stream, 200, {"content-type": "text/event-stream"}, watch, record, Telemetry()), record


async def test_a_relayed_stream_is_sent_whole_and_finished_once() -> None:
    client, endings = Client(), []
    response, _ = relayed(client, upstream(b"data: 1\n\n", b"data: [DONE]\n\n"), endings)
    await response({"type": "http"}, client.receive, client.send)
    assert [m["type"] for m in client.sent] == ["http.response.start", *["http.response.body"] * 3]
    assert b"".join(m.get("body", b"") for m in client.sent) == b"data: 1\n\ndata: [DONE]\n\n"
    client.leave.set()  # the server's "disconnect" once the answer is complete
    await asyncio.sleep(0)
    assert endings == ["complete"] and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_client_leaving_mid_stream_ends_it_as_abandoned_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, endings = Client({"type": "http.request", "body": b"", "more_body": False}), []
    response, record = relayed(client, upstream(b"data: 1\n\n", hang=True), endings)

    async def leave_soon() -> None:
        await client.streaming.wait()
        client.leave.set()

    leaving = asyncio.create_task(leave_soon())
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await response({"type": "http"}, client.receive, client.send)  # returns: the stream just ends
    await leaving
    assert endings == ["abandoned"]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert json.loads(caplog.records[-1].getMessage())["request_id"] == record.request_id


async def cut_short(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
    raise CutOff("the upstream connection broke")


async def test_a_plain_body_cut_off_upstream_is_left_unfinished_not_sent_as_complete() -> None:
    """No content-length goes out with a relayed body, so only a missing end tells the client it is short."""
    client, endings = Client(), []
    record = RequestRecord("GET", "/openai/files/file-1/content")
    stream = Relay(cut_short(b"first half"), lambda scanner, ending: endings.append(ending))
    response = web.Relayed(stream, 200, {"content-type": "application/octet-stream"}, None, record, Telemetry())
    await response({"type": "http"}, client.receive, client.send)
    assert [m.get("more_body") for m in client.sent if m["type"] == "http.response.body"] == [True]
    assert endings == ["cut_off"]


async def test_a_stream_whose_send_fails_still_finishes_its_attempt_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cancellation that is not the client leaving (the host shutting down) still gives everything back."""
    endings: list[str] = []
    record = RequestRecord("POST", "/openai/deployments/gpt-4o/chat/completions")
    stream = Relay(upstream(b"data: 1\n\n"), lambda scanner, ending: endings.append(ending))
    response = web.Relayed(stream, 200, {"content-type": "text/event-stream"}, None, record, Telemetry())

    async def send(message: Message) -> None:
        raise asyncio.CancelledError

    with caplog.at_level(logging.INFO, logger="gateway.access"), pytest.raises(asyncio.CancelledError):
        await response({"type": "http"}, Client().receive, send)
    assert endings == ["abandoned"]
    assert json.loads(caplog.records[-1].getMessage())["request_id"] == record.request_id
