"""The fault switches: validated updates, and what each one does to the answers (the old ones are tested with
the modules they act in: deployments, streams, region)."""

from __future__ import annotations

import gzip
from typing import Any

import aiohttp
import pytest

from dev.sim.errors import AzureError
from dev.sim.faults import Faults, check
from shared.clock import ManualClock
from tests.dev.sim.conftest import AUTH, CHAT, VERSION, Clients, Launch, chat_body, get, post


@pytest.mark.parametrize(
    "update",
    [
        {"nonsense": True},
        {"slow": "very"},
        {"slow": -1},
        {"probe_delay": True},
        {"probe_status": 200},
        {"probe_status": True},
        {"probe_status": 503.0},
        {"gzip": "yes"},
        {"cut_after_body": 1},
    ],
)
def test_a_bad_update_is_refused(update: dict[str, Any]) -> None:
    with pytest.raises(AzureError) as caught:
        check(update)
    assert caught.value.status == 400


def test_good_updates_pass() -> None:
    check({"probe_status": 503, "probe_delay": 2, "slow": 0.5, "gzip": True, "compact_done": False})
    assert Faults().probe_status == 0


@pytest.mark.asyncio
async def test_probe_faults_touch_only_the_probe_endpoints(launch: Launch, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    region, url = await launch(clock=clock)
    await region.update_faults({"probe_status": 503, "probe_delay": 7})
    for path in (f"/openai/models?api-version={VERSION}", "/openai/v1/models"):
        status, _, error = await get(session, url + path)
        assert (status, error["error"]["code"]) == (503, "503")
    assert clock.now() == 14  # each probe waited probe_delay
    assert (await post(session, url + CHAT, chat_body()))[0] == 200
    assert clock.now() == 14  # real traffic is not delayed
    await region.update_faults({"probe_status": 0})
    assert (await get(session, url + "/openai/v1/models"))[0] == 200
    assert region.snapshot()["probe_calls"] == 3


@pytest.mark.asyncio
async def test_cut_after_body_performs_the_post_then_drops_before_headers(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch()
    await region.update_faults({"cut_after_body": True})
    for body in (chat_body(max_tokens=5), chat_body(max_tokens=5, stream=True)):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(session, url + CHAT, body)
    form = aiohttp.FormData({"purpose": "batch"})
    form.add_field("file", b"{}\n", filename="in.jsonl")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(f"{url}/openai/v1/files", data=form, headers=AUTH):
            pass
    snapshot = region.snapshot()
    assert snapshot["deployments"]["gpt-4o"]["admitted_requests"] == 2  # admitted and charged
    assert (snapshot["objects"], snapshot["created"]) == ({"file": 1}, {"file": 1})  # created
    status, _, files = await get(session, f"{url}/openai/v1/files")  # a GET is answered
    assert status == 200 and [f["filename"] for f in files["data"]] == ["in.jsonl"]


@pytest.mark.asyncio
async def test_gzip_compresses_json_whatever_the_client_accepts(
    launch: Launch, session: aiohttp.ClientSession, sdk: Clients
) -> None:
    region, url = await launch()
    await region.update_faults({"gzip": True})
    headers = {**AUTH, "Accept-Encoding": "identity"}
    async with session.post(url + CHAT, json=chat_body(), headers=headers, auto_decompress=False) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert b'"chat.completion"' in gzip.decompress(await resp.read())
    async with session.get(url + "/openai/v1/files/file-x", headers=headers, auto_decompress=False) as resp:
        assert resp.status == 404 and resp.headers["Content-Encoding"] == "gzip"  # errors too
    async with session.post(url + CHAT, json=chat_body(stream=True), headers=headers) as resp:
        assert "Content-Encoding" not in resp.headers  # streams are not compressed
    reply = await sdk.azure(url, VERSION).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content == "alpha bravo"


@pytest.mark.asyncio
async def test_compact_done_ends_chat_streams_without_the_space(
    launch: Launch, session: aiohttp.ClientSession, sdk: Clients
) -> None:
    region, url = await launch()
    await region.update_faults({"compact_done": True})
    async with session.post(url + CHAT, json=chat_body(max_tokens=2, stream=True), headers=AUTH) as resp:
        raw = await resp.read()
    assert raw.endswith(b"\n\ndata:[DONE]\n\n") and b"data: [DONE]" not in raw
    stream = await sdk.azure(url, VERSION).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "alpha bravo"


@pytest.mark.asyncio
async def test_error_500_fails_object_routes_too(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    region.faults.error_500 = True
    for path in ("/openai/v1/files", f"/openai/assistants?api-version={VERSION}", "/openai/v1/vector_stores"):
        status, _, error = await get(session, url + path)
        assert (status, error["error"]["code"]) == (500, "InternalServerError")
