"""Fixtures for the simulator's tests: regions on loopback, driven over real HTTP and by the official SDK.

Regions run on a ManualClock with zero latency unless a test asks otherwise, so nothing moves time but the
test and Retry-After values are exact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from multidict import CIMultiDictProxy

from dev.simulator import SimDeployment, SimRegion
from shared.clock import ManualClock

KEY = "test-key"
AUTH = {"api-key": KEY}
VERSION = "2024-10-21"
PREVIEW = "2025-03-01-preview"  # what AzureOpenAI clients of the stateful APIs use
CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={VERSION}"

Launch = Callable[..., Awaitable[tuple[SimRegion, str]]]
Reply = tuple[int, CIMultiDictProxy[str], Any]


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


@pytest_asyncio.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start regions (ManualClock, no latency unless asked); stop them all afterwards."""
    started: list[SimRegion] = []

    async def start(
        *deployments: SimDeployment, clock: Any = None, name: str = "eastus", **options: Any
    ) -> tuple[SimRegion, str]:
        options = {"ttft": 0.0, "per_token": 0.0, "api_key": KEY, **options}
        region = SimRegion(
            name, deployments or [SimDeployment("gpt-4o", 10_000, rpm=600)], clock or ManualClock(), **options
        )
        started.append(region)
        return region, await region.start()

    yield start
    for region in started:
        await region.stop()


class Clients:
    """SDK clients of a region on each surface, closed after the test."""

    def __init__(self) -> None:
        self._open: list[openai.AsyncOpenAI] = []

    def azure(self, url: str, version: str = PREVIEW) -> openai.AsyncAzureOpenAI:
        """The classic surface: /openai/...?api-version=..."""
        client = openai.AsyncAzureOpenAI(azure_endpoint=url, api_key=KEY, api_version=version, max_retries=0)
        self._open.append(client)
        return client

    def v1(self, url: str) -> openai.AsyncOpenAI:
        """The v1 surface: /openai/v1/..."""
        client = openai.AsyncOpenAI(base_url=url + "/openai/v1/", api_key=KEY, max_retries=0)
        self._open.append(client)
        return client

    async def close(self) -> None:
        for client in self._open:
            await client.close()


@pytest_asyncio.fixture
async def sdk() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    await clients.close()


async def post(session: aiohttp.ClientSession, url: str, body: object, headers: dict[str, str] = AUTH) -> Reply:
    data = body if isinstance(body, str) else json.dumps(body)
    async with session.post(url, data=data, headers={"Content-Type": "application/json", **headers}) as resp:
        return resp.status, resp.headers, await resp.json()


async def get(session: aiohttp.ClientSession, url: str, headers: dict[str, str] = AUTH) -> Reply:
    async with session.get(url, headers=headers) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


def chat_body(content: str = "x" * 40, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


async def sse(session: aiohttp.ClientSession, url: str, body: object) -> list[str]:
    """The `data:` payloads of a chat-style stream, checking it is chunked SSE."""
    async with session.post(url, json=body, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        text = (await resp.read()).decode()
    assert text.endswith("\n\n")
    events = text[: -len("\n\n")].split("\n\n")
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


async def all_not_found(*calls: Callable[[], Awaitable[object]]) -> None:
    """Each SDK call answers 404 (another region's object, or one that is gone)."""
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            await call()
