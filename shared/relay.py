"""Answer bodies on their way to the client, with bounded memory.

JSON answers are read whole (they are small, and carry the usage), up to a cap; anything larger or
binary (file contents, audio, batch output) passes through chunk by chunk as it arrives, and event
streams event by event. Every read waits at most the stream-idle timeout. A compressed body is
decoded when it is gzip or deflate (then labelled as what it now is), else passed on with its
`content-encoding`.

A `Relay` is closed exactly once, whether the client read it to the end, left half-way, or never
started reading: that is when its attempt is settled (dispatch.py's hold).
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp

from shared.errors import sse_error_event
from shared.usage import SseScanner

JSON_CAP = 4 * 1024 * 1024  # a larger "JSON" answer is relayed, not held
_DECODED_PIECE = 256 * 1024  # most bytes a compressed chunk may expand to at a time
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class CutOff(Exception):
    """The body broke off (transport error, idle timeout, undecodable bytes)."""


class Decoder:
    """gzip / deflate bodies decoded piece by piece; identity passes through."""

    __slots__ = ("_inflate", "identity")

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._inflate = None
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        self.identity = self._inflate is None

    def feed(self, data: bytes) -> list[bytes]:
        if self._inflate is None:
            return [data] if data else []
        pieces = []
        try:
            while data:
                piece = self._inflate.decompress(data, _DECODED_PIECE)
                if piece:
                    pieces.append(piece)
                data = self._inflate.unconsumed_tail
        except zlib.error:
            raise CutOff("the upstream's compressed body is corrupt") from None
        return pieces


class IdleTimeouts:
    """The stream-idle timeouts of every body read with one setting, on one timer: a read only notes its
    deadline. (`asyncio.timeout` around each read schedules and cancels a timer per event; a timer per body
    is half a KiB per open stream.) The timer fires at the soonest deadline of the reads in progress, cancels
    those past theirs, and moves on to the next; reads start with the latest deadline yet, so a new one never
    needs it sooner."""

    __slots__ = ("_handle", "_loop", "_reading", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reading: set[IdleTimer] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def timer(self) -> IdleTimer:
        return IdleTimer(self)

    def _started(self, timer: IdleTimer, loop: asyncio.AbstractEventLoop) -> float:
        if self._loop is not loop:  # first use, or a new event loop (tests)
            self._loop, self._handle = loop, None
        deadline = loop.time() + self.seconds
        self._reading.add(timer)
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._fire)
        return deadline

    def _ended(self, timer: IdleTimer) -> None:
        self._reading.discard(timer)

    def _fire(self) -> None:
        self._handle = None
        assert self._loop is not None
        now, soonest = self._loop.time(), math.inf
        for timer in list(self._reading):
            if timer.deadline <= now:
                self._reading.discard(timer)
                timer.expire()
            else:
                soonest = min(soonest, timer.deadline)
        if soonest != math.inf:
            self._handle = self._loop.call_at(soonest, self._fire)


class IdleTimer:
    """One body's reads under its IdleTimeouts."""

    __slots__ = ("_cancelling", "_task", "_timeouts", "deadline", "expired")

    def __init__(self, timeouts: IdleTimeouts) -> None:
        self._timeouts = timeouts
        self._task: asyncio.Task[object] | None = None  # the task reading now, if any
        self._cancelling = 0
        self.deadline = 0.0
        self.expired = False

    def reading(self) -> None:
        """A read starts: it must end within the timeouts' seconds."""
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        self.deadline = self._timeouts._started(self, task.get_loop())

    def done(self) -> None:
        self._task = None
        self._timeouts._ended(self)

    def expire(self) -> None:
        if self._task is not None:
            self.expired = True
            self._task.cancel()

    def timed_out(self) -> bool:
        """After a CancelledError in a read: was it this timer's (then the cancellation is taken back)?"""
        if not self.expired or self._task is None:
            return False
        self.expired = False
        return self._task.uncancel() <= self._cancelling


async def chunks(response: aiohttp.ClientResponse, idle: IdleTimeouts, decoder: Decoder) -> AsyncIterator[bytes]:
    """The body as it arrives, decoded; each read may wait at most `idle.seconds` (real seconds)."""
    content = response.content
    timer = idle.timer()
    while True:
        timer.reading()
        try:
            data = await content.readany()
        except asyncio.CancelledError:
            if timer.timed_out():
                raise CutOff("the upstream went silent") from None
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise CutOff(f"the upstream connection broke ({type(exc).__name__})") from None
        finally:
            timer.done()
        if not data:
            return
        if decoder.identity:
            yield data
        else:
            for piece in decoder.feed(data):
                yield piece
                del piece
        del data  # an open stream waits for its next read holding no bytes of the last (here and below)


async def read_capped(body: AsyncIterator[bytes], cap: int) -> tuple[list[bytes], bool]:
    """Up to `cap` bytes of the body, and whether that was all of it."""
    parts: list[bytes] = []
    size = 0
    async for piece in body:
        parts.append(piece)
        size += len(piece)
        if size > cap:
            return parts, False
    return parts, True


# How a relayed body ended: "complete", "cut_off" (the upstream's doing) or "abandoned" (the client left).
Finish = Callable[[SseScanner | None, str], None]


class Relay:
    """An answer body streamed to the client, and the one place its attempt is finished."""

    __slots__ = ("_body", "_closed", "_finish", "_scanner", "first_byte")

    def __init__(self, body: AsyncIterator[bytes], finish: Finish, scanner: SseScanner | None = None) -> None:
        self._body = body
        self._finish = finish
        self._scanner = scanner
        self._closed = False
        self.first_byte: Callable[[], None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        ending = "abandoned"
        try:
            first = True
            async for piece in self._body:
                if first and self.first_byte is not None:
                    self.first_byte()
                first = False
                yield piece
                del piece
            ending = "complete"
        except CutOff:
            ending = "cut_off"
            if self._scanner is None:
                raise  # a plain body (a file, JSON) has no error event: its response must be left unfinished
            yield sse_error_event(
                "upstream_interrupted", "The upstream stream was interrupted; the answer is incomplete."
            )
        finally:
            self._close(ending)

    def _close(self, ending: str) -> None:
        if not self._closed:
            self._closed = True
            self._finish(self._scanner, ending)

    async def aclose(self) -> None:
        """After the response: finishes an attempt whose body was not read to the end (the client left)."""
        self._close("abandoned")


async def sse_events(
    body: AsyncIterator[bytes], scanner: SseScanner, watch: Callable[[bytes], Awaitable[None]] | None
) -> AsyncIterator[bytes]:
    """Whole events as they complete, those of one read in one piece (one write to the client, not one per
    event); a stream that ends without its own terminal event was cut off."""
    async for piece in body:
        events = scanner.feed(piece)
        del piece
        if not events:
            continue
        if watch is not None:
            for event in events:
                await watch(event)
                del event
        out = events[0] if len(events) == 1 else b"".join(events)
        del events
        yield out
        del out
    rest = scanner.flush()
    if rest:
        yield rest
    if not scanner.done:
        raise CutOff("the stream ended before its terminal event")


async def prepend(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for piece in first:
        yield piece
    async for piece in rest:
        yield piece


def passes_encoding(headers: Mapping[str, str]) -> bool:
    """Whether the body goes out still encoded (so its content-encoding header must go with it)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    return bool(encoding) and encoding != "identity" and encoding not in DECODABLE
