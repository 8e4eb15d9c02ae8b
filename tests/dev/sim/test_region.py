"""A region's server lifecycle: going down closes the port, coming back reopens the same one."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tests.dev.sim.conftest import CHAT, Clients, Launch, chat_body, get, post


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


@pytest.mark.asyncio
async def test_the_snapshot_counts_calls_objects_and_probes_and_reset_keeps_objects(
    launch: Launch, session: aiohttp.ClientSession, sdk: Clients
) -> None:
    region, url = await launch()
    client = sdk.v1(url)
    for _ in range(3):
        await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=1)
    file = await client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
    await client.files.retrieve(file.id)
    await client.files.delete(file.id)
    await client.models.list()
    assert (await post(session, url + CHAT, chat_body(), {}))[0] == 401  # counted: it reached the route
    assert (await get(session, url + "/openai/v1/nowhere"))[0] == 404  # not a route: not counted

    snapshot = region.snapshot()
    assert snapshot["calls"] == {
        "DELETE /openai/v1/files/{file_id}": 1,
        "GET /openai/v1/files/{file_id}": 1,
        "GET /openai/v1/models": 1,
        "POST /openai/deployments/{deployment}/chat/completions": 1,
        "POST /openai/v1/files": 1,
        "POST /openai/v1/responses": 3,
    }
    assert (snapshot["objects"], snapshot["created"]) == ({"response": 3}, {"response": 3, "file": 1})
    assert snapshot["probe_calls"] == 1
    assert snapshot["deployments"]["gpt-4o"]["admitted_requests"] == 3

    region.reset()
    after = region.snapshot()
    assert (after["calls"], after["created"], after["probe_calls"]) == ({}, {}, 0)
    assert after["objects"] == {"response": 3}  # objects stay
    assert after["deployments"]["gpt-4o"]["admitted_requests"] == 0
