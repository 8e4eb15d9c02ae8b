"""The control server: faults, stats, reset and planted objects, surviving a region going down."""

from __future__ import annotations

import aiohttp
import pytest

from dev.sim.files import synthetic
from dev.simulator import SimDeployment, run_regions, start_control
from shared.clock import ScaledClock
from tests.dev.sim.conftest import CHAT, VERSION, Clients, chat_body, post


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


@pytest.mark.asyncio
async def test_the_control_server_plants_synthetic_files(session: aiohttp.ClientSession, sdk: Clients) -> None:
    regions = await run_regions([("eastus", [SimDeployment("gpt-4o", 10_000)])], ScaledClock(600), ttft=0.0)
    runner, control = await start_control(regions)
    try:
        size = 3 * 1024 * 1024 + 7
        status, _, file = await post(session, control + "/_sim/eastus/objects", {"kind": "file", "bytes": size}, {})
        assert status == 200 and file["id"].startswith("file-") and (file["bytes"], file["purpose"]) == (size, "batch")
        content = await sdk.azure(regions[0].endpoint, VERSION).files.content(file["id"])
        assert content.read() == b"".join(synthetic(size))
        named = {"kind": "file", "bytes": 0, "purpose": "assistants", "filename": "empty.txt"}
        assert (await post(session, control + "/_sim/eastus/objects", named, {}))[2]["filename"] == "empty.txt"
        assert regions[0].snapshot()["objects"] == {"file": 2}
        for bad in ({"kind": "thread", "bytes": 1}, {"kind": "file", "bytes": -1}, {"kind": "file", "bytes": "1"}):
            assert (await post(session, control + "/_sim/eastus/objects", bad, {}))[0] == 400
        assert (await post(session, control + "/_sim/nowhere/objects", {"kind": "file", "bytes": 1}, {}))[0] == 404
    finally:
        await runner.cleanup()
        for region in regions:
            await region.stop()


@pytest.mark.asyncio
async def test_the_latency_model_changes_while_running(session: aiohttp.ClientSession) -> None:
    regions = await run_regions([("eastus", [SimDeployment("gpt-4o", 10_000)])], ScaledClock(600), ttft=0.0)
    runner, control = await start_control(regions)
    try:
        status, _, latency = await post(session, control + "/_sim/eastus/latency", {"per_token": 1.5}, {})
        assert status == 200 and latency == {"ttft": 0.0, "per_token": 1.5}
        status, _, latency = await post(session, control + "/_sim/eastus/latency", {"ttft": 2}, {})
        assert latency == {"ttft": 2.0, "per_token": 1.5}
        for bad in ({"per_token": -1}, {"ttft": "1"}, {"ttft": True}, {"pace": 1}):
            assert (await post(session, control + "/_sim/eastus/latency", bad, {}))[0] == 400
        assert (await post(session, control + "/_sim/nowhere/latency", {}, {}))[0] == 404
    finally:
        await runner.cleanup()
        for region in regions:
            await region.stop()
