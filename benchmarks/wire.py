"""A lean HTTP/1.1 load client for benchmarks/capacity.py: pre-built requests on keep-alive connections.

aiohttp's client costs about as much CPU per request as the servers under test; on a 2-core machine the load
generator would then be what limits the numbers. This one writes prepared bytes and parses just enough of the
answer (status, Content-Length or chunked framing, SSE event count) to know when it is complete.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str  # with the query
    headers: Mapping[str, str]

    @classmethod
    def of(cls, url: str, headers: Mapping[str, str]) -> Target:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        return cls(parts.hostname, parts.port, parts.path + ("?" + parts.query if parts.query else ""), headers)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def post(self, body: object) -> bytes:
        """The whole request, ready to write."""
        data = json.dumps(body, separators=(",", ":")).encode()
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"Content-Length: {len(data)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


@dataclass
class Answer:
    status: int = 0
    body_bytes: int = 0
    events: int = 0  # SSE events ("\n\n"-terminated) in the body
    first_body_at: float | None = None  # perf_counter of the first body byte
    complete: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)  # set with the first body byte


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self, wait: float) -> None:
        if self.lost:
            raise ConnectionError("connection closed before the answer was complete")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(wait):
                await self._waiter
        finally:
            self._waiter = None


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, target.host, target.port)
        return cls(protocol)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def exchange(self, request: bytes, wait: float = 60.0, answer: Answer | None = None) -> Answer:
        """Send `request` and read its whole answer, waiting at most `wait` seconds for each read; `answer` (if
        given) is filled in as the bytes arrive."""
        answer = answer or Answer()
        p = self._protocol
        assert p.transport is not None
        p.transport.write(request)
        while (end := p.buffer.find(b"\r\n\r\n")) < 0:
            await p.more(wait)
        head = bytes(p.buffer[:end]).decode("latin-1").split("\r\n")
        del p.buffer[: end + 4]
        answer.status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if "chunked" in fields.get("transfer-encoding", "").lower():
            await self._chunked(answer, wait)
        else:
            await self._sized(answer, int(fields.get("content-length", "0")), wait)
        answer.complete = True
        return answer

    async def _sized(self, answer: Answer, length: int, wait: float) -> None:
        p = self._protocol
        while len(p.buffer) < length:
            if p.buffer and answer.first_body_at is None:
                answer.first_body_at = time.perf_counter()
                answer.started.set()
            await p.more(wait)
        self._body(answer, bytes(p.buffer[:length]))
        del p.buffer[:length]

    async def _chunked(self, answer: Answer, wait: float) -> None:
        p = self._protocol
        while True:
            while (line_end := p.buffer.find(b"\r\n")) < 0:
                await p.more(wait)
            size = int(bytes(p.buffer[:line_end]).split(b";", 1)[0], 16)
            while len(p.buffer) < line_end + 2 + size + 2:
                await p.more(wait)
            start = line_end + 2
            self._body(answer, bytes(p.buffer[start : start + size]))
            del p.buffer[: start + size + 2]
            if size == 0:
                return

    @staticmethod
    def _body(answer: Answer, data: bytes) -> None:
        if data:
            if answer.first_body_at is None:
                answer.first_body_at = time.perf_counter()
                answer.started.set()
            answer.body_bytes += len(data)
            answer.events += data.count(b"\n\n")


async def drive(
    target: Target,
    request: bytes,
    *,
    concurrency: int,
    count: int | None = None,
    seconds: float | None = None,
) -> list[Answer]:
    """`concurrency` connections sending `request` back to back, `count` in all or for `seconds`, whichever ends
    first (one of them must be given)."""
    assert count is not None or seconds is not None
    deadline = time.perf_counter() + seconds if seconds is not None else None
    left = [count if count is not None else 1 << 62]
    answers: list[Answer] = []

    async def worker() -> None:
        connection = await Connection.open(target)
        try:
            while left[0] > 0 and (deadline is None or time.perf_counter() < deadline):
                left[0] -= 1
                answers.append(await connection.exchange(request))
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers
