"""The control server: faults, stats, reset and planted objects, surviving a region going down."""

from __future__ import annotations

import aiohttp
import pytest

from dev.simulator import SimDeployment, run_regions, start_control
from shared.clock import ScaledClock
from tests.dev.sim.conftest import CHAT, chat_body, post


@pytest.mark.asyncio
async def test_control_server_survives_a_region_going_down(session: aiohttp.ClientSession) -> None:
    specs = [("eastus", [SimDeployment("gpt-4o", 10_000)]), ("westus", [SimDeployment("gpt-4o", 20_000)])]
    regions = await run_regions(specs, ScaledClock(600), ttft=0.0, per_token=0.0)
    runner, control = await start_control(regions)
    east, west = (region.endpoint for region in regions)
    try:
        status, _, state = await post(session, control + "/_sim/westus/faults", {"error_500": True})
        assert status == 200 and state["faults"]["error_500"] is True
        assert (await post(session, west + CHAT, chat_body()))[0] == 500
        assert (await post(session, east + CHAT, chat_body()))[0] == 200

        assert (await post(session, control + "/_sim/eastus/faults", {"down": True}))[0] == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, east + CHAT, chat_body())
        assert (await post(session, control + "/_sim/eastus/faults", {"down": False}))[0] == 200
        assert (await post(session, east + CHAT, chat_body()))[0] == 200

        async with session.get(control + "/_sim/eastus/stats") as resp:
            assert (await resp.json())["deployments"]["gpt-4o"]["admitted_requests"] == 2
        assert (await post(session, control + "/_sim/eastus/faults", {"slow": "very"}))[0] == 400
        assert (await post(session, control + "/_sim/nowhere/faults", {}, {}))[0] == 404
        assert (await post(session, control + "/_sim/reset", {}))[0] == 200
        assert regions[0].stats["gpt-4o"].admitted_requests == 0
        assert regions[1].faults.error_500 is True  # reset clears windows and counters, not faults
    finally:
        await runner.cleanup()
        for region in regions:
            await region.stop()
