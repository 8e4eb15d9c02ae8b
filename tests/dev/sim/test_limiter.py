"""The TPM and RPM windows, with exact Retry-After values (ManualClock)."""

from __future__ import annotations

import aiohttp
import pytest

from dev.simulator import SimDeployment
from shared.clock import ManualClock
from tests.dev.sim.conftest import CHAT, VERSION, Launch, chat_body, post


@pytest.mark.asyncio
async def test_token_limit_429_has_exact_retry_after_and_charges_nothing(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=600), clock=clock)
    big = chat_body(max_tokens=286)  # 14 prompt + 286 = 300 tokens
    for _ in range(3):  # charged at t = 0, 10, 20
        assert (await post(session, url + CHAT, big))[0] == 200
        clock.advance(10)
    clock.advance(-5)  # t = 25: 900 used, 300 more does not fit until the t=0 charge expires at 60

    status, headers, reply = await post(session, url + CHAT, big)
    assert status == 429
    assert headers["retry-after-ms"] == "35000"
    assert headers["retry-after"] == "35"
    assert headers["x-ratelimit-reset-tokens"] == "35"
    assert "x-ratelimit-reset-requests" not in headers
    assert headers["x-ms-region"] == "eastus"
    assert reply["error"]["code"] == "429"
    assert "exceeded token rate limit" in reply["error"]["message"]
    assert "Please retry after 35 seconds" in reply["error"]["message"]
    assert f"API version {VERSION}" in reply["error"]["message"]
    assert region.stats["gpt-4o"].throttled_quota == 1

    # The 429 charged nothing: exactly the 100 tokens left still fit.
    status, headers, _ = await post(session, url + CHAT, chat_body("", max_tokens=96))
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, "0")

    clock.advance(34.5)  # t = 59.5
    status, headers, _ = await post(session, url + CHAT, big)
    assert (status, headers["retry-after-ms"], headers["retry-after"]) == (429, "500", "1")
    clock.advance(0.5)  # t = 60: the first charge has left the window
    status, headers, _ = await post(session, url + CHAT, big)
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, "0")
    assert region.stats["gpt-4o"].admitted_tokens == 1000 + 300


@pytest.mark.asyncio
async def test_rpm_limit_allows_rpm_over_6_per_10_seconds(launch: Launch, session: aiohttp.ClientSession) -> None:
    assert SimDeployment("gpt-4o", 10_000).requests_per_window == 10  # 60 RPM by Azure's 6 per 1000 TPM
    clock = ManualClock()
    region, url = await launch(SimDeployment("gpt-4o", 100_000, rpm=12), clock=clock)
    small = chat_body(max_tokens=1)
    status, headers, _ = await post(session, url + CHAT, small)
    assert (status, headers["x-ratelimit-remaining-requests"]) == (200, "1")
    clock.advance(4)
    status, headers, _ = await post(session, url + CHAT, small)
    assert (status, headers["x-ratelimit-remaining-requests"]) == (200, "0")
    clock.advance(2)

    status, headers, reply = await post(session, url + CHAT, small)
    assert status == 429
    assert (headers["retry-after-ms"], headers["x-ratelimit-reset-requests"]) == ("4000", "4")
    assert "x-ratelimit-reset-tokens" not in headers
    assert "exceeded call rate limit" in reply["error"]["message"]

    clock.advance(4)  # t = 10: the request of t = 0 has left the 10 s window
    assert (await post(session, url + CHAT, small))[0] == 200
    assert region.stats["gpt-4o"].admitted_requests == 3
