"""`SimRegion`: one regional Azure OpenAI resource on its own port; it assembles the app and owns the server.

Its app is the pipeline (see pipeline.py) in front of every family of routes: model operations (inference,
responses, media), the stateful kinds (files, batches, vector stores, assistants, containers, conversations)
and the probe target (models). It also answers its own /_sim/stats, /_sim/faults and /_sim/reset, but the
control server (control.py) is what tests use: it survives the region going down.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dev.sim import (
    assistants,
    batches,
    containers,
    conversations,
    faults,
    files,
    inference,
    media,
    models,
    responses,
    vector_stores,
)
from dev.sim.context import CONTEXT, Context
from dev.sim.deployments import Deployments
from dev.sim.errors import AzureError
from dev.sim.faults import Faults
from dev.sim.limiter import SimDeployment
from dev.sim.parse import json_body
from dev.sim.pipeline import pipeline
from dev.sim.router import Routes
from dev.sim.stats import Counters, DeploymentStats
from shared.clock import Clock

Json = dict[str, Any]
SHUTDOWN_TIMEOUT = 1.0  # real seconds stop() waits for in-flight responses
FAMILIES = (inference, responses, media, files, batches, vector_stores, assistants, containers, conversations, models)


class SimRegion:
    """A set of deployments behind one endpoint, with the stateful objects created there."""

    def __init__(
        self,
        name: str,
        deployments: Sequence[SimDeployment],
        clock: Clock,
        *,
        ttft: float = 0.3,
        per_token: float = 0.005,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.faults = Faults()
        self._ctx = Context(
            clock, self.faults, Deployments(deployments, clock, self.faults), ttft, per_token, secret=os.urandom(32)
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self.app = self._build_app(api_key)

    @property
    def stats(self) -> dict[str, DeploymentStats]:
        """Live counters per deployment (reset() replaces them)."""
        return dict(self._ctx.deployments.stats)

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self._port}"

    def reset(self) -> None:
        """Forget all charges and counters (between benchmark scenarios); objects stay."""
        self._ctx.deployments.reset()
        self._ctx.counters = Counters()
        self._ctx.store.created.clear()

    def snapshot(self) -> Json:
        ctx = self._ctx
        return {
            "region": self.name,
            "faults": asdict(self.faults),
            "deployments": {name: asdict(stats) for name, stats in ctx.deployments.stats.items()},
            "calls": dict(sorted(ctx.counters.calls.items())),
            "probe_calls": ctx.counters.probe_calls,
            "objects": ctx.store.counts(),
            "created": dict(ctx.store.created),
        }

    def set_latency(self, *, ttft: float | None = None, per_token: float | None = None) -> Json:
        """Change the latency model while running (benchmarks hold streams open with a long per-token time)."""
        if ttft is not None:
            self._ctx.ttft = ttft
        if per_token is not None:
            self._ctx.per_token = per_token
        return {"ttft": self._ctx.ttft, "per_token": self._ctx.per_token}

    def plant_file(self, size: int, purpose: str = "batch", filename: str | None = None) -> Json:
        """A file of `size` synthetic bytes, generated when read: a huge file without uploading it."""
        name = filename or f"synthetic-{uuid.uuid4().hex[:8]}.bin"
        return files.store_file(self._ctx.store, files.Blob(size), name, purpose)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        self._host, self._port = host, port
        await self._listen()
        return self.endpoint

    async def stop(self) -> None:
        for task in list(self._ctx.tasks):
            task.cancel()
        await asyncio.gather(*self._ctx.tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._site = None, None

    async def set_down(self, down: bool) -> None:
        await self._set_down(down, spare=None)

    async def update_faults(self, update: Json, *, spare: RequestHandler | None = None) -> None:
        """Partial, validated update of `faults`; `down` really closes or reopens the port."""
        faults.check(update)
        for name, value in update.items():
            if name != "down":
                setattr(self.faults, name, value)
        if "down" in update:
            await self._set_down(update["down"], spare)

    async def _set_down(self, down: bool, spare: RequestHandler | None) -> None:
        """Close (or reopen, same port) the listener; going down also cuts every open connection but `spare`."""
        self.faults.down = down
        if not down:
            if self._site is None and self._runner is not None:
                await self._listen()
            return
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else []:
            if connection is spare:
                connection.close()  # finish the reply that asked for the outage, then hang up
            else:
                connection.force_close()  # keep-alive clients must not reach a "down" region

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._site = site
        self._port = self._runner.addresses[0][1]  # the real port when 0 was asked

    def _build_app(self, api_key: str | None) -> web.Application:
        app = web.Application(middlewares=[pipeline(self._ctx, api_key)])
        app[CONTEXT] = self._ctx
        app.on_response_prepare.append(self._stamp)
        routes = Routes(app)
        for family in FAMILIES:
            family.mount(routes)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_post("/_sim/faults", self._post_faults)
        app.router.add_post("/_sim/reset", self._post_reset)
        return app

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        """Azure's tracing headers, on every answer including errors and streams."""
        response.headers["x-ms-region"] = self.name
        response.headers["apim-request-id"] = str(uuid.uuid4())
        response.headers["x-request-id"] = str(uuid.uuid4())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _post_faults(self, request: web.Request) -> web.Response:
        return await faults_reply(self, request, spare=request.protocol)

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.snapshot())


async def faults_reply(region: SimRegion, request: web.Request, spare: RequestHandler | None) -> web.Response:
    try:
        await region.update_faults(await json_body(request), spare=spare)
    except AzureError as error:
        return error.response()
    return web.json_response(region.snapshot())


async def run_regions(
    specs: Sequence[tuple[str, Sequence[SimDeployment]]],
    clock: Clock,
    *,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    ttft: float = 0.3,
    per_token: float = 0.005,
    api_key: str | None = None,
) -> list[SimRegion]:
    """Start one listening SimRegion per spec; ports default to free ones."""
    if ports is not None and len(ports) != len(specs):
        raise ValueError(f"{len(specs)} regions but {len(ports)} ports")
    regions: list[SimRegion] = []
    try:
        for index, (name, deployments) in enumerate(specs):
            region = SimRegion(name, deployments, clock, ttft=ttft, per_token=per_token, api_key=api_key)
            await region.start(host, ports[index] if ports is not None else 0)
            regions.append(region)
    except BaseException:
        for region in regions:
            await region.stop()
        raise
    return regions
