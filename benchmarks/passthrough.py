"""Bare pass-through proxies, the baselines of benchmarks/capacity.py: forward the request to one upstream,
stream the answer back, nothing else (no auth, routing, accounting or logging).

- `aiohttp`: aiohttp's server and client, the least a Python proxy can do;
- `starlette`: the gateway's own server stack (uvicorn with httptools on uvloop, a Starlette app, an aiohttp
  client session), so the difference to the gateway is the gateway's own work.

    python -m benchmarks.passthrough --upstream http://127.0.0.1:PORT [--server aiohttp|starlette] [--port 0]

Prints `Listening on http://127.0.0.1:PORT` once connections queue.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator, Mapping

import aiohttp
import uvloop
from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy's own client or server writes.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP}


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    print(f"Listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    return sock


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)


async def serve_aiohttp(upstream: str, port: int) -> None:
    session = _session()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.request(
            request.method,
            upstream + request.path_qs,
            data=body or None,
            headers=_forwarded(request.headers),
            allow_redirects=False,
        ) as answer:
            response = web.StreamResponse(status=answer.status, headers=_forwarded(answer.headers))
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, _listen(port)).start()
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()


def serve_starlette(upstream: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    sessions: list[aiohttp.ClientSession] = []

    async def forward(request: Request) -> Response:
        if not sessions:
            sessions.append(_session())
        body = await request.body()
        url = upstream + request.url.path + ("?" + request.url.query if request.url.query else "")
        answer = await sessions[0].request(
            request.method, url, data=body or None, headers=_forwarded(request.headers), allow_redirects=False
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.content.iter_any():
                    yield chunk
            finally:
                answer.release()

        headers = {k: v for k, v in _forwarded(answer.headers).items() if k.lower() != "content-length"}
        return StreamingResponse(relay(), answer.status, headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    config = uvicorn.Config(app, log_level="warning", loop="uvloop", http="httptools", access_log=False)
    uvicorn.Server(config).run(sockets=[_listen(port)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--server", choices=("aiohttp", "starlette"), default="aiohttp")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    upstream = args.upstream.rstrip("/")
    if args.server == "starlette":
        serve_starlette(upstream, args.port)
    else:
        uvloop.run(serve_aiohttp(upstream, args.port))


if __name__ == "__main__":
    main()
