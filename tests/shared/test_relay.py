"""relay: bounded reads, decoding, and a Relay finished exactly once however it ends."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from shared.relay import CutOff, Decoder, IdleTimeouts, Relay, chunks, passes_encoding, read_capped, sse_events
from shared.usage import SseScanner


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def broken(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise CutOff("the upstream connection broke")


def test_gzip_and_deflate_are_decoded_in_bounded_pieces() -> None:
    data = b"abc" * 1_000_000
    decoder = Decoder("gzip")
    out = decoder.feed(gzip.compress(data))
    assert b"".join(out) == data and max(len(p) for p in out) <= 256 * 1024
    assert b"".join(Decoder("deflate").feed(zlib.compress(b"hello"))) == b"hello"
    assert Decoder("").feed(b"as is") == [b"as is"]
    with pytest.raises(CutOff):
        Decoder("gzip").feed(b"not gzip at all")


def test_which_encodings_pass_still_encoded() -> None:
    assert passes_encoding({"content-encoding": "br"})
    assert not passes_encoding({"content-encoding": "gzip"})
    assert not passes_encoding({"content-encoding": "identity"}) and not passes_encoding({})


async def test_read_capped_stops_past_the_cap() -> None:
    assert await read_capped(pieces(b"ab", b"cd"), 10) == ([b"ab", b"cd"], True)
    parts, complete = await read_capped(pieces(b"abcd", b"efgh", b"ijkl"), 5)
    assert parts == [b"abcd", b"efgh"] and not complete


async def test_a_relay_is_finished_once_whether_read_to_the_end_or_not() -> None:
    endings: list[str] = []
    relay = Relay(pieces(b"a", b"b"), lambda scanner, ending: endings.append(ending))
    assert [p async for p in relay] == [b"a", b"b"]
    await relay.aclose()
    assert endings == ["complete"]

    endings.clear()
    never_read = Relay(pieces(b"a"), lambda scanner, ending: endings.append(ending))
    await never_read.aclose()
    assert endings == ["abandoned"]


async def test_a_cut_stream_ends_with_an_error_event_the_sdk_raises_on() -> None:
    endings: list[str] = []
    scanner = SseScanner()
    relay = Relay(sse_events(broken(b"data: {}\n\n"), scanner, None), lambda s, ending: endings.append(ending), scanner)
    out = [p async for p in relay]
    assert out[0] == b"data: {}\n\n" and b"upstream_interrupted" in out[-1]
    assert endings == ["cut_off"]


async def test_a_stream_without_its_terminal_event_is_cut_off() -> None:
    scanner = SseScanner()
    with pytest.raises(CutOff):
        [p async for p in sse_events(pieces(b"data: {}\n\n"), scanner, None)]


class Content:
    """aiohttp's response.content as chunks() reads it: `readany` gives the pieces, then b"", or hangs."""

    def __init__(self, *parts: bytes, hang: bool = False) -> None:
        self._parts = list(parts)
        self._hang = hang

    async def readany(self) -> bytes:
        if self._parts:
            return self._parts.pop(0)
        if self._hang:
            await asyncio.Event().wait()
        return b""


def upstream(content: Content) -> Any:
    return cast(Any, type("Response", (), {"content": content})())


async def test_chunks_relays_every_read_until_the_end() -> None:
    body = chunks(upstream(Content(b"a", b"b", b"c")), IdleTimeouts(60.0), Decoder(""))
    assert [piece async for piece in body] == [b"a", b"b", b"c"]


async def test_a_silent_upstream_is_cut_off_after_the_idle_timeout() -> None:
    body = chunks(upstream(Content(b"a", hang=True)), IdleTimeouts(0.01), Decoder(""))
    assert await body.__anext__() == b"a"
    with pytest.raises(CutOff, match="went silent"):
        await body.__anext__()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # its cancellation taken back


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def read() -> list[bytes]:
        return [piece async for piece in chunks(upstream(Content(hang=True)), IdleTimeouts(60.0), Decoder(""))]

    task = asyncio.create_task(read())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_one_timer_serves_every_body_and_cuts_only_the_silent_one() -> None:
    idle = IdleTimeouts(0.05)
    silent = chunks(upstream(Content(hang=True)), idle, Decoder(""))

    async def lively() -> list[bytes]:
        got = []
        for _ in range(8):  # a read every 0.02 s: never 0.05 s without one, though the whole takes longer
            got += [piece async for piece in chunks(upstream(Content(b"x")), idle, Decoder(""))]
            await asyncio.sleep(0.02)
        return got

    lively_reads = asyncio.create_task(lively())
    with pytest.raises(CutOff, match="went silent"):
        await silent.__anext__()
    assert await lively_reads == [b"x"] * 8
    assert not idle._reading  # nothing left registered


async def test_a_read_ending_before_its_deadline_is_never_cut() -> None:
    idle = IdleTimeouts(0.01)
    assert [piece async for piece in chunks(upstream(Content(b"a", b"b")), idle, Decoder(""))] == [b"a", b"b"]
    await asyncio.sleep(0.03)  # the timer fires with no read in progress: nothing to cancel
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_events_of_one_read_go_out_in_one_piece() -> None:
    scanner = SseScanner()
    out = [p async for p in sse_events(pieces(b"data: 1\n\ndata: 2\n\ndata: [D", b"ONE]\n\n"), scanner, None)]
    assert out == [b"data: 1\n\ndata: 2\n\n", b"data: [DONE]\n\n"]
    seen: list[bytes] = []

    async def watch(event: bytes) -> None:
        seen.append(event)

    scanner = SseScanner()
    [p async for p in sse_events(pieces(b"data: 1\n\ndata: [DONE]\n\n"), scanner, watch)]
    assert seen == [b"data: 1\n\n", b"data: [DONE]\n\n"]  # watched one by one


async def test_a_compressed_body_whose_read_decodes_to_nothing_yet_goes_on() -> None:
    data = gzip.compress(b"hello world")
    body = chunks(upstream(Content(data[:5], data[5:])), IdleTimeouts(60.0), Decoder("gzip"))
    assert b"".join([piece async for piece in body]) == b"hello world"
