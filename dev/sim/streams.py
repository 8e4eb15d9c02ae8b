"""Streamed answers: SSE encodings (each stream ends by its own format) and the writer that applies faults.

- chat and completions: `data: {json}` chunks, then `data: [DONE]` (`data:[DONE]` with the compact_done fault);
- Responses, audio and images: `event: <type>` + `data: {"type": <type>, ...}`, no [DONE]: the last event is
  the terminal one (`response.completed`, `transcript.text.done`, `image_generation.completed`, ...);
- Assistants: `event: thread.run.created` + `data: {the object}` ..., then `event: done` / `data: [DONE]`.

A handler returns a `Streamed` answer unsent; the region's pipeline sends it after its faults and delays, so a
cut_after_body fault can drop the connection before any header is written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dev.sim.faults import Faults

DROP_AFTER_CHUNKS = 3


class Last(bytes):
    """A stream's terminal event: the drop_mid_stream fault cuts the stream before it at the latest."""


DONE = Last(b"data: [DONE]\n\n")
COMPACT_DONE = b"data:[DONE]\n\n"
ASSISTANT_DONE = Last(b"event: done\ndata: [DONE]\n\n")


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + _json(chunk) + b"\n\n"


def typed_sse(kind: str, data: dict[str, Any]) -> bytes:
    """A typed event, named in both the `event:` line and the payload's `type`, as OpenAI sends them."""
    return b"event: " + kind.encode() + b"\ndata: " + _json({"type": kind, **data}) + b"\n\n"


def assistant_sse(event: str, data: dict[str, Any]) -> bytes:
    """An Assistants event: the name only in the `event:` line, the object as the data."""
    return b"event: " + event.encode() + b"\ndata: " + _json(data) + b"\n\n"


class Streamed(web.StreamResponse):
    """An answer whose body is produced chunk by chunk, with bounded memory (SSE events or file bytes)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "text/event-stream",
        length: int | None = None,
    ) -> None:
        super().__init__(headers=headers)
        self.content_type = content_type
        self.events = content_type == "text/event-stream"
        if self.events:
            self.headers["Cache-Control"] = "no-cache"
        if length is None:
            self.enable_chunked_encoding()
        else:
            self.content_length = length
        self._chunks = chunks

    async def send(self, request: web.Request, faults: Faults) -> None:
        """Write every chunk; an SSE stream honours drop_mid_stream (cut before its terminal event) and
        compact_done. A client hanging up mid-body is not an error."""
        await self.prepare(request)
        try:
            index = 0
            async for chunk in self._chunks:
                if self.events and faults.drop_mid_stream and (index > DROP_AFTER_CHUNKS or isinstance(chunk, Last)):
                    abort(request)
                    return
                await self.write(COMPACT_DONE if self.events and faults.compact_done and chunk == DONE else chunk)
                index += 1
            await self.write_eof()
        except ConnectionResetError:
            pass


def abort(request: web.Request) -> None:
    """Cut the TCP connection: a client sees it drop mid-body or before any header."""
    if request.transport is not None:
        request.transport.abort()
