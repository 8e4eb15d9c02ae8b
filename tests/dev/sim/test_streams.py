"""Stream endings and the stream faults."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.dev.sim.conftest import AUTH, CHAT, Launch, chat_body


@pytest.mark.asyncio
async def test_drop_mid_stream_breaks_the_body_without_done(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    region.faults.drop_mid_stream = True
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(url + CHAT, json=chat_body(max_tokens=20, stream=True), headers=AUTH) as resp:
            assert resp.status == 200
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"data: ") == 1 + 3  # prompt filter chunk and three tokens
    assert b"[DONE]" not in received
    assert region.stats["gpt-4o"].admitted_requests == 1  # admitted and charged before it broke


async def received(session: aiohttp.ClientSession, url: str, body: object) -> bytes:
    """What arrived before the stream broke (it must break)."""
    data = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(url, json=body, headers=AUTH) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                data += chunk
    return data


@pytest.mark.asyncio
async def test_drop_mid_stream_cuts_every_stream_before_its_terminal_event(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch()
    region.faults.drop_mid_stream = True
    short = await received(session, url + CHAT, chat_body(max_tokens=1, stream=True))
    assert short.count(b"data: ") == 3 and b"[DONE]" not in short  # filter, token, finish: cut before [DONE]
    body = {"model": "gpt-4o", "input": "hi", "max_output_tokens": 1, "stream": True}
    typed = await received(session, url + "/openai/v1/responses", body)
    assert b"response.created" in typed and b"response.completed" not in typed


@pytest.mark.asyncio
async def test_typed_streams_end_with_their_terminal_event_and_no_done(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    _, url = await launch()
    body = {"model": "gpt-4o", "input": "hi", "max_output_tokens": 1, "stream": True}
    async with session.post(url + "/openai/v1/responses", json=body, headers=AUTH) as resp:
        blocks = (await resp.read()).decode().strip().split("\n\n")
    for block in blocks:  # every event names its type twice, in the event line and in the payload
        event, data = block.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == event.removeprefix("event: ")
    assert blocks[-1].startswith("event: response.completed\n")
