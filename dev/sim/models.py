"""The model listing (`GET /openai/models?api-version=...`, `/openai/v1/models`): the health probe's target.

Authenticated, free and never rate limited. The probe faults apply here only, so probes can fail or time out
while real traffic works: probe_delay waits first, probe_status answers that status; error_500 applies too.
"""

from __future__ import annotations

import time

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import AzureError, server_error
from dev.sim.router import Routes
from dev.sim.surfaces import BOTH


async def _models(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    ctx.counters.probe_calls += 1
    await ctx.clock.sleep(ctx.faults.probe_delay)
    if ctx.faults.error_500:
        raise server_error()
    status = ctx.faults.probe_status
    if status:
        raise AzureError(status, str(status), f"The simulated probe fault answers {status}.")
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "system"} for name in ctx.deployments.names]
    return web.json_response({"object": "list", "data": data})


def mount(routes: Routes) -> None:
    for prefix in BOTH:
        routes.add("GET", prefix + "models", _models)
