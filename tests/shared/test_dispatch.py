"""Dispatcher: attempts inside one deadline, what each outcome does to health and the ledger, and bodies relayed.

Driven through Proxy.handle on the rig (real ledger, health board, placement; a fake session on a ManualClock).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging

import aiohttp
import pytest

from shared.affinity import Home
from shared.health import ProbeResult
from shared.outgoing import BACKEND_HEADER, Outgoing
from tests.shared.rig import (
    CHAT,
    CLIENT_KEY,
    COMPLETION,
    EAST,
    HOSTS,
    UK,
    WEST,
    FakeResponse,
    Sent,
    call,
    error_of,
    make_rig,
)


async def drain(outgoing: Outgoing) -> bytes:
    assert outgoing.stream is not None
    return b"".join([piece async for piece in outgoing.stream])


async def content(outgoing: Outgoing) -> bytes:
    return outgoing.body if outgoing.stream is None else await drain(outgoing)


def sse(*events: bytes) -> FakeResponse:
    return FakeResponse(
        200, {"content-type": "text/event-stream"}, content_type="text/event-stream", chunks=list(events)
    )


# --- streams end by their own format ------------------------------------------------------------------------------

CHUNK = b'data: {"choices":[{"delta":{"content":"hi"},"index":0}]}\n\n'


@pytest.mark.parametrize(
    "ending",
    [
        b"data: [DONE]\n\n",
        b"data:[DONE]\n\n",
        b'data: {"type":"transcript.text.done","text":"hi","usage":{"input_tokens":3,"output_tokens":1}}\n\n',
        b'data: {"type":"speech.audio.done","usage":{"input_tokens":3,"output_tokens":1}}\n\n',
        b'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":""}\n\n',
    ],
    ids=["done", "done-no-space", "transcript", "speech", "image"],
)
async def test_a_stream_that_ends_by_its_own_format_is_clean(ending: bytes) -> None:
    unknown = b'event: brand.new\ndata: {"type":"brand.new"}\n\n'
    rig = make_rig(lambda sent: sse(CHUNK, unknown, ending), hosts=(EAST,))
    out = await call(rig, payload=json.dumps({"messages": [], "stream": True, "max_tokens": 5}).encode())
    body = await drain(out)
    assert body == CHUNK + unknown + ending  # unknown events pass through; nothing is appended
    assert b"upstream_interrupted" not in body
    assert rig.health.describe(EAST.key)["consecutive_failures"] == 0
    assert rig.proxy.in_flight == 0


async def test_a_stream_that_stops_without_its_terminal_event_was_cut_off() -> None:
    rig = make_rig(lambda sent: sse(CHUNK, CHUNK), hosts=(EAST,))
    out = await call(rig, payload=json.dumps({"messages": [], "stream": True, "max_tokens": 5}).encode())
    body = await drain(out)
    assert body.startswith(CHUNK + CHUNK) and b"upstream_interrupted" in body
    assert rig.health.describe(EAST.key)["consecutive_failures"] == 1
    assert rig.ledger.window_tokens(EAST.key) > 0  # what was generated stays charged
    assert rig.proxy.in_flight == 0


async def test_a_stream_the_client_abandons_is_settled_once_and_not_held_against_the_host() -> None:
    rig = make_rig(lambda sent: sse(CHUNK, CHUNK, b"data: [DONE]\n\n"), hosts=(EAST,))
    out = await call(rig, payload=json.dumps({"messages": [], "stream": True, "max_tokens": 5}).encode())
    assert out.stream is not None
    iterator = aiter(out.stream)
    assert await anext(iterator) == CHUNK
    await out.stream.aclose()  # the response's background task, after the client left
    await iterator.aclose()  # the generator's own close, later
    assert rig.proxy.in_flight == 0
    assert rig.health.describe(EAST.key)["consecutive_failures"] == 0
    assert rig.session.responses[0].closed  # a half-read connection is not returned to the pool


async def test_a_stream_never_read_is_finished_by_its_close() -> None:
    rig = make_rig(lambda sent: sse(CHUNK, b"data: [DONE]\n\n"), hosts=(EAST,))
    out = await call(rig, payload=json.dumps({"messages": [], "stream": True, "max_tokens": 5}).encode())
    assert rig.proxy.in_flight == 1
    assert out.stream is not None
    await out.stream.aclose()
    assert rig.proxy.in_flight == 0
    assert rig.ledger.window_tokens(EAST.key) > 0


# --- compressed and large bodies ----------------------------------------------------------------------------------


async def test_a_gzip_answer_is_decoded_and_labelled_as_what_it_now_is() -> None:
    upstream = FakeResponse(
        200, {"content-encoding": "gzip", "content-type": "application/json"}, gzip.compress(COMPLETION)
    )
    rig = make_rig(lambda sent: upstream, hosts=(EAST,))
    out = await call(rig)
    assert out.status == 200 and out.body == COMPLETION
    assert "content-encoding" not in out.headers
    assert rig.ledger.host_usage()[EAST.key].tokens == 8  # the usage was read from the decoded body


async def test_an_encoding_the_gateway_cannot_decode_passes_with_its_header() -> None:
    upstream = FakeResponse(200, {"content-encoding": "br", "content-type": "application/json"}, b"\x8b\x01\x80brotli")
    rig = make_rig(lambda sent: upstream, hosts=(EAST,))
    out = await call(rig)
    assert out.headers["content-encoding"] == "br"
    assert await content(out) == b"\x8b\x01\x80brotli"
    assert rig.proxy.in_flight == 0


async def test_a_binary_answer_is_relayed_in_pieces_as_it_arrives() -> None:
    pieces = [bytes([i]) * 65536 for i in range(16)]
    upstream = FakeResponse(200, {}, content_type="application/octet-stream", chunks=pieces)
    rig = make_rig(lambda sent: upstream, hosts=(EAST,))
    rig.affinity.put("file:file-big", Home(EAST.key, "app"), 3600)
    out = await call(rig, "/openai/files/file-big/content", method="GET", payload=b"")
    assert out.body == b"" and out.stream is not None
    got = [piece async for piece in out.stream]
    assert got == pieces  # never joined into one buffer
    assert rig.proxy.in_flight == 0


async def test_a_json_answer_over_the_cap_is_relayed_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.relay.JSON_CAP", 1000)
    big = json.dumps({"data": ["x" * 100] * 50}).encode()
    upstream = FakeResponse(200, {"content-type": "application/json"}, chunks=[big[:600], big[600:1200], big[1200:]])
    rig = make_rig(lambda sent: upstream, hosts=(EAST,))
    out = await call(rig)
    assert await drain(out) == big


# --- retry safety -------------------------------------------------------------------------------------------------

UPLOAD_HEADERS = [("api-key", CLIENT_KEY), ("content-type", "multipart/form-data; boundary=b")]
BATCH = b'{"input_file_id": "file-in", "endpoint": "/v1/chat/completions", "completion_window": "24h"}'


@pytest.mark.parametrize(
    "error", [aiohttp.ServerDisconnectedError(), TimeoutError()], ids=["dropped-after-send", "no-headers"]
)
async def test_a_create_whose_answer_was_lost_is_not_sent_again(error: BaseException) -> None:
    rig = make_rig(lambda sent: error)  # a file upload may go to any resource: the most tempting case for a retry
    out = await call(rig, "/openai/files", UPLOAD_HEADERS, b"--b--\r\n")
    assert out.status == 502
    error_body = error_of(out)
    assert error_body["code"] == "upstream_outcome_unknown"
    assert "may have created the object" in error_body["message"]
    assert len(rig.session.sent) == 1
    assert rig.proxy.in_flight == 0


async def test_a_create_whose_headers_time_out_at_the_deadline_still_says_check_before_retrying() -> None:
    """Both timeouts default to 120 s, so the header timeout ends exactly at the deadline: not a bare 504."""

    def times_out(sent: Sent) -> BaseException:
        rig.clock.advance(120.0)  # the header timeout, as long as the whole deadline
        return TimeoutError()

    rig = make_rig(times_out)
    out = await call(rig, "/openai/files", UPLOAD_HEADERS, b"--b--\r\n")
    assert out.status == 502 and error_of(out)["code"] == "upstream_outcome_unknown"
    assert len(rig.session.sent) == 1


async def test_a_create_answered_with_a_5xx_is_relayed_not_retried() -> None:
    rig = make_rig(lambda sent: FakeResponse(500, {}, b'{"error": {"code": "InternalServerError"}}'))
    rig.affinity.put("file:file-in", Home(WEST.key, "app"), 3600)
    out = await call(rig, "/openai/batches", payload=BATCH)
    assert out.status == 500 and len(rig.session.sent) == 1
    assert rig.health.describe(WEST.key)["consecutive_failures"] == 1  # still evidence against the host


async def test_a_create_refused_before_it_ran_may_go_elsewhere() -> None:
    refused = aiohttp.ClientConnectorError(type("K", (), {"host": "h", "port": 1, "ssl": True})(), OSError(111, "x"))  # type: ignore[arg-type]
    stored = FakeResponse(200, {}, b'{"id": "file-1", "object": "file"}')
    answers = {EAST.name: refused, WEST.name: refused, UK.name: stored}
    rig = make_rig(lambda sent: answers[sent.host.name])
    out = await call(rig, "/openai/files", UPLOAD_HEADERS, b"--b--\r\n")
    assert out.status == 200 and out.headers[BACKEND_HEADER] == "uksouth"


# --- the gateway's own failures blame no host ---------------------------------------------------------------------


async def test_no_token_for_the_gateway_is_a_503_and_ejects_nobody(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(hosts=(EAST, WEST))
    rig.tokens.failing = True
    with caplog.at_level(logging.ERROR, logger="gateway"):
        out = await call(rig)
    assert out.status == 503
    assert error_of(out)["code"] == "UpstreamCredentialUnavailable"
    assert int(out.headers["retry-after"]) == 1
    assert rig.session.sent == []
    assert all(rig.health.available(h.key) for h in (EAST, WEST))
    rig.tokens.failing = False
    assert (await call(rig)).status == 200  # full service as soon as it is back


async def test_a_host_with_its_own_key_still_serves_while_the_token_is_unavailable() -> None:
    rig = make_rig()
    rig.tokens.failing = True
    out = await call(rig)
    assert out.status == 200 and [s.host for s in rig.session.sent] == [UK]


# --- cancellation gives everything back ---------------------------------------------------------------------------


async def test_cancellation_while_awaiting_headers_gives_back_the_place_and_keeps_the_charge() -> None:
    started = asyncio.Event()

    async def hang(sent: Sent) -> FakeResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    rig = make_rig(hang, hosts=(EAST,))
    task = asyncio.create_task(call(rig))
    await started.wait()
    assert rig.proxy.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.proxy.in_flight == 0
    assert rig.ledger.window_tokens(EAST.key) > 0  # it was sent: Azure may have admitted it


async def test_cancellation_while_waiting_for_room_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(hosts=(EAST,), wait_budget_seconds=100.0)
    rig.ledger.reserve((EAST.key,), EAST.tpm, prompt=0, client="other", deployment=CHAT)  # room again in 60 s
    waiting = asyncio.Event()

    async def sleep(seconds: float) -> None:  # a wait that lasts until the client is gone
        waiting.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(rig.clock, "sleep", sleep)
    task = asyncio.create_task(call(rig))
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.session.sent == [] and rig.proxy.in_flight == 0


# --- probes outranked: panic mode ---------------------------------------------------------------------------------


def failing_probe() -> ProbeResult:
    return ProbeResult(False, "answered 500", 3.0, 1_700_000_000.0, 4)


async def test_probes_failing_everywhere_route_anyway_in_panic_mode(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig()
    for host in HOSTS:
        rig.health.set_probe(host.key, failing_probe())
    with caplog.at_level(logging.WARNING, logger="gateway"):
        out = await call(rig)
    assert out.status == 200
    assert rig.health.panic() == {CHAT: 0.0}
    assert "panic mode for gpt-4o" in caplog.text
    assert "live traffic succeeds" in caplog.text  # the disagreement is logged
    served = rig.session.sent[0].host
    assert not rig.health.probe_down(served.key) and rig.health.probe_disagrees(served.key)
    # Live traffic now vouches for that host, but every probe still fails: still panic mode, for /status.
    await call(rig)
    assert CHAT in rig.health.panic()
    rig.health.set_probe(EAST.key, ProbeResult(True, "ok", 1.0, 1_700_000_001.0))
    await call(rig)
    assert CHAT in rig.health.panic()  # a third of the quota passing is not enough
    rig.health.set_probe(WEST.key, ProbeResult(True, "ok", 1.0, 1_700_000_001.0))
    await call(rig)
    assert rig.health.panic() == {}


async def test_probes_failing_on_most_of_the_quota_are_panic_mode_before_the_last_host_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Probes turn one host at a time: with two of three failing, the third would carry everything alone."""
    rig = make_rig()
    for host in (EAST, WEST):
        rig.health.set_probe(host.key, failing_probe())
    with caplog.at_level(logging.WARNING, logger="gateway"):
        out = await call(rig)
        await call(rig)
    assert out.status == 200 and CHAT in rig.health.panic()
    assert caplog.text.count("panic mode for gpt-4o:") == 1
    # The doubted first tier was tried with live traffic, which now vouches for it.
    assert rig.session.sent[0].host == EAST and rig.health.probe_disagrees(EAST.key)


async def test_a_probe_failing_on_one_host_only_sends_traffic_elsewhere() -> None:
    rig = make_rig()
    rig.health.set_probe(EAST.key, failing_probe())
    for _ in range(5):
        await call(rig)
    assert EAST not in [s.host for s in rig.session.sent]
    assert rig.health.panic() == {}


# --- odd input ----------------------------------------------------------------------------------------------------


async def test_deep_nesting_is_a_400_before_anything_is_parsed_or_sent() -> None:
    rig = make_rig()
    deep = b'{"messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    out = await call(rig, payload=deep)
    assert out.status == 400 and error_of(out)["code"] == "invalid_json"
    assert rig.session.sent == []
