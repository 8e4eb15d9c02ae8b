"""Files through the SDK, per region; planted synthetic files stream with bounded memory."""

from __future__ import annotations

import hashlib
import tracemalloc

import aiohttp
import openai
import pytest

from dev.sim.files import synthetic
from tests.dev.sim.conftest import AUTH, VERSION, Clients, Launch, get


@pytest.mark.asyncio
async def test_files_live_in_the_region_that_stored_them(
    launch: Launch, session: aiohttp.ClientSession, sdk: Clients
) -> None:
    """Upload, read, list, download and delete through the Azure SDK; another region knows nothing of them."""
    _, home = await launch()
    _, elsewhere = await launch()
    here, there = sdk.azure(home, VERSION), sdk.azure(elsewhere, VERSION)
    first = await here.files.create(file=("data.jsonl", b'{"a": 1}\n'), purpose="batch")
    second = await here.files.create(file=("more.jsonl", b"{}\n"), purpose="batch")
    assert first.id.startswith("file-") and (first.bytes, first.filename, first.status) == (
        9,
        "data.jsonl",
        "processed",
    )
    assert (await here.files.retrieve(first.id)).id == first.id
    assert (await here.files.content(first.id)).read() == b'{"a": 1}\n'
    listed = await here.files.list()
    assert [f.id for f in listed.data] == [second.id, first.id]
    assert [f.id for f in (await here.files.list(limit=1)).data] == [second.id]  # newest first
    with pytest.raises(openai.NotFoundError):
        await there.files.retrieve(first.id)
    assert (await there.files.list()).data == []
    assert (await here.files.delete(first.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await here.files.content(first.id)
    async with session.get(f"{home}/openai/files", headers=AUTH) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "MissingApiVersionParameter"
    async with session.get(f"{home}/openai/v1/files", headers=AUTH) as resp:
        assert resp.status == 200


@pytest.mark.asyncio
async def test_a_planted_file_streams_its_content_with_bounded_memory(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    """64 MiB come out of a region that never holds more than a chunk of them (tracemalloc's peak)."""
    region, url = await launch()
    size = 64 * 1024 * 1024 + 5  # not a whole number of blocks
    file = region.plant_file(size, purpose="batch")
    expected = hashlib.sha256()
    for chunk in synthetic(size):
        expected.update(chunk)
    digest, received = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        async with session.get(f"{url}/openai/v1/files/{file['id']}/content", headers=AUTH) as resp:
            assert resp.headers["Content-Length"] == str(size)
            async for chunk in resp.content.iter_chunked(1024 * 1024):
                digest.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size and digest.hexdigest() == expected.hexdigest()
    assert peak < 8 * 1024 * 1024, peak
    status, _, meta = await get(session, f"{url}/openai/v1/files/{file['id']}")
    assert (status, meta["bytes"], meta["purpose"]) == (200, size, "batch")
