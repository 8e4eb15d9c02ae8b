"""relay: bounded reads, decoding, and a Relay finished exactly once however it ends."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from shared.relay import CutOff, Decoder, Relay, passes_encoding, read_capped, sse_events
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
