"""An upstream that answers every request with one recorded answer at almost no CPU, for benchmarks/capacity.py's
requests per second on one core: there the process under test, not its upstream, must be what runs out.

    python -m benchmarks.canned [--port 0]

Prints `Listening on http://127.0.0.1:PORT`. Until an answer is recorded (`POST /_canned` with the raw bytes
of an HTTP/1.1 response, say one the simulator gave), data-plane requests get a 503; `GET /openai/models`
(the gateway's health probe) always gets an empty model list.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import uvloop

_UNSET = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nno answer"
_MODELS_BODY = b'{"object":"list","data":[]}'
_MODELS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_MODELS_BODY)).encode()
    + b"\r\n\r\n"
    + _MODELS_BODY
)
_RECORDED = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Canned:
    answer = _UNSET


class _Server(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        out = bytearray()
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                break
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            target = head.split(b" ", 2)[1]
            if target.startswith(b"/_canned"):
                Canned.answer = body
                out += _RECORDED
            elif head.startswith(b"GET ") and target.startswith(b"/openai/models"):
                out += _MODELS
            else:
                out += Canned.answer
        if out and self._transport is not None:
            self._transport.write(bytes(out))


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    server = await asyncio.get_running_loop().create_server(_Server, sock=sock)
    print(f"Listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
