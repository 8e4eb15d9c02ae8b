"""What every data-plane request goes through: authentication, the latency model, the slow fault."""

from __future__ import annotations

import aiohttp
import pytest

from shared.clock import ManualClock
from tests.dev.sim.conftest import CHAT, Launch, chat_body, post, sse


@pytest.mark.asyncio
async def test_auth_accepts_the_key_or_any_bearer_token(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer "}):
        status, _, reply = await post(session, url + CHAT, chat_body(), headers)
        assert status == 401
        assert reply["error"]["code"] == "401"
        assert reply["error"]["message"].startswith("Access denied due to invalid subscription key")
    assert (await post(session, url + CHAT, chat_body(), {"Authorization": "Bearer token"}))[0] == 200
    assert (await post(session, url + CHAT, chat_body()))[0] == 200


@pytest.mark.asyncio
async def test_latency_model_and_slow_fault_spend_clock_time(launch: Launch, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    region, url = await launch(clock=clock, ttft=0.3, per_token=0.01)
    assert (await post(session, url + CHAT, chat_body(max_tokens=50)))[0] == 200
    assert clock.now() == pytest.approx(0.3 + 50 * 0.01)
    region.faults.slow = 2.0
    await sse(session, url + CHAT, chat_body(max_tokens=50, stream=True))
    assert clock.now() == pytest.approx(0.8 + 2.0 + 0.3 + 49 * 0.01)
