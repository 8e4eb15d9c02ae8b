"""What one region's handlers share: its clock, faults, objects, deployments, counters and latency model.

Handlers reach it as `context(request)`: the region's aiohttp app carries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dev.sim.deployments import Charge, Deployments
from dev.sim.faults import Faults
from dev.sim.stats import Counters
from dev.sim.store import Store
from shared.clock import Clock


@dataclass
class Context:
    clock: Clock
    faults: Faults
    deployments: Deployments
    ttft: float = 0.3  # clock seconds to the first token
    per_token: float = 0.005  # clock seconds per output token
    store: Store = field(default_factory=Store)
    counters: Counters = field(default_factory=Counters)
    secret: bytes = b""  # binds encrypted reasoning items to this region
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # background work, cancelled at stop

    async def admit(self, charge: Charge) -> dict[str, str]:
        """Charge a generation, then wait for its first token; returns the answer's rate-limit headers."""
        headers = self.deployments.admit(charge)
        await self.clock.sleep(self.ttft)
        return headers

    async def generate(self, tokens: int) -> None:
        """The rest of a non-streamed generation: `tokens` more tokens."""
        await self.clock.sleep(self.per_token * tokens)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


CONTEXT = web.AppKey("context", Context)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]
