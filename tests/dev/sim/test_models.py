"""The model listing, the health probe's target: free, authenticated, and its probe faults."""

from __future__ import annotations

import aiohttp
import pytest

from dev.simulator import SimDeployment
from tests.dev.sim.conftest import AUTH, CHAT, VERSION, Launch, chat_body, post


@pytest.mark.asyncio
async def test_models_listing_is_free(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=6))  # one request per 10 s
    for _ in range(3):
        async with session.get(f"{url}/openai/models?api-version={VERSION}", headers=AUTH) as resp:
            assert resp.status == 200
            assert [m["id"] for m in (await resp.json())["data"]] == ["gpt-4o"]
    async with session.get(f"{url}/openai/models?api-version={VERSION}") as resp:
        assert resp.status == 401
    status, headers, _ = await post(session, url + CHAT, chat_body())
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, str(1000 - 30))
    assert region.stats["gpt-4o"].admitted_requests == 1
