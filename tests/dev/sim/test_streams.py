"""Stream endings and the stream faults."""

from __future__ import annotations

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
