"""Admission of generations in Azure's order: unknown deployment, the 500 and capacity faults, the limiter."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from dev.simulator import SimDeployment
from tests.dev.sim.conftest import AUTH, CHAT, VERSION, Launch, chat_body, post


@pytest.mark.asyncio
async def test_admission_charges_the_estimate_and_reports_remaining(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=600))
    body = {
        "messages": [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "u" * 30}],
        "max_tokens": 20,
        "n": 2,
    }
    status, headers, reply = await post(session, url + CHAT, body)

    assert status == 200
    assert reply["usage"] == {"prompt_tokens": 10 + 2 * 4, "completion_tokens": 40, "total_tokens": 58}
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 58)
    assert headers["x-ratelimit-remaining-requests"] == str(100 - 1)
    assert headers["x-ms-region"] == "eastus"
    uuid.UUID(headers["apim-request-id"])
    uuid.UUID(headers["x-request-id"])
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    assert len(reply["choices"][0]["message"]["content"].split()) == 20
    assert reply["choices"][0]["finish_reason"] == "length"

    # Without max_tokens 16 are charged and generated; only text parts of content count.
    parts = [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    status, headers, reply = await post(session, url + CHAT, {"messages": [{"role": "user", "content": parts}]})
    assert status == 200
    assert reply["usage"] == {"prompt_tokens": 2 + 4, "completion_tokens": 16, "total_tokens": 22}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 58 - 22)
    assert region.stats["gpt-4o"].admitted_tokens == 80
    assert region.stats["gpt-4o"].admitted_requests == 2


@pytest.mark.asyncio
async def test_unknown_deployment_is_404(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    status, headers, reply = await post(session, url + CHAT.replace("gpt-4o", "gpt-5"), chat_body())
    assert (status, reply["error"]["code"]) == (404, "DeploymentNotFound")
    assert headers["x-ms-region"] == "eastus"
    status, _, reply = await post(session, url + "/openai/v1/chat/completions", chat_body(model="gpt-5"))
    assert (status, reply["error"]["code"]) == (404, "DeploymentNotFound")


@pytest.mark.asyncio
async def test_500_and_capacity_faults(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    region.faults.error_500 = True
    status, headers, reply = await post(session, url + CHAT, chat_body())
    assert (status, reply["error"]["code"]) == (500, "InternalServerError")
    assert headers["x-ms-region"] == "eastus"
    async with session.get(f"{url}/openai/models?api-version={VERSION}", headers=AUTH) as resp:
        assert resp.status == 500  # the health probe sees the failing region too

    region.faults.error_500, region.faults.capacity_429 = False, True
    status, headers, reply = await post(session, url + CHAT, chat_body())
    assert (status, reply["error"]["code"]) == (429, "429")
    assert "high demand" in reply["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    stats = region.stats["gpt-4o"]
    assert (stats.errors_500, stats.throttled_capacity, stats.admitted_tokens) == (1, 1, 0)
