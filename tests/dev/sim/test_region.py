"""A region's server lifecycle: going down closes the port, coming back reopens the same one."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tests.dev.sim.conftest import CHAT, Launch, chat_body, post


@pytest.mark.asyncio
async def test_down_refuses_connections_and_reopens_the_same_port(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch()
    assert (await post(session, url + CHAT, chat_body()))[0] == 200  # leaves a keep-alive connection open
    status, _, state = await post(session, url + "/_sim/faults", {"down": True})
    assert status == 200 and state["faults"]["down"] is True

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, url + CHAT, chat_body())
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass

    await region.set_down(False)
    assert region.endpoint == url
    assert (await post(session, url + CHAT, chat_body()))[0] == 200
    assert region.faults.down is False
