"""The path every data-plane request takes through a region, in one middleware.

Count the call by route template, authenticate (any non-empty api-key, or the configured one, or any bearer
token), require api-version on the classic surface, run the handler (an `AzureError` becomes its answer), wait
the slow fault, then either cut the connection (cut_after_body: a POST was read and performed, no header is
ever sent) or send: a `Streamed` answer is written here, a JSON one gzip-compressed under the gzip fault.
Unknown paths answer Azure's 404 and are not counted. The region's own /_sim/ routes bypass all of it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from dev.sim.context import Context
from dev.sim.errors import AzureError, route_not_found, unauthorized
from dev.sim.parse import api_version
from dev.sim.streams import Streamed, abort


def authorize(request: web.Request, api_key: str | None) -> None:
    key = request.headers.get("api-key")
    key_ok = bool(key) and (api_key is None or key == api_key)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not key_ok and not (scheme.lower() == "bearer" and token.strip()):
        raise unauthorized()


def pipeline(ctx: Context, api_key: str | None) -> Middleware:
    @web.middleware
    async def data_plane(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        resource = request.match_info.route.resource
        if resource is None:
            return route_not_found().response()
        ctx.counters.calls[f"{request.method} {resource.canonical}"] += 1
        try:
            authorize(request, api_key)
            api_version(request)
            response = await handler(request)
        except AzureError as error:
            response = error.response()
        await ctx.clock.sleep(ctx.faults.slow)
        if ctx.faults.cut_after_body and request.method == "POST":
            await request.read()
            abort(request)
        elif isinstance(response, Streamed):
            await response.send(request, ctx.faults)
        elif ctx.faults.gzip and response.content_type == "application/json":
            response.enable_compression(web.ContentCoding.gzip)
        return response

    return data_plane
