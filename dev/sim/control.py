"""The control server: faults, stats, reset, planted objects and the managed-identity endpoint, on a port of its
own so that it survives a region going down.

- `POST /_sim/reset`: every region forgets its limiter charges and counters (objects stay) -> all snapshots;
- `POST /_sim/{region}/faults` `{switch: value, ...}`: a validated partial update -> the region's snapshot;
- `GET /_sim/{region}/stats` -> the snapshot (region, faults, deployments, calls, probe_calls, objects, created);
- `POST /_sim/{region}/latency` `{"ttft": s, "per_token": s}` (clock seconds, either optional) -> the region's
  latency model now; generations that already started keep their pace until their next token;
- `POST /_sim/{region}/objects` `{"kind": "file", "bytes": N, "purpose": "batch", "filename": optional}` -> a
  synthetic file of N bytes in that region (its content is generated as it is read);
- `GET /_sim/identity/token`, `GET` / `POST /_sim/identity`: see identity.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from dev.sim import identity
from dev.sim.errors import AzureError, bad_request
from dev.sim.identity import Identity
from dev.sim.parse import json_body
from dev.sim.region import SHUTDOWN_TIMEOUT, SimRegion, faults_reply

PLANTABLE = ("file",)
LATENCIES = ("ttft", "per_token")


def control_app(regions: Sequence[SimRegion], identity_endpoint: Identity | None = None) -> web.Application:
    by_name = {region.name: region for region in regions}

    def region_of(request: web.Request) -> SimRegion:
        region = by_name.get(request.match_info["region"])
        if region is None:
            raise AzureError(404, "NotFound", f"Unknown region; known: {sorted(by_name)}")
        return region

    async def post_faults(request: web.Request) -> web.StreamResponse:
        return await faults_reply(region_of(request), request, spare=None)

    async def get_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(region_of(request).snapshot())

    async def post_reset(request: web.Request) -> web.StreamResponse:
        for region in regions:
            region.reset()
        return web.json_response({"regions": [region.snapshot() for region in regions]})

    async def post_objects(request: web.Request) -> web.StreamResponse:
        region, body = region_of(request), await json_body(request)
        size, purpose, filename = body.get("bytes"), body.get("purpose", "batch"), body.get("filename")
        if body.get("kind") not in PLANTABLE:
            raise bad_request(f"Unknown kind {body.get('kind')!r}; plantable: {list(PLANTABLE)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request("'bytes' must be a non-negative integer.")
        if not isinstance(purpose, str) or not (filename is None or isinstance(filename, str)):
            raise bad_request("'purpose' and 'filename' must be strings.")
        return web.json_response(region.plant_file(size, purpose, filename))

    async def post_latency(request: web.Request) -> web.StreamResponse:
        region, body = region_of(request), await json_body(request)
        unknown = set(body) - set(LATENCIES)
        if unknown:
            raise bad_request(f"Unknown latency setting {sorted(unknown)[0]!r}; known: {list(LATENCIES)}")
        for name, value in body.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise bad_request(f"{name!r} must be a non-negative number of clock seconds.")
        return web.json_response(region.set_latency(**{name: float(value) for name, value in body.items()}))

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AzureError as error:
            return error.response()

    app = web.Application(middlewares=[errors])
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_post("/_sim/{region}/faults", post_faults)
    app.router.add_get("/_sim/{region}/stats", get_stats)
    app.router.add_post("/_sim/{region}/objects", post_objects)
    app.router.add_post("/_sim/{region}/latency", post_latency)
    identity.mount(app, identity_endpoint or Identity())
    return app


async def start_control(
    regions: Sequence[SimRegion], host: str = "127.0.0.1", port: int = 0, *, identity_endpoint: Identity | None = None
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(control_app(regions, identity_endpoint), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"
